"""eval/baseline.py: the TF-IDF + logistic-regression judge, fitted for real with scikit-learn."""
from __future__ import annotations

import json
import logging

import pytest

from defect_judge import load_script
from defect_judge.evaluate.results import load_results
from helpers import BASELINE, PLOT, assert_clean_failure, make_records, run_script, write_records

SCRIPT = BASELINE
baseline = load_script("eval/baseline.py")


def split_args(split: dict) -> list:
    return ["--train_dataset_path", split["train_file"], "--dev_dataset_path", split["dev_file"],
            "--test_dataset_path", split["test_file"]]


def test_code_tokens_keep_operators_whole():
    assert baseline.code_tokens("for (i = 0; i <= n; i++) p->x != NULL") == [
        "for", "(", "i", "=", "0", ";", "i", "<=", "n", ";", "i", "++", ")", "p", "->", "x", "!=", "NULL"]


def test_writes_a_results_file_the_plot_script_accepts(shipped_split, tmp_path):
    out = tmp_path / "baseline"
    result = run_script(SCRIPT, *split_args(shipped_split), "--output_dir", out, check=True)
    results = load_results(out / "evaluation_results.json")
    test_ids = [json.loads(line)["id"] for line in shipped_split["test_file"].read_text(encoding="utf-8").splitlines()]
    assert results["mode"] == "tfidf-logreg" and results["model_kind"] == "classical_baseline"
    assert [s["id"] for s in results["samples"]] == test_ids
    for sample in results["samples"]:
        assert sum(sample["probabilities"].values()) == pytest.approx(1.0)
        assert sample["prediction"] == max(sample["probabilities"], key=sample["probabilities"].get)
        assert sample["correct"] == (sample["prediction"] == sample["reference"])
    assert 0.0 <= results["roc_auc"] <= 1.0 and results["roc_positive"]["judgement"] == "是"
    settings = results["settings"]
    assert settings["chosen_C"] in settings["c_grid"] and settings["chosen_on"].startswith("dev split")
    best = max(settings["trials"], key=lambda t: (t["accuracy"], -t["log_loss"]))
    assert best["C"] == settings["chosen_C"]  # chosen on dev, never on test
    assert results["versus_majority"]["accuracy"] == pytest.approx(0.5)
    assert (out / "subtype_accuracy.png").is_file() and "总体 overall" in result.stdout
    # the comparison script takes it beside any other results file on the same test set
    other = tmp_path / "unigrams"
    run_script(SCRIPT, *split_args(shipped_split), "--output_dir", other, "--ngram_max", "1", check=True)
    compared = run_script(PLOT, "--results", out / "evaluation_results.json", other / "evaluation_results.json",
                          "--output_dir", tmp_path / "comparison", check=True)
    assert (tmp_path / "comparison" / "model_comparison.png").is_file(), compared.stderr


def test_labels_written_into_the_code_sound_the_leak_alarm(tmp_path, caplog):
    """A bag of words that reads the answer off the data: the alarm the README promises."""
    rows = make_records(48)
    for row in rows:  # the judgement leaks into the event as a comment
        judgement = row["text"][1]["content"][3]
        row["text"][0]["content"] = row["text"][0]["content"].replace("\n\n输出格式", f"\n/* verdict_{judgement} */\n\n输出格式")
    files = {name: write_records(tmp_path / f"{name}.jsonl", part)
             for name, part in (("train", rows[:32]), ("dev", rows[32:40]), ("test", rows[40:]))}
    caplog.set_level(logging.WARNING)
    baseline.main(["--train_dataset_path", str(files["train"]), "--dev_dataset_path", str(files["dev"]),
                   "--test_dataset_path", str(files["test"]), "--output_dir", str(tmp_path / "out")])
    assert load_results(tmp_path / "out" / "evaluation_results.json")["overall"]["accuracy"] == 1.0
    assert "may give the answer away" in caplog.text


def test_without_a_dev_split_c_is_chosen_by_cross_validation_over_whole_pairs(shipped_split, tmp_path):
    """The shipped data are twins: a fold that held out a sample while fitting its twin (the same code,
    the other label) would score far below chance (0.15-0.18 measured); folds keep pairs whole."""
    run_script(SCRIPT, "--train_dataset_path", shipped_split["train_file"], "--dev_dataset_path", "",
               "--test_dataset_path", shipped_split["test_file"], "--output_dir", tmp_path, check=True)
    settings = load_results(tmp_path / "evaluation_results.json")["settings"]
    assert settings["chosen_on"] == "5-fold cross-validation on train"
    assert max(t["accuracy"] for t in settings["trials"]) > 0.5


def test_bad_inputs_are_one_clear_line(shipped_split, tmp_path):
    missing_dev = run_script(SCRIPT, "--train_dataset_path", shipped_split["train_file"], "--dev_dataset_path",
                             tmp_path / "dev.jsonl", "--test_dataset_path", shipped_split["test_file"],
                             "--output_dir", tmp_path / "out")
    assert_clean_failure(missing_dev, str(tmp_path / "dev.jsonl"), "dev split not found", '--dev_dataset_path ""')
    rows = make_records(4)
    rows[2]["text"][1]["content"] = "没有判断的回答"
    no_judgement = write_records(tmp_path / "test.jsonl", rows)
    bad = run_script(SCRIPT, "--train_dataset_path", shipped_split["train_file"], "--dev_dataset_path", "",
                     "--test_dataset_path", no_judgement, "--output_dir", tmp_path / "out")
    assert_clean_failure(bad, str(no_judgement), f"sample {rows[2]['id']}", "field 'text'", "no judgement")
    assert not (tmp_path / "out").exists()
    assert run_script(SCRIPT, "--help", check=True).stdout.count("--c_grid") >= 1


def test_twin_pairs_scores_and_charts(tmp_path):
    """The baseline's probabilities give ROC-AUC, VD-S and roc_curve.png; twin pairs in the test split give
    pair outcomes and pair_outcomes.png (the schema and charts of eval/model_evaluation.py)."""
    rows = make_records(48)
    test = [r | {"pair_id": f"twin-{i // 2}"} for i, r in enumerate(rows[40:])]  # (是, 否) of one subtype in turn
    files = {name: write_records(tmp_path / f"{name}.jsonl", part)
             for name, part in (("train", rows[:32]), ("dev", rows[32:40]), ("test", test))}
    baseline.main(["--train_dataset_path", str(files["train"]), "--dev_dataset_path", str(files["dev"]),
                   "--test_dataset_path", str(files["test"]), "--output_dir", str(tmp_path / "out"),
                   "--vds_fpr", "0.25"])
    results = load_results(tmp_path / "out" / "evaluation_results.json")
    assert [s["pair_id"] for s in results["samples"]] == [r["pair_id"] for r in test]
    assert results["pairs"]["overall"]["pairs"] == 4 and set(results["pairs"]["outcomes"]) == {
        "twin-0", "twin-1", "twin-2", "twin-3"}
    assert [level["fpr_target"] for level in results["vd_s"]] == [0.005, 0.25]
    assert results["decision"]["headline"] == "argmax" and results["overall"]["mcc"] is not None
    for chart in ("subtype_accuracy.png", "pair_outcomes.png", "roc_curve.png"):
        assert (tmp_path / "out" / chart).is_file(), chart


def leaky_split(tmp_path, dev_judgements=("是", "否")) -> dict:
    """Train/dev/test whose events carry their judgement as a comment: C is chosen on a clean signal."""
    rows = make_records(56)
    for i, row in enumerate(rows):  # a row number too: every event distinct, so cross-validation folds are fair
        judgement = row["text"][1]["content"][3]
        row["text"][0]["content"] = row["text"][0]["content"].replace(
            "\n\n输出格式", f"\n/* verdict_{judgement} row {i} */\n\n输出格式")
    dev = [r for r in rows[32:48] if r["text"][1]["content"][3] in dev_judgements]
    tmp_path.mkdir(parents=True, exist_ok=True)
    return {name: write_records(tmp_path / f"{name}.jsonl", part)
            for name, part in (("train", rows[:32]), ("dev", dev), ("test", rows[48:]))}


def test_a_dev_split_of_one_judgement_is_warned_about(tmp_path):
    """Its accuracy rewards the C that predicts that judgement most often: the run used to be silent."""
    files = leaky_split(tmp_path, dev_judgements=("是",))
    result = run_script(SCRIPT, "--train_dataset_path", files["train"], "--dev_dataset_path", files["dev"],
                        "--test_dataset_path", files["test"], "--output_dir", tmp_path / "out", check=True)
    assert (f"dev split {files['dev']} holds a single judgement (是, all 8 samples): its accuracy rewards the C "
            "that predicts 是 most often") in result.stderr
    assert '--dev_dataset_path "" to choose C by cross-validation' in result.stderr
    both = run_script(SCRIPT, "--train_dataset_path", files["train"], "--dev_dataset_path",
                      leaky_split(tmp_path / "both")["dev"], "--test_dataset_path", files["test"],
                      "--output_dir", tmp_path / "out2", check=True)
    assert "single judgement" not in both.stderr


def test_a_c_on_the_edge_of_its_grid_is_warned_about_on_dev_and_in_cross_validation(tmp_path):
    """Labels in the code: every C is right on dev, and the weakest regularisation has the lowest log-loss, so
    the largest C wins; the best may lie beyond the grid, and the run used to be silent about it."""
    files = leaky_split(tmp_path)
    common = ["--train_dataset_path", files["train"], "--test_dataset_path", files["test"]]
    on_dev = run_script(SCRIPT, *common, "--dev_dataset_path", files["dev"], "--output_dir", tmp_path / "dev",
                        "--c_grid", "0.1", "1", "10", check=True)
    assert load_results(tmp_path / "dev" / "evaluation_results.json")["settings"]["chosen_C"] == 10
    assert (f"the chosen C=10 is the largest value of --c_grid [0.1, 1, 10] (chosen on dev split {files['dev']}): "
            "the best C may lie beyond the grid; extend it past 10 and rerun (e.g. --c_grid 0.1 1 10 100)"
            ) in on_dev.stderr
    by_cv = run_script(SCRIPT, *common, "--dev_dataset_path", "", "--output_dir", tmp_path / "cv",
                       "--c_grid", "0.1", "1", "10", check=True)
    assert "is the largest value of --c_grid [0.1, 1, 10] (chosen on 5-fold cross-validation on train)" in by_cv.stderr
    alone = run_script(SCRIPT, *common, "--dev_dataset_path", files["dev"], "--output_dir", tmp_path / "one",
                       "--c_grid", "10", check=True)  # one value: nothing was chosen, nothing to warn about
    assert "value of --c_grid" not in alone.stderr
