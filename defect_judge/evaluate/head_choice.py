"""Which verdict head an evaluation uses: the one that comes with the model, another one named by path, or none;
checked against the model and the test set before anything runs, and described for the results file."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from defect_judge.data.labels import two_classes
from defect_judge.errors import InputError
from defect_judge.fileio import file_sha256
from defect_judge.model import paths as model_paths
from defect_judge.model.head_files import HEAD_WEIGHTS_FILE
from defect_judge.model.verdict_head import VerdictHead, head_folder, load_head

NO_HEAD = "none"  # --verdict_head none: judge without the head that comes with the model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadChoice:
    """The verdict head the evaluation uses (or None) and where it came from."""
    head: VerdictHead | None
    path: Path | None = None

    @property
    def reads_base(self) -> bool:
        """The head reads the base model: the adapter must stay unmerged, to be switched off while it reads."""
        return self.head is not None and self.head.reads_base

    def to_json(self) -> dict | None:
        if self.head is None:
            return None
        fit = self.head.fit
        return {"path": str(self.path.resolve()), "weights_sha256": file_sha256(self.path / HEAD_WEIGHTS_FILE),
                "spec": self.head.spec, "layers": list(self.head.layers), "pooling": self.head.pooling,
                "positive": self.head.positive, "negative": self.head.negative, "reads_base": self.head.reads_base,
                "fit": {k: fit.get(k) for k in ("C", "chosen_on", "train", "dev") if k in fit}}


def choose_head(verdict_head: str, resolved: model_paths.ResolvedModel, vocabulary: list[str], *,
                trust_remote_code: bool = False) -> HeadChoice:
    """--verdict_head: the model's own head (empty), another one (a path) or none; checked against the model's
    shape and the test set's judgements before anything runs."""
    from transformers import AutoConfig

    if verdict_head.strip().lower() == NO_HEAD:
        if resolved.is_probe_run:
            raise InputError("--verdict_head none: this linear-probe run is its head and nothing else; evaluate its "
                             "base model instead", path=resolved.path, field="verdict_head")
        return HeadChoice(None)
    folder = head_folder(verdict_head) if verdict_head else resolved.head_path
    if folder is None:
        return HeadChoice(None)
    head = load_head(folder)
    if head.reads_base and resolved.kind == model_paths.FULL_MODEL:
        # its probe was fitted on the base model's states, which a fully fine-tuned model no longer computes
        raise InputError(f"this head reads the base model with the LoRA adapter switched off, and "
                         f"{resolved.weights_path} is a fully fine-tuned model with no adapter to switch off: "
                         f"evaluate the head with its LoRA run or with the base model", path=folder,
                         field="reads_base")
    config_folder = resolved.base_model_path or resolved.weights_path
    try:
        config = AutoConfig.from_pretrained(config_folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the model's config: {str(error).splitlines()[0]}", path=config_folder) from None
    head.check_fits(getattr(config, "text_config", None) or config, path=folder)
    classes = two_classes(vocabulary)
    if classes is None or set(classes) != {head.positive, head.negative}:
        raise InputError(f"the head tells {head.positive}/{head.negative} apart, the test set's judgements are "
                         f"{'/'.join(vocabulary)}", path=folder, field="positive")
    log.info("%s, from %s: it decides every verdict", head.describe(), folder)
    return HeadChoice(head, folder)
