"""Files: atomic writes (an output file is either the old one or the complete new one), reading JSON with one-line
errors, a file's sha256, whether two paths name one folder."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from defect_judge.errors import InputError


def check_output_dir(path: str | os.PathLike, flag: str = "--output_dir") -> Path:
    """An output folder that names an existing file is one clear line (mkdir would say only "File exists")."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} is a file, not a folder", path=path)
    return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``.

    On any error the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.filename is None and error.errno:
            # A failed write (ENOSPC, EIO) names no file: name the one it was for.
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2)
        handle.write("\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write one JSON object a line (``ensure_ascii=False``); returns the count."""
    count = 0
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_json_object(path: str | os.PathLike, *, missing: str = "file not found",
                     not_object: str = "must be a JSON object") -> dict:
    """A JSON file that must hold one object; anything else is one InputError naming the file (and line)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(missing, path=path) from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", path=path) from None
    except json.JSONDecodeError as error:
        raise InputError(f"invalid JSON: {error.msg}", path=path, line=error.lineno) from None
    if not isinstance(data, dict):
        raise InputError(not_object, path=path)
    return data


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def same_folder(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one folder (through symlinks and relative parts)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is gone: compare what they resolve to
        return Path(a).resolve() == Path(b).resolve()
