"""Experiment tracking with wandb for a training run: its files go to OUTPUT_DIR, it logs offline when no API key
is set (``wandb sync`` uploads the run later), and the run's config holds the script's settings beside the
Trainer's own.

Nothing here imports wandb unless a run reports to it (``--report_to none``: wandb may be absent).
"""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

from transformers import TrainerCallback

log = logging.getLogger(__name__)

WANDB_FOLDER = "wandb"  # under OUTPUT_DIR (WANDB_DIR), unless the environment says otherwise
OFFLINE_RUN_GLOB = "offline-run-*"  # wandb's folder of one offline run


def setup_wandb(output_dir: str | os.PathLike, report_to: Sequence[str] | None) -> bool:
    """Send wandb files to OUTPUT_DIR and go offline when no API key is set; True when offline."""
    if "wandb" not in (report_to or []):
        return False
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_DIR", str(Path(output_dir).resolve()))
    if "WANDB_MODE" not in os.environ and not has_wandb_api_key():
        os.environ["WANDB_MODE"] = "offline"
        log.info("wandb: no API key (WANDB_API_KEY or `wandb login`): logging offline under %s/%s", output_dir,
                 WANDB_FOLDER)
    return os.environ.get("WANDB_MODE") in ("offline", "dryrun")


def has_wandb_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:  # where `wandb login` stores the key (NETRC moves the file, as for wandb itself)
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def newest_offline_run(output_dir: str | os.PathLike) -> Path | None:
    """The offline run wandb wrote last under OUTPUT_DIR (what ``wandb sync`` uploads), or None."""
    runs = sorted((Path(output_dir) / WANDB_FOLDER).glob(OFFLINE_RUN_GLOB), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


class WandbConfigCallback(TrainerCallback):
    """Adds the script's own settings (model, data, LoRA, head) to the wandb run's config (the Trainer adds its
    own)."""

    def __init__(self, config: dict):
        self.config = config

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and "wandb" in (args.report_to or []):
            import wandb

            if wandb.run is not None:
                wandb.config.update(self.config, allow_val_change=True)
