"""tools/probe_features.py: a real linear probe of a (tiny) frozen model's hidden states."""
from __future__ import annotations

import json

from defect_judge.train.probe import DEFAULT_SHRINKAGE_GRID
from helpers import REPO_ROOT, assert_clean_failure, make_records, run_script, twin_split, write_records

SCRIPT = REPO_ROOT / "tools" / "probe_features.py"


def test_probe_scores_every_head_on_the_held_out_split(tmp_path, tiny_model_dir):
    data = twin_split(tmp_path, pairs_per_file=8)
    out = tmp_path / "probe.json"
    result = run_script(SCRIPT, "--model_path", tiny_model_dir, "--train_dataset_path", data / "train.jsonl",
                        "--test_dataset_path", data / "dev.jsonl", "--heads", "mean@0.5", "last@1.0", "mean@1,2",
                        "--c_grid", "0.01", "0.1", "1.0", "--json", out, check=True)
    table = json.loads(out.read_text(encoding="utf-8"))
    rows = table["rows"]
    assert [(r["head"], r["layers"], r["pooling"], r["probe"]) for r in rows] == [
        (head, layers, pooling, probe) for head, layers, pooling in
        (("mean@0.5", [1], "mean"), ("last@1.0", [2], "last"), ("mean@1,2", [1, 2], "mean"))
        for probe in ("logistic", "lda")]
    for row in rows:
        grid = (0.01, 0.1, 1.0) if row["probe"] == "logistic" else DEFAULT_SHRINKAGE_GRID
        assert row["parameter"] == ("C" if row["probe"] == "logistic" else "shrinkage") and row["value"] in grid
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["cv_accuracy"] <= 1 and "nested_cv_accuracy" not in row
        assert row["correct"] == round(row["accuracy"] * row["samples"]) and row["samples"] == table["held_out_samples"]
        assert row["roc_auc"] is None or 0 <= row["roc_auc"] <= 1
        assert 0 < row["p_value"] <= 1 and row["majority"] == 0.5
    assert "held-out acc" in result.stdout and "mean@1,2" in result.stdout and "test samples" not in result.stderr


def test_nested_cross_validation_scores_the_procedure_on_train_and_held_out_together(tmp_path, tiny_model_dir):
    """Each probe as training fits it (its regularisation chosen inside each training part), scored on whole pairs
    of train + held-out that it never saw; an unknown probe is one clear line."""
    data = twin_split(tmp_path, pairs_per_file=8)
    out = tmp_path / "probe.json"
    result = run_script(SCRIPT, "--model_path", tiny_model_dir, "--train_dataset_path", data / "train.jsonl",
                        "--test_dataset_path", data / "dev.jsonl", "--heads", "mean@1,2", "--probes_to_fit", "lda",
                        "--nested_cv", "2", "--nested_folds", "4", "--json", out, check=True)
    (row,) = json.loads(out.read_text(encoding="utf-8"))["rows"]
    assert row["probe"] == "lda" and 0 <= row["nested_cv_accuracy"] <= 1 and "learning_curve" not in row
    assert "nested cv acc" in result.stdout and "nested cross-validation of mean@1,2, lda probe" in result.stderr
    assert "learning curve" not in result.stdout
    wrong = run_script(SCRIPT, "--model_path", tiny_model_dir, "--train_dataset_path", data / "train.jsonl",
                       "--test_dataset_path", data / "dev.jsonl", "--probes_to_fit", "svm")
    assert_clean_failure(wrong, "probes_to_fit", "svm")
    bad_grid = run_script(SCRIPT, "--model_path", tiny_model_dir, "--train_dataset_path", data / "train.jsonl",
                          "--test_dataset_path", data / "dev.jsonl", "--probes_to_fit", "lda", "--shrinkage_grid", "2")
    assert_clean_failure(bad_grid, "--shrinkage_grid must be numbers in [0, 1], got [2.0]")


def test_train_fractions_draw_a_learning_curve_of_the_nested_cross_validation(tmp_path, tiny_model_dir):
    """Each nested training part cut to a fraction of its whole pairs: the curve's last point is the nested CV
    itself; a fraction outside (0, 1], or a curve without the nested CV, is one clear line."""
    data = twin_split(tmp_path, pairs_per_file=8)
    out = tmp_path / "probe.json"
    common = ("--model_path", tiny_model_dir, "--train_dataset_path", data / "train.jsonl", "--test_dataset_path",
              data / "dev.jsonl", "--heads", "mean@1,2", "--probes_to_fit", "lda")
    result = run_script(SCRIPT, *common, "--nested_cv", "2", "--nested_folds", "4", "--train_fractions", "0.5",
                        "--json", out, check=True)
    (row,) = json.loads(out.read_text(encoding="utf-8"))["rows"]
    half, whole = row["learning_curve"]
    assert (half["fraction"], whole["fraction"]) == (0.5, 1.0)
    assert whole["accuracy"] == row["nested_cv_accuracy"] and 0 <= half["accuracy"] <= 1
    # whole pairs are kept: half of each training part's pairs is half of its samples, give or take a pair
    assert abs(half["train_samples"] - whole["train_samples"] / 2) <= 2 and whole["train_samples"] > 8
    assert (f"learning curve, mean@1,2 lda (nested cv accuracy by training samples): {half['train_samples']:.0f} -> "
            f"{half['accuracy']:.3f}, {whole['train_samples']:.0f} -> {whole['accuracy']:.3f}") in result.stdout
    assert_clean_failure(run_script(SCRIPT, *common, "--train_fractions", "0.5"), "train_fractions", "--nested_cv")
    assert_clean_failure(run_script(SCRIPT, *common, "--nested_cv", "1", "--train_fractions", "1.5"),
                         "train_fractions", "(0, 1]")


def test_one_judgement_only_is_one_clear_line(tmp_path, tiny_model_dir):
    rows = [r for r in make_records(8) if "判断:是" in r["text"][1]["content"]]
    one_class = write_records(tmp_path / "train.jsonl", rows)
    result = run_script(SCRIPT, "--model_path", tiny_model_dir, "--train_dataset_path", one_class,
                        "--test_dataset_path", one_class)
    assert_clean_failure(result, str(one_class), "needs two judgements")
