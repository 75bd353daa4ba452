"""nanoGPT-style configuration: a script keeps its defaults as plain constants at
the top, and every one of them can be overridden by a flag of the same name.

Relative *default* paths are written relative to the repository root (as the
design document shows them), so a script works when started from the root or
from its own folder; a path given on the command line is relative to the
current directory, as a user expects.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import REPO_ROOT


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _type_of(value: Any):
    if isinstance(value, bool):
        return _bool
    if isinstance(value, (int, float)):
        return type(value)
    return str


def constants_parser(defaults: dict[str, Any], help: dict[str, str], description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Add --debug to show the full traceback of an error.")
    for name, value in defaults.items():
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f"{help.get(name, '')} (default: {value!r})"}
        if isinstance(value, (list, tuple)):
            kwargs |= {"nargs": "+", "type": _type_of(value[0]) if value else str}
        elif isinstance(value, bool):  # `--flag` alone means true; `--flag false` also works
            kwargs |= {"nargs": "?", "const": True, "type": _bool, "metavar": "BOOL"}
        else:
            kwargs["type"] = _type_of(value)
            kwargs["metavar"] = type(value).__name__.upper() if value is not None else "VALUE"
        parser.add_argument(f"--{name}", **kwargs)
    return parser


def resolve_default_path(value: str) -> str:
    """A relative default path is anchored at the repo root; absolute ones stay."""
    if not value or Path(value).is_absolute():
        return value
    return str((REPO_ROOT / value).resolve())


def parse_constants(defaults: dict[str, Any], *, help: dict[str, str] | None = None, description: str | None = None,
                    path_names: Iterable[str] = (), argv: Sequence[str] | None = None,
                    parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse ``--NAME value`` overrides of ``defaults``; returns every constant.

    ``path_names`` lists the constants that are paths; their defaults are
    resolved against the repo root when relative.
    """
    parser = parser or constants_parser(defaults, help or {}, description)
    given = vars(parser.parse_args(argv))
    values = dict(defaults)
    for name in path_names:
        if name not in given and isinstance(values[name], str):
            values[name] = resolve_default_path(values[name])
    values.update(given)
    return argparse.Namespace(**values)
