"""defect_judge/train/launcher_settings.py: training's defaults read from the launcher that holds them."""
from __future__ import annotations

import pytest

from defect_judge.errors import RunError
from defect_judge.train.launcher_settings import LAUNCHER, launcher_default, launcher_settings

LAUNCHER_TEXT = '''#!/usr/bin/env bash
# 默认参数配置
MODEL_PATH="${MODEL_PATH:-/data/model/}"          # 基础模型路径
EVAL_DATA="${EVAL_DATA:-$(dirname "$TRAIN_DATA")/dev.jsonl}"  # computed: not a plain default
LEARNING_RATE="${LEARNING_RATE:-3e-5}"            # 学习率
VERDICT_HEAD="${VERDICT_HEAD:-}"
MASTER_PORT="${MASTER_PORT:-29500}"
OTHER="${SOMETHING_ELSE:-1}"
exec deepspeed train_lora.py \\
    --model_path "$MODEL_PATH" \\
    --learning_rate "$LEARNING_RATE" \\
    --verdict_head "$VERDICT_HEAD" \\
    "$@"
'''


def test_settings_their_defaults_and_the_flags_they_become(tmp_path):
    path = tmp_path / "run.sh"
    path.write_text(LAUNCHER_TEXT, encoding="utf-8")
    settings = launcher_settings(path)
    assert list(settings) == ["MODEL_PATH", "LEARNING_RATE", "VERDICT_HEAD", "MASTER_PORT"]
    assert settings["LEARNING_RATE"].default == "3e-5" and settings["LEARNING_RATE"].flag == "learning_rate"
    assert settings["LEARNING_RATE"].comment == "学习率"
    assert settings["VERDICT_HEAD"].default == "" and settings["VERDICT_HEAD"].flag == "verdict_head"
    assert settings["MASTER_PORT"].flag is None  # the launcher's own: not a train_lora.py flag


def test_the_shipped_launcher_holds_the_documents_values():
    settings = launcher_settings(LAUNCHER)
    values = {name: settings[name].default for name in ("LEARNING_RATE", "MAX_LENGTH", "LORA_RANK", "MAX_EPOCHS",
                                                         "SAVE_STEPS", "GRADIENT_ACCUMULATION_STEPS")}
    assert values == {"LEARNING_RATE": "3e-5", "MAX_LENGTH": "4096", "LORA_RANK": "32", "MAX_EPOCHS": "300",
                      "SAVE_STEPS": "20", "GRADIENT_ACCUMULATION_STEPS": "8"}
    assert settings["MAX_EPOCHS"].flag == "num_train_epochs" and settings["SCHEDULER"].flag == "lr_scheduler_type"


def test_a_missing_or_empty_launcher_is_one_line(tmp_path):
    with pytest.raises(RunError, match="cannot be read") as missing:
        launcher_settings(tmp_path / "gone.sh")
    assert str(tmp_path / "gone.sh") in str(missing.value)
    (tmp_path / "empty.sh").write_text("#!/bin/sh\nexec true\n", encoding="utf-8")
    with pytest.raises(RunError, match="no settings found"):
        launcher_settings(tmp_path / "empty.sh")


def test_one_default_typed_for_a_benchmarks_settings_block(tmp_path):
    assert launcher_default("LORA_RANK", int) == 32 and launcher_default("LEARNING_RATE", float) == 3e-5
    path = tmp_path / "run.sh"
    path.write_text(LAUNCHER_TEXT, encoding="utf-8")
    assert launcher_default("MODEL_PATH", path=path) == "/data/model/"
    with pytest.raises(RunError, match="no setting EVAL_DATA with a plain default"):
        launcher_default("EVAL_DATA", path=path)
    with pytest.raises(RunError, match="LEARNING_RATE='3e-5' cannot be read as int"):
        launcher_default("LEARNING_RATE", int, path=path)
