"""defect_judge/model/run_folder.py: the training run folder (refused, resumed or overwritten by a new run)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from defect_judge.model.run_folder import (BEST_CHECKPOINT_FILE, CHECKPOINT_COMPLETE_FILE, best_checkpoint_info,
                                           best_model_folder, checkpoint_name, checkpoint_step, find_resume_checkpoint,
                                           is_complete_checkpoint, list_checkpoints, mark_complete, prepare_output_dir,
                                           read_best_checkpoint, write_best_checkpoint)
from defect_judge.errors import InputError


def test_checkpoints_are_listed_by_step_not_by_name(tmp_path):
    for name in ("checkpoint-10", "checkpoint-9", "checkpoint-100", "checkpoint-x", "runs"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-5").write_text("a file, not a checkpoint")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-9", "checkpoint-10", "checkpoint-100"]
    assert checkpoint_step(tmp_path / "checkpoint-100") == 100
    with pytest.raises(ValueError):
        checkpoint_step("checkpoint-x")
    assert list_checkpoints(tmp_path / "missing") == []


def test_resume_takes_the_newest_complete_checkpoint(tmp_path):
    assert find_resume_checkpoint(tmp_path / "missing") == (None, [])
    for step in (2, 20, 100, 120):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert find_resume_checkpoint(tmp_path)[0] is None  # none complete yet
    for step in (20, 100):
        mark_complete(tmp_path / f"checkpoint-{step}", step, world_size=2)
    assert is_complete_checkpoint(tmp_path / "checkpoint-100") and not is_complete_checkpoint(tmp_path / "checkpoint-120")
    # the newest complete one by step (100, not the name-sorted 20), and the incomplete ones after it only
    assert find_resume_checkpoint(tmp_path) == (tmp_path / "checkpoint-100", [tmp_path / "checkpoint-120"])


def test_best_checkpoint_names_the_file_it_was_chosen_on(tmp_path):
    dev, test = tmp_path / "dev.jsonl", tmp_path / "test.jsonl"
    dev.write_text("dev\n")
    test.write_text("test\n")
    info = best_checkpoint_info("checkpoint-40", metric="eval_accuracy_then_loss", value=0.75, greater_is_better=True,
                                finetuning_type="lora", base_model_path=tmp_path, eval_data=dev, eval_samples=32,
                                test_data=test)
    assert info["step"] == 40 and info["eval_data"] == str(dev.resolve()) and info["eval_is_test_data"] is False
    assert info["eval_data_sha256"] == hashlib.sha256(b"dev\n").hexdigest() and info["eval_samples"] == 32
    on_test = best_checkpoint_info("checkpoint-40", metric="eval_loss", value=0.1, greater_is_better=False,
                                   finetuning_type="lora", base_model_path=tmp_path, eval_data=test, eval_samples=8,
                                   test_data=test)
    assert on_test["eval_is_test_data"] is True
    last = best_checkpoint_info("checkpoint-8", metric=None, value=None, greater_is_better=None,
                                finetuning_type="full", base_model_path=tmp_path)
    assert "eval_data" not in last and last["metric"] is None
    write_best_checkpoint(tmp_path, info)
    assert read_best_checkpoint(tmp_path) == json.loads(json.dumps(info))
    assert best_model_folder(tmp_path, info) == tmp_path / "checkpoint-40"


@pytest.mark.parametrize("name", ["../elsewhere", "/tmp", "checkpoint-4/inner"])
def test_best_checkpoint_never_points_outside_its_folder(tmp_path, name):
    with pytest.raises(InputError, match="inside OUTPUT_DIR"):
        best_model_folder(tmp_path, {"best_checkpoint": name})


@pytest.mark.parametrize("content, message", [
    (None, "file not found"), ('{"best_checkpoint": ', "invalid JSON"), ("[1, 2]", "must be an object"),
    ('{"best_checkpoint": 4}', "must be an object"), (b"\xff\xfe{}", "not UTF-8 text")])
def test_a_bad_best_checkpoint_file_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / BEST_CHECKPOINT_FILE
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message) as caught:
        read_best_checkpoint(tmp_path)
    assert BEST_CHECKPOINT_FILE in str(caught.value)


# ------------------------------------------------------------ a new run in it

def fake_checkpoint(folder: Path, step: int, complete: bool) -> Path:
    path = folder / checkpoint_name(step)
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"")
    if complete:
        (path / CHECKPOINT_COMPLETE_FILE).write_text(json.dumps({"step": step}))
    return path


def test_output_dir_of_an_earlier_run_is_refused_resumed_or_overwritten(tmp_path):
    def args(**kwargs):
        return {"resume_from_checkpoint": None, "overwrite": False, "main": True} | kwargs

    assert prepare_output_dir(tmp_path, **args()) is None  # empty folder: a fresh run
    fake_checkpoint(tmp_path, 2, True)
    fake_checkpoint(tmp_path, 4, False)
    with pytest.raises(InputError) as caught:
        prepare_output_dir(tmp_path, **args())
    assert "--resume_from_checkpoint auto" in str(caught.value) and "--overwrite_output_dir" in str(caught.value)
    assert prepare_output_dir(tmp_path, **args(resume_from_checkpoint="auto")) == str(tmp_path / checkpoint_name(2))
    assert not (tmp_path / checkpoint_name(4)).exists()  # the half-written one is gone, so it cannot be mixed in
    assert prepare_output_dir(tmp_path, **args(overwrite=True)) is None
    assert not (tmp_path / checkpoint_name(2)).exists()
