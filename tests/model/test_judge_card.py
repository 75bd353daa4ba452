"""defect_judge/model/judge_card.py: what a trained model needs to judge without a test file, as training records
it (best_checkpoint.json, verdict_head.json), as a checkpoint of the run reads it (without the best checkpoint's
threshold), inferred for a folder written before it existed (with a warning), and refused without a vocabulary."""
from __future__ import annotations

import json
import logging

import pytest

from defect_judge.errors import InputError
from defect_judge.model.judge_card import CARD_KEY, card_from_json, card_from_training, judge_card
from helpers import make_records, write_records

CARD = {"judgements": ["否", "是"], "positive": "是", "negative": "否", "subtypes": ["除零"], "max_length": 512,
        "dev_threshold": {"threshold": 0.42, "balanced_accuracy": 0.75}}


def run_folder(tmp_path, card: dict | None = CARD, **extra):
    """A training OUTPUT_DIR with two checkpoints, the best one checkpoint-4."""
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
    info = {"best_checkpoint": "checkpoint-4", "step": 4} | extra | ({CARD_KEY: card} if card else {})
    (tmp_path / "best_checkpoint.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    return tmp_path


def test_training_records_its_vocabulary_subtypes_and_max_length():
    card = card_from_training(["是", "否", "是"], ["除零", "内存泄漏", "除零"], 1024)
    assert card.judgements == ("否", "是") and (card.positive, card.negative) == ("是", "否")
    assert card.subtypes == ("内存泄漏", "除零") and card.max_length == 1024 and card.dev_threshold is None
    assert card_from_json(card.to_json(), path="x") == card
    three = card_from_training(["是", "否", "有"], [], 512)
    assert three.positive is None  # three words: none of them means "defective" alone


def test_the_best_checkpoint_keeps_the_dev_threshold_and_another_checkpoint_does_not(tmp_path):
    folder = run_folder(tmp_path)
    for weights, threshold in ((folder, 0.42), (folder / "checkpoint-4", 0.42), (folder / "checkpoint-2", None)):
        card = judge_card(weights, run_folder=folder)
        assert card.judgements == ("否", "是") and card.max_length == 512 and not card.inferred
        assert (card.dev_threshold or {}).get("threshold") == threshold, weights


def test_the_head_carries_the_card_of_a_run_without_best_checkpoint(tmp_path):
    (tmp_path / "verdict_head.json").write_text(json.dumps({"positive": "有缺陷", CARD_KEY: CARD | {
        "judgements": ["无缺陷", "有缺陷"], "positive": "有缺陷", "negative": "无缺陷", "dev_threshold": None}},
        ensure_ascii=False), encoding="utf-8")
    card = judge_card(tmp_path, head_config=tmp_path / "verdict_head.json")
    assert card.positive == "有缺陷" and card.subtypes == ("除零",)


def test_an_older_folder_is_inferred_with_a_warning_naming_what(tmp_path, caplog):
    dev = write_records(tmp_path / "dev.jsonl", make_records(4))
    (tmp_path / "run").mkdir()
    folder = run_folder(tmp_path / "run", card=None, eval_data=str(dev))
    with caplog.at_level(logging.WARNING):
        card = judge_card(folder, run_folder=folder)
    assert card.judgements == ("否", "是") and card.positive == "是" and card.max_length is None
    assert card.inferred and str(dev) in card.inferred[0]
    assert "records no judge card" in caplog.text and str(dev) in caplog.text


def test_a_base_model_takes_the_flag_and_without_it_is_refused_naming_it(tmp_path):
    assert judge_card(tmp_path, judgements=["是", "否"]).positive == "是"
    with pytest.raises(InputError) as caught:
        judge_card(tmp_path)
    assert "--judgements" in str(caught.value) and str(tmp_path) in str(caught.value)


def test_a_flag_against_the_recorded_vocabulary_is_refused(tmp_path):
    folder = run_folder(tmp_path)
    assert judge_card(folder, run_folder=folder, judgements=["否", "是"]).positive == "是"
    with pytest.raises(InputError, match="trained to answer 否/是"):
        judge_card(folder, run_folder=folder, judgements=["yes", "no"])


@pytest.mark.parametrize("change, field", [
    ({"judgements": []}, "judge.judgements"),
    ({"positive": "有"}, "judge.positive"),
    ({"max_length": 0}, "judge.max_length"),
    ({"subtypes": "除零"}, "judge.subtypes"),
    ({"dev_threshold": {"threshold": "high"}}, "judge.dev_threshold"),
])
def test_a_malformed_card_names_its_file_and_field(tmp_path, change, field):
    folder = run_folder(tmp_path, card=CARD | change)
    with pytest.raises(InputError) as caught:
        judge_card(folder, run_folder=folder)
    assert "best_checkpoint.json" in str(caught.value) and f"'{field}'" in str(caught.value)
