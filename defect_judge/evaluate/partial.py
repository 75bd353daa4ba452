"""Resumable evaluation: finished samples are appended to a partial JSONL file.

Layout of ``OUTPUT_DIR/evaluation_results.partial.jsonl`` (rank r > 0 of a
data-parallel run writes ``evaluation_results.partial.rank{r}.jsonl``; ``results_folder.partial_file``
names them)::

    {"partial": "defect-judge/evaluation-partial/v1", "fingerprint": {...}}   # header
    {"id": "...", "subtype": "...", "reference": "...", "prediction": ..., ...}  # one finished sample a line

The fingerprint holds every setting that changes answers (model and its
weights' size/mtime, test file hash, mode, ...). A run reads every partial file
of the folder; one written with other settings is refused rather than mixed in.
A last line without its newline is what a kill in the middle of a write leaves:
it is dropped (that sample is redone) and the file is cut back before appending.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Iterable

from defect_judge.errors import InputError, RunError
from defect_judge.evaluate.results_folder import PARTIAL_STEM, partial_files

PARTIAL_SCHEMA = "defect-judge/evaluation-partial/v1"


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}" for key in keys if old.get(key) != new.get(key)]


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def read_partial(path: Path, fingerprint: dict) -> tuple[list[dict], int]:
    """Finished rows of one partial file and the byte length of its intact part.

    A file whose header never got complete is empty (length 0). Raises an
    InputError for a file of another kind or written with other settings; RunError for one broken in the middle
    (a run of this script that died while writing it).
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the piece after the last newline is empty or torn
    if not complete:
        return [], 0
    start_over = f"delete {path} or pass --overwrite to start over"
    try:
        header = json.loads(complete[0])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"not a partial results file of this script; {start_over}", path=path, line=1) from None
    if not isinstance(header, dict) or header.get("partial") != PARTIAL_SCHEMA:
        raise InputError(f"not a partial results file of this script; {start_over}", path=path, line=1)
    if header.get("fingerprint") != fingerprint:
        changed = "; ".join(_differences(header.get("fingerprint") or {}, fingerprint))
        raise InputError(f"holds results of a run with other settings ({changed}); results of different "
                         f"settings are never mixed: {start_over}", path=path)
    rows = []
    for number, raw in enumerate(complete[1:], start=2):
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RunError(f"broken line in the middle of the partial results; {start_over}",
                           path=path, line=number) from None
        if not isinstance(row, dict) or "id" not in row:
            raise RunError(f"a line without a sample id; {start_over}", path=path, line=number)
        rows.append(row)
    return rows, len(data) - len(lines[-1])


def load_finished(output_dir: str | os.PathLike, fingerprint: dict, stem: str = PARTIAL_STEM) -> dict[str, dict]:
    """Every finished sample in the folder's partial files (``stem``: whose), by id (first one wins)."""
    finished: dict[str, dict] = {}
    for path in partial_files(output_dir, stem):
        rows, _ = read_partial(path, fingerprint)
        for row in rows:
            finished.setdefault(str(row["id"]), row)
    return finished


class PartialWriter:
    """Appends finished samples to this process's partial file, flushed after every batch."""

    def __init__(self, path: Path, fingerprint: dict):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        intact = read_partial(path, fingerprint)[1] if path.exists() else 0
        self.handle: IO[str] = open(path, "r+" if path.exists() else "w", encoding="utf-8")
        self.handle.truncate(intact)  # drop a torn last line
        self.handle.seek(intact)
        if intact == 0:
            self.handle.write(json.dumps({"partial": PARTIAL_SCHEMA, "fingerprint": fingerprint},
                                         ensure_ascii=False) + "\n")
            self._sync()

    def append(self, rows: Iterable[dict]) -> None:
        # One write per batch: a kill leaves at most one torn line at the end.
        self.handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self._sync()

    def _sync(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> "PartialWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def remove_partials(output_dir: str | os.PathLike, stem: str = PARTIAL_STEM) -> None:
    for path in partial_files(output_dir, stem):
        path.unlink(missing_ok=True)
