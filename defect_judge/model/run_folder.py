"""The training run folder (OUTPUT_DIR): the names of what it holds, its checkpoints and ``best_checkpoint.json``.

One module names, writes and reads it; training, evaluation, the sweep, the benchmarks and the demo summary call it.
A new run refuses an OUTPUT_DIR that holds an earlier one unless told to resume it or start over
(``prepare_output_dir``).

    OUTPUT_DIR/
      checkpoint-N/                    what the Trainer saves every SAVE_STEPS
        checkpoint_complete.json       written last, once every rank has saved: the checkpoint is whole
      best_checkpoint.json             which checkpoint is the best, on what metric and which eval file
      (the best model itself, learning_curve.png, trainer_state.json, wandb/)
"""
from __future__ import annotations

import bisect
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Sequence

from defect_judge.errors import InputError
from defect_judge.fileio import check_output_dir, file_sha256, read_json_object, write_json_atomic
from defect_judge.model.head_files import HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, has_head

log = logging.getLogger(__name__)

BEST_CHECKPOINT_FILE = "best_checkpoint.json"
CHECKPOINT_COMPLETE_FILE = "checkpoint_complete.json"  # written last into a checkpoint: it is complete
CHECKPOINT_PREFIX = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR: checkpoint-{step}
CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")
TRAINER_STATE_FILE = "trainer_state.json"  # the Trainer's log history, in OUTPUT_DIR and in every checkpoint
LEARNING_CURVE_FILE = "learning_curve.png"


def checkpoint_name(step: int) -> str:
    """The folder name the Trainer gives the checkpoint of optimizer step ``step``."""
    return f"{CHECKPOINT_PREFIX}-{step}"


def checkpoint_step(name: str | os.PathLike) -> int:
    """The step of ``checkpoint-N`` (a name or a path)."""
    match = CHECKPOINT_RE.match(Path(name).name)
    if match is None:
        raise ValueError(f"not a checkpoint folder name: {Path(name).name!r}")
    return int(match.group(1))


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-N`` folders of ``output_dir``, oldest step first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name)), key=checkpoint_step)


def mark_complete(checkpoint: str | os.PathLike, step: int, world_size: int) -> None:
    write_json_atomic(Path(checkpoint) / CHECKPOINT_COMPLETE_FILE, {"step": step, "world_size": world_size})


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / CHECKPOINT_COMPLETE_FILE).is_file()


def find_resume_checkpoint(output_dir: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """(newest complete checkpoint or None, the incomplete checkpoints newer than it)."""
    checkpoints = list_checkpoints(output_dir)
    complete = [p for p in checkpoints if is_complete_checkpoint(p)]
    if not complete:
        return None, checkpoints
    newest = complete[-1]
    after = bisect.bisect_right([checkpoint_step(p) for p in checkpoints], checkpoint_step(newest))
    return newest, [p for p in checkpoints[after:] if not is_complete_checkpoint(p)]


def remove_checkpoints(paths: Sequence[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def prepare_output_dir(output_dir: str | os.PathLike, *, resume_from_checkpoint: str | None, overwrite: bool,
                       main: bool) -> str | None:
    """Refuse to overwrite an earlier run; find the checkpoint to resume from (None: start from scratch).
    ``main``: this process deletes what an overwrite or a resume discards (one rank does)."""
    output_dir = check_output_dir(output_dir)
    existing = list_checkpoints(output_dir)
    best_file = output_dir / BEST_CHECKPOINT_FILE
    earlier = best_file.exists() or has_head(output_dir)
    requested = resume_from_checkpoint
    if requested and overwrite:
        raise InputError("pass either --resume_from_checkpoint or --overwrite_output_dir, not both")
    if not requested:
        if (existing or earlier) and not overwrite:
            names = ", ".join(p.name for p in existing[-3:]) or (BEST_CHECKPOINT_FILE if best_file.exists()
                                                                else HEAD_CONFIG_FILE)
            raise InputError(f"already holds an earlier run ({names}): pass --resume_from_checkpoint auto to continue "
                             f"it, or --overwrite_output_dir to start over (deleting its checkpoints)",
                             path=output_dir)
        if main and (existing or earlier):
            log.warning("--overwrite_output_dir: deleting %d checkpoint(s) of the earlier run in %s",
                        len(existing), output_dir)
            remove_checkpoints(existing)
            best_file.unlink(missing_ok=True)
            for name in (HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE):
                (output_dir / name).unlink(missing_ok=True)
        return None
    if requested.lower() in ("auto", "true", "latest"):
        newest, incomplete = find_resume_checkpoint(output_dir)
        if incomplete:
            log.warning("skipping incomplete checkpoint(s) (the run stopped while saving them): %s",
                        ", ".join(p.name for p in incomplete))
            if main:
                remove_checkpoints(incomplete)
        if newest is None:
            log.warning("--resume_from_checkpoint auto: no complete checkpoint in %s, starting from scratch",
                        output_dir)
            return None
        log.info("resuming from %s", newest)
        return str(newest)
    path = Path(requested)
    if not path.is_dir():
        raise InputError("checkpoint not found", path=path)
    return str(path)


def best_checkpoint_info(checkpoint: str, *, metric: str | None, value: float | None,
                         greater_is_better: bool | None, finetuning_type: str, base_model_path: str | os.PathLike,
                         eval_data: str | os.PathLike | None = None, eval_samples: int | None = None,
                         test_data: str | os.PathLike | None = None, verdict_head: str | None = None,
                         judge: dict | None = None) -> dict:
    """The content of ``best_checkpoint.json``. With a metric, also the file the choice was made on (path,
    sha256, samples) and whether that file is the test split (then a test accuracy is optimistic);
    ``verdict_head``: the spec of the head every checkpoint carries (the metric is then the head's); ``judge``:
    the judge card (``model/judge_card.py``), what the model needs to judge new code."""
    info = {"best_checkpoint": checkpoint, "step": checkpoint_step(checkpoint), "metric": metric, "value": value,
            "greater_is_better": greater_is_better, "finetuning_type": finetuning_type,
            "base_model_path": str(Path(base_model_path).resolve()), "verdict_head": verdict_head}
    if metric is not None and eval_data is not None:
        chosen_on = Path(eval_data).resolve()
        info |= {"eval_data": str(chosen_on), "eval_data_sha256": file_sha256(chosen_on), "eval_samples": eval_samples,
                 "eval_is_test_data": bool(test_data) and Path(test_data).exists() and chosen_on.samefile(test_data)}
    if judge is not None:
        info["judge"] = judge
    return info


def write_best_checkpoint(output_dir: str | os.PathLike, info: dict) -> Path:
    path = Path(output_dir) / BEST_CHECKPOINT_FILE
    write_json_atomic(path, info)
    return path


def read_best_checkpoint(output_dir: str | os.PathLike) -> dict:
    """The ``best_checkpoint.json`` a training run left in its OUTPUT_DIR."""
    path = Path(output_dir) / BEST_CHECKPOINT_FILE
    info = read_json_object(path, not_object="must be an object with a string 'best_checkpoint'")
    if not isinstance(info.get("best_checkpoint"), str):
        raise InputError("must be an object with a string 'best_checkpoint'", path=path, field="best_checkpoint")
    return info


def best_model_folder(output_dir: str | os.PathLike, info: dict) -> Path:
    """The folder ``best_checkpoint.json`` names (it may since have been deleted), which must be a folder
    directly inside OUTPUT_DIR: the file never points elsewhere."""
    output_dir = Path(output_dir)
    name = info["best_checkpoint"]
    if (output_dir / name).resolve().parent != output_dir.resolve():
        raise InputError(f"best_checkpoint must name a folder inside OUTPUT_DIR, got {name!r}",
                         path=output_dir / BEST_CHECKPOINT_FILE, field="best_checkpoint")
    return output_dir / name
