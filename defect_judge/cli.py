"""nanoGPT-style settings: a script keeps its defaults as plain constants in one
block at its top, each written once with its comment, and every one of them
can be overridden by a flag of the same name in lower case::

    # ----------------------------------------------------------------------------
    # 参数配置 (edit here, or override any of them with --NAME VALUE)

    # 模型路径
    MODEL_PATH = "/data/model"  # model folder or training OUTPUT_DIR
    BATCH_SIZE = 32  # samples per batch
    # ----------------------------------------------------------------------------

    args, given = parse_settings(globals(), paths=("model_path",))

``args`` is a frozen dataclass (a ``Settings``): the values are parsed once and never changed after; a value
derived from them is computed beside them (``dataclasses.replace`` makes a changed copy).

The block lies between the first two rule lines (``# ----...``). A setting's
``--help`` text is its comment: the comment lines directly above it (no blank
line between) and the one at the end of its line. A heading separated from the
first setting by a blank line belongs to no setting.

Relative *default* paths are written relative to the repository root (as the
design document shows them), so a script works when started from the root or
from its own folder; a path given on the command line is relative to the
current directory, as a user expects.
"""
from __future__ import annotations

import argparse
import ast
import io
import re
import tokenize
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from defect_judge import REPO_ROOT
from defect_judge.errors import remember_default_path

RULE = re.compile(r"^# ?-{20,}\s*$")


@dataclass(frozen=True)
class Setting:
    name: str     # as written in the script (MODEL_PATH, tokenizer_path)
    flag: str     # the flag without its dashes, and the attribute of the parsed namespace
    default: Any
    help: str


@dataclass(frozen=True)
class Settings:
    """A script's parsed settings, one attribute a flag; each script's own fields are made from its block."""


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


def _settings_block(source: str, script: str) -> str:
    """The text between the first two rule lines."""
    lines = source.splitlines()
    rules = [number for number, line in enumerate(lines) if RULE.match(line)]
    if len(rules) < 2:
        raise ValueError(f"{script}: no settings block (two '# ------' rule lines around the constants)")
    return "\n".join(lines[rules[0] + 1:rules[1]]) + "\n"


def _comments(block: str) -> dict[int, str]:
    """Comment text by line number (1-based, within the block)."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(block).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.lstrip("#").strip()
    return found


def _help_text(node: ast.stmt, lines: list[str], comments: dict[int, str]) -> str:
    above = []
    number = node.lineno - 1
    while number >= 1 and lines[number - 1].lstrip().startswith("#"):
        above.insert(0, comments[number])
        number -= 1
    trailing = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
    return " ".join(part for part in above + trailing if part)


def script_settings(module_globals: Mapping[str, Any], flags: Mapping[str, str] | None = None) -> list[Setting]:
    """The settings block of the script whose ``globals()`` these are, in order.

    Defaults are the module's current values (what a user edited, or a test set); ``flags`` renames
    a flag where the constant's own name cannot be used (``json_path`` -> ``--json``).
    """
    script = module_globals["__file__"]
    block = _settings_block(Path(script).read_text(encoding="utf-8"), script)
    lines, comments = block.splitlines(), _comments(block)
    settings = []
    for node in ast.parse(block).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{script}: the settings block holds only `NAME = value` lines "
                             f"(line {node.lineno} of the block)")
        name = node.targets[0].id
        help_text = _help_text(node, lines, comments)
        if not help_text:
            raise ValueError(f"{script}: setting {name} has no comment (its --help text)")
        flag = (flags or {}).get(name, name.lower())
        settings.append(Setting(name, flag, module_globals[name], help_text))
    return settings


def settings_parser(settings: Sequence[Setting], description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Add --debug to show the full traceback of an error.")
    for setting in settings:
        value = setting.default
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS,
                                  "help": f"{setting.help} (default: {value!r})".replace("%", "%%")}
        if isinstance(value, (list, tuple)):
            kwargs |= {"nargs": "+", "type": _type_of(value[0]) if value else str}
        elif isinstance(value, bool):  # `--flag` alone means true; `--flag false` also works
            kwargs |= {"nargs": "?", "const": True, "type": _bool, "metavar": "BOOL"}
        else:
            kwargs["type"] = _type_of(value)
            kwargs["metavar"] = type(value).__name__.upper() if value is not None else "VALUE"
        parser.add_argument(f"--{setting.flag}", **kwargs)
    return parser


def resolve_default_path(value: str) -> str:
    """A relative default path is anchored at the repo root; absolute ones stay."""
    if not value or Path(value).is_absolute():
        return value
    return str((REPO_ROOT / value).resolve())


def parse_settings(module_globals: Mapping[str, Any], *, paths: Iterable[str] = (), argv: Sequence[str] | None = None,
                   description: str | None = None, flags: Mapping[str, str] | None = None,
                   ) -> tuple[Settings, frozenset[str]]:
    """Parse ``--flag value`` overrides of a script's settings block.

    Returns every setting by its flag name, and the flags given on the command line. ``paths``
    names (by flag) the settings that are paths: their relative defaults are anchored at the repo root.
    """
    settings = script_settings(module_globals, flags)
    parser = settings_parser(settings, description if description is not None else module_globals.get("__doc__"))
    given = vars(parser.parse_args(argv))
    values = {s.flag: s.default for s in settings}
    script_path = Path(module_globals["__file__"]).resolve()
    shown = script_path.relative_to(REPO_ROOT) if script_path.is_relative_to(REPO_ROOT) else script_path
    for setting in settings:
        if setting.flag in paths and setting.flag not in given and isinstance(values[setting.flag], str):
            values[setting.flag] = resolve_default_path(values[setting.flag])
            remember_default_path(values[setting.flag], constant=setting.name, flag=setting.flag, script=str(shown))
    values.update(given)
    script = Path(module_globals["__file__"]).stem
    fields = [(setting.flag, Any) for setting in settings]
    settings_class = make_dataclass(f"{script}_settings", fields, bases=(Settings,), frozen=True)
    return settings_class(**values), frozenset(given)
