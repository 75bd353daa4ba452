"""Named training recipes: the settings of run_training_lora.sh and train_lora.py that one experiment uses.

One place for them, so the demo and the recipe sweep (``instruct_fine_tuning/sweep.py``) train with exactly the
settings the sweep measured. A recipe names each setting as the launcher or train_lora.py does and sets what it
changes; everything else (the document's values) stays as run_training_lora.sh holds it.

``python -m defect_judge.train.recipes NAME [--train_data train.jsonl]`` prints a recipe as shell lines
(``export LEARNING_RATE=2e-4 ...`` and ``TRAIN_ARGS=(...)``) for the shell scripts.
"""
from __future__ import annotations

import argparse
import shlex
from dataclasses import asdict, dataclass, field
from typing import Sequence

from transformers.hf_argparser import string_to_bool

from defect_judge.data.schema import read_records
from defect_judge.errors import run_main
from defect_judge.train.launcher_settings import launcher_default


@dataclass(frozen=True)
class Recipe:
    """An experiment's training settings, by the names they have where they are set: run_training_lora.sh's
    settings in lower case (``learning_rate`` is LEARNING_RATE), then train_lora.py's flags. None: the launcher's
    default, or train_lora.py's, which the recipe does not change."""
    name: str
    description: str
    # run_training_lora.sh's settings
    learning_rate: float = 2e-4
    scheduler: str | None = None
    lora_rank: int | None = None
    lora_alpha: int | None = None
    per_device_train_batch_size: int | None = None
    gradient_accumulation_steps: int = 4
    max_length: int = 1024
    max_epochs: float = 1.0
    verdict_head: str | None = None      # the verdict head's spec (verdict_head.py)
    # train_lora.py's flags
    finetuning_type: str | None = None   # lora | full | none (a verdict head fitted on the frozen model only)
    warmup_steps: float = 0.05           # below 1: a share of the steps (transformers 5)
    key_token_weight: float | None = None
    metric_for_best_model: str = "accuracy_then_loss"  # judgement accuracy on dev, ties by eval_loss
    pair_batches: bool = False           # twins in the same micro-batch
    extra_args: tuple[str, ...] = field(default_factory=tuple)  # more train_lora.py flags
    # the recipe's own: checkpoints (and dev evaluations) per epoch, from which SAVE_STEPS follows
    evals_per_epoch: int = 2

    @property
    def fine_tunes(self) -> bool:
        """False for a linear probe alone: no training steps, no checkpoints, the head in OUTPUT_DIR."""
        return self.finetuning_type != "none"

    def steps_per_epoch(self, train_samples: int, ranks: int = 1) -> int:
        """Optimizer steps in one epoch of ``train_samples`` samples (pairs with --pair_batches count once)."""
        batch = self.per_device_train_batch_size or launcher_default("PER_DEVICE_TRAIN_BATCH_SIZE", int)
        return max(1, -(-train_samples // (batch * self.gradient_accumulation_steps * ranks)))

    def save_steps(self, train_samples: int, ranks: int = 1) -> int:
        return max(1, round(self.steps_per_epoch(train_samples, ranks) / self.evals_per_epoch))

    def launcher_env(self, train_samples: int | None = None) -> dict[str, str]:
        """The run_training_lora.sh settings this recipe sets (environment variables of the same name); with the
        training set's size, also the checkpoint interval."""
        env = {name.upper(): as_text(value) for name in LAUNCHER_FIELDS if (value := getattr(self, name)) is not None}
        if train_samples is not None:
            env["SAVE_STEPS"] = str(self.save_steps(train_samples))
        return env

    def train_args(self) -> list[str]:
        """The train_lora.py flags this recipe passes after the launcher."""
        flags = []
        for name in FLAG_FIELDS:
            value = getattr(self, name)
            if value is not None and value is not False:
                flags += [f"--{name}", as_text(value)]
        return [*flags, *self.extra_args]

    def training_items(self, pair_ids: list[str | None]) -> int:
        """What one epoch iterates over, given the training records' pair_ids: samples, or with pair batches
        twin pairs (a lone sample counts once)."""
        if not self.pair_batches:
            return len(pair_ids)
        return len({p for p in pair_ids if p is not None}) + sum(1 for p in pair_ids if p is None)

    def to_json(self) -> dict:
        return asdict(self) | {"extra_args": list(self.extra_args)}

    def shell(self, train_samples: int | None = None) -> str:
        """Shell lines: the launcher settings exported, and TRAIN_ARGS as a bash array."""
        lines = [f"export {key}={shlex.quote(value)}" for key, value in self.launcher_env(train_samples).items()]
        lines.append("TRAIN_ARGS=(" + " ".join(shlex.quote(a) for a in self.train_args()) + ")")
        return "\n".join(lines)


def as_text(value) -> str:
    """A setting as the launcher's environment and train_lora.py's flags take it (2e-4 as 0.0002, True as true)."""
    return "true" if value is True else f"{value:g}" if isinstance(value, float) else str(value)


LAUNCHER_FIELDS = ("learning_rate", "scheduler", "lora_rank", "lora_alpha", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "max_length", "max_epochs", "verdict_head")
FLAG_FIELDS = ("finetuning_type", "warmup_steps", "key_token_weight", "metric_for_best_model", "pair_batches")


# The means of five layers, at 27%, 40%, 53%, 67% and 80% of the depth (8, 12, 16, 20, 24 of SmolLM2's 30).
FIVE_LAYERS = "mean@0.27,0.4,0.53,0.67,0.8"
THREE_LAYERS = "mean@0.33,0.5,0.67"  # layers 10, 15, 20 of SmolLM2's 30; 9, 14, 19 of Qwen2.5-Coder-7B's 28

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("demo", "LoRA r32 on every layer, lr 2e-4, whole answer with key-token weight 5 (the earlier demo)"),
    Recipe("answer_pairs", "LoRA r32 on every layer, lr 5e-4, whole answer with key-token weight 20, twins "
                           "in one micro-batch", learning_rate=5e-4, key_token_weight=20.0, pair_batches=True,
           gradient_accumulation_steps=4),
    Recipe("judgement_pairs", "LoRA r32 on every layer, lr 5e-4, the judgement only (reason cut), twins in one "
                              "micro-batch", learning_rate=5e-4, pair_batches=True,
           gradient_accumulation_steps=4, extra_args=("--train_on", "judgement")),
    Recipe("top10_full_judgement", "full fine-tuning of the top 10 of 30 layers, lr 1e-4, the judgement only, "
                                   "twins in one micro-batch", finetuning_type="full", learning_rate=1e-4,
           pair_batches=True, gradient_accumulation_steps=4,
           extra_args=("--train_on", "judgement", "--trainable_layers", "10")),
    Recipe("judgement_single", "as judgement_pairs, but samples shuffled one by one (is pairing what helps?)",
           learning_rate=5e-4, per_device_train_batch_size=2, gradient_accumulation_steps=4,
           extra_args=("--train_on", "judgement")),
    Recipe("judgement_pairs_slow", "as judgement_pairs at a fifth of the learning rate (1e-4) and twice the "
                                   "optimizer steps (two pairs a step): does a gentler, longer descent stop the swing "
                                   "between one answer for everything and the other?", learning_rate=1e-4,
           pair_batches=True, gradient_accumulation_steps=2, extra_args=("--train_on", "judgement")),
    # Verdict heads (verdict_head.py): the verdict read from the model's hidden states over the prompt.
    Recipe("probe_mid", "linear probe only: a verdict head on the mean of the middle layer over the prompt, the "
                        "model frozen (no training steps)", finetuning_type="none", verdict_head="mean@0.5"),
    Recipe("probe_layers", "linear probe only: the means of five layers (at 27-80% of the depth) concatenated",
           finetuning_type="none", verdict_head=FIVE_LAYERS),
    Recipe("probe_lda", "linear probe only: LDA with shrinkage (on principal components) over the means of three "
                        "layers (a third, half and two thirds of the depth)", finetuning_type="none",
           verdict_head=THREE_LAYERS, extra_args=("--verdict_head_probe", "lda")),
    Recipe("probe_last", "linear probe only: the top layer at the prompt's last token, where a generative judge "
                         "answers (the weak place to read it)", finetuning_type="none", verdict_head="last@1.0"),
    Recipe("head_lpft", "LP-FT: the five-layer probe, then LoRA r32 and the head trained together at lr 1e-4 on "
                        "the answer's loss + the head's BCE", learning_rate=1e-4, verdict_head=FIVE_LAYERS),
    Recipe("head_lpft_mid", "LP-FT as head_lpft, with the middle-layer head", learning_rate=1e-4,
           verdict_head="mean@0.5"),
    # The demo's: the probe that did best by nested cross-validation over whole pairs on train + dev (probe_lda;
    # LP-FT did not beat the probes), kept as fitted on the base model, and LoRA in the top half learning the
    # answer, so the model writes the reason after the head's verdict. The judgement is the head's, so its tokens
    # get no extra weight; at lr 5e-4 the reasons on dev stopped looping back to "判断:" (1 of 32 against 26 of 32 at
    # lr 2e-4 with key-token weight 5) with LoRA in 15 layers, and came back in part with 10.
    Recipe("demo_head", "the three-layer LDA verdict head fitted on the frozen model and kept as fitted, reading the "
                        "base model; LoRA r32 in the top half (lr 5e-4, the whole answer, no key-token weight) "
                        "writes the reason",
           learning_rate=5e-4, key_token_weight=1.0, verdict_head=THREE_LAYERS,
           extra_args=("--verdict_head_probe", "lda", "--verdict_head_reads_base", "true",
                       "--verdict_head_loss_weight", "0", "--trainable_layers", "0.5")),
)}


def pair_batches_given(train_args: Sequence[str]) -> bool:
    """Whether train_lora.py's flags ``train_args`` turn --pair_batches on, read as its HfArgumentParser reads a
    bool (``--pair_batches``, ``--pair-batches t``, ``--pair_batches=true``; the last one given wins). Not through
    ``arguments.build_parser``: importing the Trainer prints to stdout, which the shell reads these numbers from."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--pair_batches", "--pair-batches", type=string_to_bool, nargs="?", const=True, default=False)
    return parser.parse_known_args(list(train_args))[0].pair_batches


def half_epoch_save_steps(train_data: str, per_step: int, train_args: Sequence[str] = ()) -> int:
    """run_training_lora.sh's SAVE_STEPS=auto: the optimizer steps of half an epoch of ``train_data`` (two
    checkpoints an epoch, each scored on dev), with ``per_step`` samples a step (batch size x accumulation x
    ranks) and train_lora.py's flags ``train_args`` (--pair_batches makes an item a pair of twins)."""
    recipe = Recipe("auto", "SAVE_STEPS=auto", per_device_train_batch_size=per_step, gradient_accumulation_steps=1,
                    pair_batches=pair_batches_given(train_args))
    return recipe.save_steps(recipe.training_items([r.pair_id for r in read_records(train_data)]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print a training recipe as shell assignments.")
    parser.add_argument("name", choices=sorted(RECIPES), help="recipe name")
    parser.add_argument("--train_data", help="the training split (chat JSONL): adds SAVE_STEPS for the recipe's "
                                             "evaluations per epoch")
    args = parser.parse_args(argv)
    recipe = RECIPES[args.name]
    items = None
    if args.train_data:
        items = recipe.training_items([r.pair_id for r in read_records(args.train_data)])
    print(recipe.shell(items))


if __name__ == "__main__":
    run_main(main)
