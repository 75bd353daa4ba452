"""Which model a path names: the one place that knows what a training ``OUTPUT_DIR``, a LoRA adapter folder and a
full model folder look like (``loading.inference_model`` loads what it finds).

A model path is one of (checked in this order):

* a training ``OUTPUT_DIR``: it holds ``best_checkpoint.json``; the model is
  ``OUTPUT_DIR/<best_checkpoint>`` when that folder still exists, else the best
  model training saved in ``OUTPUT_DIR`` itself; either may be an adapter or a
  full model;
* a LoRA adapter folder (``adapter_config.json``, e.g. ``checkpoint-140``): it
  is loaded onto its base model and merged (``merge_and_unload``) so inference
  runs at the plain model's speed;
* a full model folder: ``full_model`` when training wrote it (a
  ``trainer_state.json`` inside, or a ``best_checkpoint.json`` beside it),
  otherwise ``base_model``, the baseline with no fine-tuning;
* the OUTPUT_DIR of a linear-probe run (``--finetuning_type none``): a verdict
  head and no model; the model is the base model its ``verdict_head.json`` names.

A folder that carries a verdict head (``verdict_head.json``) has it in
``head_path``: every checkpoint, best model and OUTPUT_DIR of a run with a head does.

The base model of an adapter is the first that exists of: ``--base_model_path``
(the user's word wins), the adapter's ``base_model_name_or_path``, the
``base_model_path`` in ``best_checkpoint.json``, and ``tokenizer_path`` when it
is a model folder (the document keeps the base model's tokenizer there).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from defect_judge import REPO_ROOT
from defect_judge.errors import InputError
from defect_judge.fileio import read_json_object
from defect_judge.model.loading import ADAPTER_CONFIG_FILE, check_model_folder
from defect_judge.model.run_folder import (BEST_CHECKPOINT_FILE, TRAINER_STATE_FILE, best_model_folder,
                                           read_best_checkpoint)
from defect_judge.model.head_files import HEAD_CONFIG_FILE, has_head

log = logging.getLogger(__name__)

BASE_MODEL = "base_model"
FULL_MODEL = "full_model"
LORA_ADAPTER = "lora_adapter"
# evaluation_results.json's model_kind of a training OUTPUT_DIR: this, then the kind of its best model
OUTPUT_DIR_PREFIX = "output_dir/"
KIND_DESCRIPTIONS = {
    BASE_MODEL: "base model with no fine-tuning (the baseline)",
    FULL_MODEL: "fully fine-tuned model",
    LORA_ADAPTER: "LoRA adapter, merged into its base model before inference",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLE_WEIGHTS = "adapter_model.bin"  # loaded only with allow_pickle
WEIGHT_SUFFIXES = (".safetensors", ".bin")  # what the resume fingerprint covers


@dataclass(frozen=True)
class ResolvedModel:
    """What a model path turned out to be, and the folders to load."""
    path: Path                      # as given
    kind: str                       # BASE_MODEL | FULL_MODEL | LORA_ADAPTER: what is loaded
    weights_path: Path              # the folder whose weights are evaluated (model or adapter)
    base_model_path: Path | None = None   # the base an adapter is merged into
    best_checkpoint: dict | None = None   # best_checkpoint.json of the training run
    base_model_source: str | None = None  # where the base path came from
    notes: tuple[str, ...] = field(default_factory=tuple)
    from_output_dir: bool = False   # the path is a training OUTPUT_DIR and weights_path its best model
    head_path: Path | None = None   # the folder of the verdict head that comes with the model, if any

    @property
    def is_adapter(self) -> bool:
        return self.kind == LORA_ADAPTER

    @property
    def adapter_base(self) -> Path | None:
        """The base model an adapter is loaded onto; None for a model of its own."""
        return self.base_model_path if self.is_adapter else None

    @property
    def model_kind(self) -> str:
        """The results schema's model_kind: the kind, after OUTPUT_DIR_PREFIX for a training OUTPUT_DIR."""
        return OUTPUT_DIR_PREFIX + self.kind if self.from_output_dir else self.kind

    @property
    def is_probe_run(self) -> bool:
        """The OUTPUT_DIR of a linear-probe run: a verdict head on the frozen model, no weights of its own."""
        return self.from_output_dir and self.best_checkpoint is None and self.head_path is not None

    def describe(self) -> str:
        if self.is_probe_run:
            return (f"linear-probe run: the frozen model {self.weights_path} (from {self.base_model_source}) with "
                    f"the verdict head in {self.head_path}")
        text = KIND_DESCRIPTIONS[self.kind]
        if self.from_output_dir:
            info = self.best_checkpoint or {}
            metric = (f" ({info['metric']} = {info['value']:.6g})"
                      if info.get("metric") and isinstance(info.get("value"), (int, float)) else "")
            text = (f"training OUTPUT_DIR, best checkpoint {info.get('best_checkpoint')}{metric} "
                    f"at {self.weights_path}: {text}")
        if self.base_model_path is not None:
            text += f"; base model {self.base_model_path} (from {self.base_model_source})"
        if self.head_path is not None:
            text += f"; verdict head in {self.head_path}"
        return text

    def to_json(self) -> dict:
        # Absolute, symlinks resolved: a later run started elsewhere (or through runs/demo/latest) still finds them.
        return {"kind": self.model_kind, "description": self.describe(), "path": str(self.path),
                "weights_path": str(self.weights_path.resolve()),
                "base_model_path": str(self.base_model_path.resolve()) if self.base_model_path else None,
                "best_checkpoint": self.best_checkpoint,
                "head_path": str(self.head_path) if self.head_path else None}

    @property
    def head_config(self) -> Path | None:
        """The verdict_head.json of the head that comes with the model, if any."""
        return self.head_path / HEAD_CONFIG_FILE if self.head_path is not None else None

    @property
    def run_folder(self) -> Path | None:
        """The training run the model comes from: the OUTPUT_DIR given, or the one a checkpoint folder lies in
        (it holds best_checkpoint.json); None for a model of no run here."""
        if self.from_output_dir:
            return self.path
        parent = self.weights_path.parent
        return parent if (parent / BEST_CHECKPOINT_FILE).is_file() else None

    def weight_folders(self) -> list[Path]:
        return list(dict.fromkeys(p for p in (self.weights_path, self.base_model_path, self.head_path)
                                  if p is not None))


def _local_folder(value: str | None) -> Path | None:
    """An existing folder for ``value`` (as given, else relative to the repo root), or None."""
    if not value:
        return None
    for candidate in (Path(value), REPO_ROOT / value):
        if candidate.is_dir():
            return candidate
    return None


def _find_base_model(adapter: Path, *, base_model_path: str, tokenizer_path: str,
                     best_checkpoint: dict | None, allow_pickle: bool) -> tuple[Path, str]:
    if base_model_path:
        folder = Path(base_model_path)
        if not folder.exists():
            raise InputError("--base_model_path does not exist", path=folder)
        return check_model_folder(folder, allow_pickle=allow_pickle), "--base_model_path"
    config = read_json_object(adapter / ADAPTER_CONFIG_FILE)
    tried = []
    candidates = [(config.get("base_model_name_or_path"), f"{ADAPTER_CONFIG_FILE} base_model_name_or_path"),
                  ((best_checkpoint or {}).get("base_model_path"), f"{BEST_CHECKPOINT_FILE} base_model_path"),
                  (tokenizer_path, "tokenizer_path")]
    for value, source in candidates:
        if not value:
            continue
        folder = _local_folder(str(value))
        if folder is not None and (folder / "config.json").is_file():
            return check_model_folder(folder, allow_pickle=allow_pickle), source
        tried.append(f"{value} ({source})")
    tried_text = "; tried " + ", ".join(tried) if tried else ""
    raise InputError(f"cannot find the base model of this LoRA adapter{tried_text}; "
                     f"pass --base_model_path pointing to the base model folder", path=adapter)


def _check_adapter_weights(adapter: Path, *, allow_pickle: bool) -> None:
    if (adapter / ADAPTER_WEIGHTS).is_file():
        return
    if allow_pickle and (adapter / ADAPTER_PICKLE_WEIGHTS).is_file():
        return
    if any(adapter.glob("adapter_model.*")):
        raise InputError("the adapter weights are not in safetensors format (refusing pickle files, which can run "
                         "code); save the adapter with safe_serialization=True, or pass --allow_pickle for a "
                         "folder you trust", path=adapter)
    raise InputError(f"LoRA adapter folder without {ADAPTER_WEIGHTS}", path=adapter)


def _resolve_folder(folder: Path, *, base_model_path: str, tokenizer_path: str, best_checkpoint: dict | None,
                    trained: bool, allow_pickle: bool) -> ResolvedModel:
    head = folder if has_head(folder) else None
    if (folder / ADAPTER_CONFIG_FILE).is_file():
        _check_adapter_weights(folder, allow_pickle=allow_pickle)
        base, source = _find_base_model(folder, base_model_path=base_model_path, tokenizer_path=tokenizer_path,
                                        best_checkpoint=best_checkpoint, allow_pickle=allow_pickle)
        return ResolvedModel(folder, LORA_ADAPTER, folder, base, best_checkpoint, source, head_path=head)
    if head is not None and not (folder / "config.json").is_file():
        return _probe_run(folder, base_model_path=base_model_path, allow_pickle=allow_pickle)
    check_model_folder(folder, allow_pickle=allow_pickle)
    trained = trained or (folder / TRAINER_STATE_FILE).is_file() or (folder.parent / BEST_CHECKPOINT_FILE).is_file()
    return ResolvedModel(folder, FULL_MODEL if trained else BASE_MODEL, folder, None, best_checkpoint, head_path=head)


def _probe_run(folder: Path, *, base_model_path: str, allow_pickle: bool) -> ResolvedModel:
    """A linear-probe run's OUTPUT_DIR: the frozen base model (--base_model_path, else the one its
    verdict_head.json names) and the head."""
    if base_model_path:
        base, source = Path(base_model_path), "--base_model_path"
    else:
        named = read_json_object(folder / HEAD_CONFIG_FILE).get("base_model_path")
        local = _local_folder(str(named)) if named else None
        if local is None:
            raise InputError(f"the base model of this verdict head ({named or 'not named'}) is not here; pass "
                             f"--base_model_path pointing to it", path=folder / HEAD_CONFIG_FILE,
                             field="base_model_path")
        base, source = local, f"{HEAD_CONFIG_FILE} base_model_path"
    check_model_folder(base, allow_pickle=allow_pickle)
    return ResolvedModel(folder, BASE_MODEL, base, None, None, base_model_source=source, from_output_dir=True,
                         head_path=folder)


def resolve_model(model_path: str | os.PathLike, *, base_model_path: str = "", tokenizer_path: str = "",
                  allow_pickle: bool = False) -> ResolvedModel:
    """Find out what ``model_path`` is (see the module docstring) and check that it can be loaded.

    Folders whose only weights are pickle files are refused unless ``allow_pickle``.
    """
    path = Path(model_path)
    if not path.exists():
        raise InputError("model path does not exist (set --model_path)", path=path)
    if not path.is_dir():
        raise InputError("model path is not a folder", path=path)
    if (path / BEST_CHECKPOINT_FILE).is_file():
        info = read_best_checkpoint(path)
        notes = ()
        target = best_model_folder(path, info)
        if not target.is_dir():
            target = path
            notes = (f"{info['best_checkpoint']} no longer exists; using the best model saved in {path} itself",)
        inner = _resolve_folder(target, base_model_path=base_model_path, tokenizer_path=tokenizer_path,
                                best_checkpoint=info, trained=True, allow_pickle=allow_pickle)
        return replace(inner, path=path, notes=notes, from_output_dir=True)
    return _resolve_folder(path, base_model_path=base_model_path, tokenizer_path=tokenizer_path, best_checkpoint=None,
                           trained=False, allow_pickle=allow_pickle)


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def resolve_tokenizer_path(resolved: ResolvedModel, tokenizer_path: str, *, explicit: bool) -> Path:
    """The tokenizer to use.

    ``tokenizer_path`` when it exists. When it is empty, or it is the script's
    default and does not exist on this machine, the model's own tokenizer: the
    first of the evaluated folder, the adapter's base model and the OUTPUT_DIR
    that holds tokenizer files. A path the user gave that does not exist is an error.
    """
    if tokenizer_path:
        folder = Path(tokenizer_path)
        if folder.exists():
            return folder
        if explicit:
            raise InputError("tokenizer path does not exist (--tokenizer_path)", path=folder)
        log.warning("the default tokenizer_path %s does not exist on this machine: using the model's own tokenizer",
                    folder)
    for folder in (resolved.weights_path, resolved.base_model_path, resolved.path):
        if folder is not None and has_tokenizer(folder):
            return folder
    raise InputError("no tokenizer files next to the model; pass --tokenizer_path", path=resolved.weights_path)


def weights_fingerprint(resolved: ResolvedModel) -> list[dict]:
    """Name, size and modification time of every file that decides the weights (for resume checks)."""
    rows = []
    for folder in resolved.weight_folders():
        for file in sorted(folder.iterdir()):
            if file.is_file() and (file.suffix in WEIGHT_SUFFIXES or file.name.endswith(".index.json")
                                   or file.name in ("config.json", ADAPTER_CONFIG_FILE, HEAD_CONFIG_FILE)):
                stat = file.stat()
                rows.append({"file": str(file.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return rows
