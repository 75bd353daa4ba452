"""The verdict head's files beside a model (``verdict_head.json``, ``verdict_head.safetensors``): their names and
whether a folder holds a head. Without torch, so that the run folder and path resolution can ask."""
from __future__ import annotations

import os
from pathlib import Path

HEAD_CONFIG_FILE = "verdict_head.json"
HEAD_WEIGHTS_FILE = "verdict_head.safetensors"


def has_head(folder: str | os.PathLike | None) -> bool:
    return folder is not None and (Path(folder) / HEAD_CONFIG_FILE).is_file()
