"""What a new user's own data ran into (issue "Tried as a new user would, round 2"): a stray judgement word is
refused, not made a third class, by the conversion, the baseline and the evaluation; long code is named at
conversion and cut at evaluation (tests/scripts/test_prompt_cut.py); SAVE_STEPS=auto sizes the checkpoints to the data;
a bare run on a default path says which setting to change."""
from __future__ import annotations

import json
from pathlib import Path

from defect_judge.train.recipes import half_epoch_save_steps
from helpers import (BASELINE, CONVERT, EVALUATE, LAUNCHER, REPO_ROOT, assert_clean_failure, make_records,
                     run_script, write_records)

TASK = "请判断下面的C函数是否存在空指针解引用缺陷。"


def raw(index: int, judgement: str, event: str | None = None) -> dict:
    return {"instruction": [{"subtype": "空指针解引用"}],
            "input": {"task": TASK, "event": event or f"int f{index}(int *p) {{ return p[{index}]; }}",
                      "output_format": "判断:是/否\n\n原因：<简要说明>"},
            "output": {"judgement": judgement, "reason": "见代码。"}}


def convert(input_dir: Path, out: Path, *extra):
    return run_script(CONVERT, "--input_dir", input_dir, "--converted_file", out / "all.jsonl", "--train_file",
                      out / "train.jsonl", "--dev_file", out / "dev.jsonl", "--test_file", out / "test.jsonl", *extra)


def test_a_third_judgement_word_is_refused_by_the_conversion(tmp_path):
    samples = [raw(i, "是" if i % 2 else "否") for i in range(23)] + [raw(23, "有")]
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "mine.json").write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    result = convert(tmp_path / "raw", tmp_path / "out")
    line = assert_clean_failure(result, "mine.json", "sample 23", "output.judgement", "3 judgement values",
                                "否 12", "是 11", "有 1")
    assert "'有'" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


def test_the_evaluation_and_the_baseline_refuse_a_third_judgement_too(tiny_model_dir, tmp_path):
    rows = make_records(6)
    rows[4]["text"][-1]["content"] = rows[4]["text"][-1]["content"].replace("判断:是", "判断:有")
    test = write_records(tmp_path / "test.jsonl", rows)
    train = write_records(tmp_path / "train.jsonl", make_records(8, start=6))
    evaluated = run_script(EVALUATE, "--model_path", tiny_model_dir, "--test_dataset_path", test, "--output_dir",
                           tmp_path / "eval", "--mode", "score")
    assert_clean_failure(evaluated, f"{test}:5", f"sample {rows[4]['id']}", "3 judgement values")
    baseline = run_script(BASELINE, "--train_dataset_path", train, "--dev_dataset_path", "", "--test_dataset_path",
                          test, "--output_dir", tmp_path / "tfidf")
    assert_clean_failure(baseline, f"{test}:5", "3 judgement values", "有 1")


def test_the_conversion_names_events_longer_than_its_threshold(tmp_path):
    long_code = "int f(void) {\n" + "    x += 1;\n" * 3000 + "}"
    samples = [raw(i, "是" if i % 2 else "否") for i in range(24)]
    samples[5] = raw(5, "是", long_code)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "mine.json").write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    result = convert(tmp_path / "raw", tmp_path / "out", "--long_event_chars", "20000")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 sample(s) with an event longer than --long_event_chars 20000" in result.stderr
    assert "mine.json#5" in result.stderr


def test_save_steps_auto_is_half_an_epoch_of_the_data(tmp_path):
    train = write_records(tmp_path / "train.jsonl", make_records(14))
    assert half_epoch_save_steps(str(train), 4) == 2           # 14 samples, 4 a step: 4 steps an epoch
    assert half_epoch_save_steps(str(train), 1) == 7
    assert half_epoch_save_steps(str(train), 8, ["--pair_batches", "false"]) == 1
    rows = make_records(12)
    for index, row in enumerate(rows):
        row["pair_id"] = f"twin-{index // 2}"  # 6 pairs
    paired = write_records(tmp_path / "paired.jsonl", rows)
    assert half_epoch_save_steps(str(paired), 1, ["--seed", "1", "--pair_batches"]) == 3


def test_a_bare_run_on_the_documents_default_paths_names_the_setting(tmp_path):
    test = write_records(tmp_path / "test.jsonl", make_records(2))
    evaluated = run_script(EVALUATE, "--test_dataset_path", test, cwd=tmp_path)
    assert_clean_failure(evaluated, "/data/qwen_instruct_lora_finetuned_0401/checkpoint-140", "MODEL_PATH is the "
                         "design document's example", "pass --model_path", "eval/model_evaluation.py")
    plotted = run_script(REPO_ROOT / "eval" / "plot_subtype_acc.py", cwd=tmp_path)
    assert_clean_failure(plotted, "result1_path is the design document's example", "--result1_path")
    baseline = run_script(BASELINE, "--train_dataset_path", tmp_path / "missing.jsonl", cwd=tmp_path)
    line = assert_clean_failure(baseline, "missing.jsonl", "file not found")
    assert "TRAIN_DATASET_PATH" not in line  # a path the user gave is theirs: no hint about the default


def test_save_steps_auto_on_bad_data_is_one_line_before_anything_starts(tiny_model_dir, tmp_path):
    (tmp_path / "train.jsonl").write_text("{not json\n", encoding="utf-8")
    write_records(tmp_path / "dev.jsonl", make_records(2))
    result = run_script(LAUNCHER, env={"MODEL_PATH": str(tiny_model_dir), "TRAIN_DATA": str(tmp_path / "train.jsonl"),
                                       "OUTPUT_DIR": str(tmp_path / "out"), "SAVE_STEPS": "auto"})
    assert_clean_failure(result, f"{tmp_path / 'train.jsonl'}:1", "invalid JSON")
    assert not (tmp_path / "out").exists()
