"""Training's settings as the launcher holds them: ``instruct_fine_tuning/run_training_lora.sh`` is where the design
document has users edit the defaults (``LEARNING_RATE="${LEARNING_RATE:-3e-5}"  # 学习率``), so they are written there
once; this module reads them, and the ``train_lora.py`` flag each becomes (``--learning_rate "$LEARNING_RATE"``), so
that ``train_lora.py`` run directly and the recipes use the same values and names.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from defect_judge import REPO_ROOT
from defect_judge.errors import RunError

LAUNCHER = REPO_ROOT / "instruct_fine_tuning" / "run_training_lora.sh"
AUTO_SAVE_STEPS = "auto"  # SAVE_STEPS=auto: half an epoch, counted by the launcher (recipes.half_epoch_save_steps)
# NAME="${NAME:-value}"  # comment: a default with no shell expansion in it (EVAL_DATA's is computed: left out)
_SETTING = re.compile(r'^(?P<name>[A-Z][A-Z0-9_]*)="\$\{(?P=name):-(?P<value>[^}$`"]*)\}"\s*(?:#\s*(?P<comment>.*))?$')
# --flag "$NAME" in the line that starts train_lora.py
_FLAG = re.compile(r'^\s*--(?P<flag>[a-z][a-z0-9_]*) "\$(?P<name>[A-Z][A-Z0-9_]*)"')


@dataclass(frozen=True)
class LauncherSetting:
    name: str              # the launcher's variable: LEARNING_RATE
    default: str           # its value as the launcher writes it: 3e-5
    flag: str | None       # the train_lora.py flag it becomes (learning_rate); None: the launcher's own (NUM_GPUS)
    comment: str = ""      # what the launcher says of it: 学习率


def launcher_settings(path: str | os.PathLike = LAUNCHER) -> dict[str, LauncherSetting]:
    """The launcher's settings with a plain default, by variable name, in the order it lists them."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise RunError(f"training's defaults are read from the launcher, which cannot be read ({error.strerror})",
                       path=path) from None
    flags = {m["name"]: m["flag"] for m in map(_FLAG.match, lines) if m}
    settings = {m["name"]: LauncherSetting(m["name"], m["value"], flags.get(m["name"]), (m["comment"] or "").strip())
                for m in map(_SETTING.match, lines) if m}
    if not settings:
        raise RunError('no settings found (lines NAME="${NAME:-value}")', path=path)
    return settings


def launcher_default(name: str, kind: type = str, path: str | os.PathLike = LAUNCHER):
    """One setting's default, as ``kind`` (``launcher_default("LORA_RANK", int)``): for a benchmark's settings block
    that trains with the document's values without writing them again."""
    setting = launcher_settings(path).get(name)
    if setting is None:
        raise RunError(f"no setting {name} with a plain default", path=path)
    try:
        return kind(setting.default)
    except ValueError:
        raise RunError(f"{name}={setting.default!r} cannot be read as {kind.__name__}", path=path) from None
