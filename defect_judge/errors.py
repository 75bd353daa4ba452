"""The two kinds of failure a script reports in one line, InputError (the input is wrong) and RunError (the run
failed through no fault of its input), and the wrapper every script's ``main`` runs under.

A user sees one line, ``PROG: error: ...`` or ``PROG: failed: ...``, that names the file (and line, sample and
field where there is one), and the script exits non-zero; ``--debug`` shows the traceback. The exit code says
whose problem it is:

    2    the input is wrong (InputError): a file, a flag, a setting, the data; fix it and run again. An OSError
         (a file that cannot be read, an output that cannot be written) is reported the same way. 2 is also
         what argparse exits with on a bad flag.
    1    the input is fine, the run failed (RunError): a library or the environment (a package that is not
         installed, a missing GPU, a download), a child process or a rank that died, an internal inconsistency,
         an unexpected state of the toolkit's own outputs. 1 is also Python's exit code for an unexpected
         exception (a traceback), which is not the user's input either.
    130  interrupted (Ctrl-C).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable

EXIT_INPUT_ERROR = 2
EXIT_RUN_ERROR = 1
EXIT_INTERRUPTED = 130
WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG)  # the output side failed, not a read
# How Rust libraries (safetensors, tokenizers) report an OS error: not an OSError, but this in the message.
RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class ToolkitError(Exception):
    """A failure reported in one line, ``PROG: {label}: {where}: {reason}``, and its exit code: raise one of its
    two kinds, InputError or RunError."""
    label: str
    exit_code: int

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


# The path settings a script runs with at their default value (not given on its command line): a failure on one of
# those paths names the setting, so a bare run on the document's example paths says what to set.
DOCUMENT_PATHS = ("/data/", "/home/ubuntu/")  # where the design document's example paths live
_DEFAULT_PATHS: dict[Path, tuple[str, str, str]] = {}  # resolved path -> (constant, flag, script)


def remember_default_path(value: str, *, constant: str, flag: str, script: str) -> None:
    """``value`` is ``constant``'s default in ``script``, not given as ``--flag``."""
    if value:
        _DEFAULT_PATHS[Path(value).resolve()] = (constant, flag, script)


def default_path_hint(path: str | os.PathLike | None) -> str:
    """What to set when ``path`` (or a folder above it) is a path setting's default: "" otherwise."""
    if path is None or not _DEFAULT_PATHS:
        return ""
    resolved = Path(path).resolve()
    for default, (constant, flag, script) in _DEFAULT_PATHS.items():
        if resolved == default or default in resolved.parents:
            whose = "the design document's example" if str(default).startswith(DOCUMENT_PATHS) else "its default"
            return f" ({constant} is {whose}, {default}: pass --{flag} or set {constant} at the top of {script})"
    return ""


class InputError(ToolkitError):
    """Bad input the user can fix: names where the problem is."""
    label = "error"
    exit_code = EXIT_INPUT_ERROR


class RunError(ToolkitError):
    """A run that failed although its input is fine: the environment, a library, a process or rank that died,
    an internal inconsistency; names where it showed."""
    label = "failed"
    exit_code = EXIT_RUN_ERROR


def run_main(main: Callable[[], object]) -> None:
    """Run ``main``; turn expected failures into one clear line and their exit code (2 for bad input, an
    OSError included; 1 for a RunError).

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
        sys.exit(EXIT_INTERRUPTED)
    except (ToolkitError, OSError) as error:
        if debug:
            raise
        logging.shutdown()
        prog = Path(sys.argv[0]).name
        if isinstance(error, ToolkitError):
            label, message, code = error.label, str(error) + default_path_hint(error.path), error.exit_code
        else:
            target = f" '{error.filename}'" if error.filename else ""
            verb = "cannot write" if error.errno in WRITE_ERRNOS else "cannot access"
            label, message, code = ("error", f"{verb}{target}: {error.strerror or error}"
                                    + default_path_hint(error.filename), EXIT_INPUT_ERROR)
        print(f"{prog}: {label}: {message}", file=sys.stderr)
        sys.exit(code)
    except Exception as error:
        number = RUST_OS_ERROR.search(str(error))
        if debug or number is None:
            raise
        logging.shutdown()
        verb = "cannot write" if int(number.group(1)) in WRITE_ERRNOS else "cannot access a file"
        print(f"{Path(sys.argv[0]).name}: error: {verb}: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(EXIT_INPUT_ERROR)
