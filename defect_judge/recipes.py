"""Named training recipes: the settings of run_training_lora.sh and train_lora.py that one experiment uses.

One place for them, so the demo, ``make learn`` and the recipe sweep
(``instruct_fine_tuning/sweep.py``) train with exactly the settings the sweep
measured. A recipe says what differs from the launcher's defaults; everything
else (the document's values) stays as run_training_lora.sh sets it.

``python -m defect_judge.recipes NAME`` prints a recipe as shell assignments
(``LEARNING_RATE=2e-4 ...`` and ``TRAIN_ARGS=(...)``) for the shell scripts.
"""
from __future__ import annotations

import argparse
import shlex
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    finetuning_type: str = "lora"        # lora | full
    learning_rate: float = 2e-4
    scheduler: str = "linear"
    warmup_ratio: float = 0.05
    lora_rank: int = 32
    lora_alpha: int = 32
    key_token_weight: float = 5.0
    batch_size: int = 1                  # PER_DEVICE_TRAIN_BATCH_SIZE
    gradient_accumulation_steps: int = 4
    max_length: int = 1024
    extra_args: tuple[str, ...] = field(default_factory=tuple)  # more train_lora.py flags

    def launcher_env(self) -> dict[str, str]:
        """The run_training_lora.sh settings this recipe sets (environment variables of the same name)."""
        return {"LEARNING_RATE": f"{self.learning_rate:g}", "SCHEDULER": self.scheduler,
                "LORA_RANK": str(self.lora_rank), "LORA_ALPHA": str(self.lora_alpha),
                "PER_DEVICE_TRAIN_BATCH_SIZE": str(self.batch_size),
                "GRADIENT_ACCUMULATION_STEPS": str(self.gradient_accumulation_steps),
                "MAX_LENGTH": str(self.max_length)}

    def train_args(self) -> list[str]:
        """The train_lora.py flags this recipe passes after the launcher."""
        return ["--finetuning_type", self.finetuning_type, "--key_token_weight", f"{self.key_token_weight:g}",
                "--warmup_ratio", f"{self.warmup_ratio:g}", *self.extra_args]

    def to_json(self) -> dict:
        return asdict(self) | {"extra_args": list(self.extra_args)}

    def shell(self) -> str:
        """Shell assignments: the launcher settings, and TRAIN_ARGS as a bash array."""
        lines = [f"{key}={shlex.quote(value)}" for key, value in self.launcher_env().items()]
        lines.append("TRAIN_ARGS=(" + " ".join(shlex.quote(a) for a in self.train_args()) + ")")
        return "\n".join(lines)


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("demo", "LoRA r32 on all linear layers, lr 2e-4, key-token weight 5 (the earlier demo's recipe)"),
)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print a training recipe as shell assignments.")
    parser.add_argument("name", choices=sorted(RECIPES), help="recipe name")
    args = parser.parse_args(argv)
    print(RECIPES[args.name].shell())


if __name__ == "__main__":
    main()
