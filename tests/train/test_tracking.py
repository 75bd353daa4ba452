"""defect_judge/train/tracking.py: where wandb's API key is found (the environment, or the netrc file `wandb login`
writes), wandb offline without one, and the offline run `wandb sync` uploads."""
from __future__ import annotations

import os
import time

import pytest

from defect_judge.train.tracking import has_wandb_api_key, newest_offline_run, setup_wandb


@pytest.fixture
def no_wandb_env(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.setenv(name, "")  # recorded, so what setup_wandb sets is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path / "netrc"


def test_the_api_key_comes_from_the_environment_or_the_netrc_of_wandb_login(no_wandb_env, monkeypatch):
    assert not has_wandb_api_key()  # no netrc file at all
    no_wandb_env.write_text("machine example.org login user password secret\n")
    assert not has_wandb_api_key()
    no_wandb_env.write_text("machine api.wandb.ai login user password secret\n")
    os.chmod(no_wandb_env, 0o600)
    assert has_wandb_api_key()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert not has_wandb_api_key()
    monkeypatch.setenv("WANDB_API_KEY", "key")
    assert has_wandb_api_key()


def test_without_a_key_wandb_goes_offline_into_the_output_dir(no_wandb_env, tmp_path):
    out = tmp_path / "run"
    assert setup_wandb(out, []) is False and not out.exists()  # --report_to none: wandb untouched
    assert "WANDB_MODE" not in os.environ
    assert setup_wandb(out, ["wandb"]) is True
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_DIR"] == str(out.resolve())
    assert newest_offline_run(out) is None
    older, newer = out / "wandb" / "offline-run-1", out / "wandb" / "offline-run-2"
    for folder in (newer, older):  # created in the other order: the newest by time wins, not by name
        folder.mkdir(parents=True)
        time.sleep(0.01)
    assert newest_offline_run(out) == older
