"""One error type for bad input, and the wrapper every script's ``main`` runs under.

A user sees one line that names the file (and line, sample and field where
there is one) and the script exits non-zero; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable, NoReturn

EXIT_INPUT_ERROR = 2
WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG)  # the output side failed, not a read
# How Rust libraries (safetensors, tokenizers) report an OS error: not an OSError, but this in the message.
RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class InputError(Exception):
    """Bad input the user can fix: names where the problem is."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None,
                 line: int | None = None, sample: int | str | None = None, field: str | None = None):
        self.path, self.line, self.sample, self.field = path, line, sample, field
        self.reason = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path) + (f":{self.line}" if self.line is not None else ""))
        if self.sample is not None:
            where.append(f"sample {self.sample}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return (", ".join(where) + ": " if where else "") + self.reason


def fail(message: str, **where) -> NoReturn:
    raise InputError(message, **where)


def run_main(main: Callable[[], object]) -> None:
    """Run ``main``; turn expected failures into one clear line and exit code 2.

    ``--debug`` anywhere on the command line (or DEFECT_JUDGE_DEBUG=1) lets the
    traceback through instead.
    """
    debug = "--debug" in sys.argv or os.environ.get("DEFECT_JUDGE_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (InputError, OSError) as error:
        if debug:
            raise
        logging.shutdown()
        prog = Path(sys.argv[0]).name
        if isinstance(error, OSError) and not isinstance(error, InputError):
            target = f" '{error.filename}'" if error.filename else ""
            verb = "cannot write" if error.errno in WRITE_ERRNOS else "cannot access"
            message = f"{verb}{target}: {error.strerror or error}"
        else:
            message = str(error)
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_INPUT_ERROR)
    except Exception as error:
        number = RUST_OS_ERROR.search(str(error))
        if debug or number is None:
            raise
        logging.shutdown()
        verb = "cannot write" if int(number.group(1)) in WRITE_ERRNOS else "cannot access a file"
        print(f"{Path(sys.argv[0]).name}: error: {verb}: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(EXIT_INPUT_ERROR)
