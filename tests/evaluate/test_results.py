"""defect_judge/evaluate/results.py: the evaluation_results.json document made from hand-made sample rows (the scores,
VD-S and the decision of a scored run; a dev threshold deciding the predictions, both kept; what the model alone
would answer beside a head) and read back (schema v1 and v2 files still load, print and plot; a file that is not
one of ours, or a broken one, is one line naming the file and field).

Every expected number is worked out by hand in a comment; the code under test computes it with scikit-learn and
scipy, so these tests check the wiring."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

from defect_judge.errors import InputError
from defect_judge.evaluate.metrics import metrics
from defect_judge.evaluate.results import SCHEMA, SCHEMA_V1, SCHEMA_V2, load_results, results_document
from defect_judge.evaluate.results_folder import SUBTYPE_ACCURACY_FILE
from defect_judge.evaluate.results_table import format_results_table
from defect_judge.evaluate.thresholds import apply_threshold
from defect_judge.report.result_charts import result_charts
from helpers import HAND_MADE_PAIRS, YES_NO, assert_input_error, results_of as document, sample_row as row


@pytest.fixture(autouse=True)
def _restore_rc():
    with matplotlib.rc_context():  # use_cjk_font (the charts of a v1 file) sets rcParams; keep tests independent
        yield


def test_a_dev_threshold_decides_the_test_predictions_and_both_are_recorded():
    test = [row(f"t{i}", "空指针解引用", reference, "是" if p >= 0.5 else "否", p_yes=p)
            for i, (reference, p) in enumerate([("是", 0.9), ("是", 0.45), ("否", 0.4), ("否", 0.2)])]
    chosen = {"threshold": 0.42, "balanced_accuracy": 0.9, "samples": 10, "source": "dev/evaluation_results.json",
              "test_dataset_path": "dev.jsonl"}
    results = document(test, mode="score", threshold=chosen)
    decision = results["decision"]
    assert decision["headline"] == "threshold" and decision["threshold"] == 0.42 and decision["positive"] == "是"
    assert decision["chosen_on"]["test_dataset_path"] == "dev.jsonl"
    # argmax: 0.45 is called 否 (wrong) -> 3/4; the threshold 0.42 calls it 是 -> 4/4
    assert decision["argmax"]["correct"] == 3 and results["overall"]["correct"] == 4
    assert [s["argmax_prediction"] for s in results["samples"]] == ["是", "否", "否", "否"]
    assert [s["threshold_prediction"] for s in results["samples"]] == ["是", "是", "否", "否"]
    assert [s["prediction"] for s in results["samples"]] == ["是", "是", "否", "否"]
    assert results["overall"]["balanced_accuracy"] == 1.0 and decision["argmax"]["balanced_accuracy"] == 0.75
    assert results["roc_auc"] == 1.0 and len(results["vd_s"]) == 2  # scores are the same either way
    assert "decision: P(是) >= 0.42, chosen on dev (dev.jsonl" in format_results_table(results)
    assert apply_threshold(test, "是", "否", 0.95)[0]["prediction"] == "否"
    with pytest.raises(InputError, match="needs scored samples"):
        document([row("g", "A", "是", "是")], threshold=chosen)


# --------------------------------------------------------- schema v1 and v2

def v1_document(path: Path, model_path: str, correct: int) -> Path:
    """A results file as the v1 code wrote it: no pairs, decision, vd_s or average_precision."""
    samples = [row(f"s{i}", "空指针解引用" if i % 2 else "资源泄漏", "是" if i % 3 else "否", None) for i in range(12)]
    for sample in samples[:correct]:
        sample["prediction"], sample["correct"] = sample["reference"], True
    data = {"schema": SCHEMA_V1, "model_path": model_path, "model_kind": "lora", "test_dataset_path": "test.jsonl",
            "mode": "generate", "created": "2025-04-03T10:00:00+00:00", "settings": {}, "judgements": YES_NO,
            **metrics(samples, YES_NO), "roc_auc": None, "roc_positive": {"judgement": None, "rule": "generate"},
            "samples": samples}
    for key in ("balanced_accuracy", "mcc"):
        del data["overall"][key]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_v1_results_file_still_loads_prints_and_plots(tmp_path):
    results = load_results(v1_document(tmp_path / "v1.json", "/runs/old/checkpoint-140", 7))
    assert results["schema"] == SCHEMA_V1
    assert all(results[key] is None for key in ("pairs", "vd_s", "decision", "average_precision"))
    table = format_results_table(results)
    assert "总体 overall" in table and "pairs (PrimeVul" not in table and "balanced accuracy" not in table
    written = result_charts(tmp_path / "charts", results)
    assert [p.name for p in written] == [SUBTYPE_ACCURACY_FILE]
    (tmp_path / "not_ours.json").write_text(json.dumps({"schema": "defect-judge/evaluation-results/v9"}))
    with pytest.raises(InputError, match="not an evaluation_results.json of this toolkit"):
        load_results(tmp_path / "not_ours.json")


def test_a_v2_results_file_loads_with_what_v3_added_empty(tmp_path):
    """v2 knew pairs, VD-S and the decision but not the verdict head: those stay, the head's fields read as null and
    the verdicts as the mode's."""
    written = document(HAND_MADE_PAIRS)
    v2 = {key: value for key, value in written.items() if key not in ("verdict_source", "verdict_head", "model_alone")}
    v2["schema"] = SCHEMA_V2
    (tmp_path / "v2.json").write_text(json.dumps(v2, ensure_ascii=False), encoding="utf-8")
    results = load_results(tmp_path / "v2.json")
    assert results["verdict_head"] is None and results["model_alone"] is None and results["verdict_source"] == "generated"
    assert results["pairs"] == written["pairs"] and results["decision"] == written["decision"]
    assert written["schema"] == SCHEMA != SCHEMA_V2


# ------------------------------------------------------------------ a scored run

# Defective scores 0.9, 0.8, 0.4; clean 0.7, 0.3, 0.2, 0.1 (argmax: P(是) >= 0.5 is called 是).
SCORED = [row(f"s{i}", "空指针解引用", reference, "是" if p >= 0.5 else "否", p_yes=p)
          for i, (reference, p) in enumerate([("是", 0.9), ("是", 0.8), ("是", 0.4), ("否", 0.7), ("否", 0.3),
                                              ("否", 0.2), ("否", 0.1)])]


def test_a_scored_run_has_its_scores_vd_s_at_both_levels_and_argmax_as_its_decision():
    results = document(SCORED, mode="score", vds_fpr=0.25)
    # ROC-AUC: of the 3 x 4 (defective, clean) pairs, 0.9 and 0.8 outrank every clean score, 0.4 three of them: 11/12
    assert results["roc_auc"] == pytest.approx(11 / 12)
    # average precision: the defects come 1st, 2nd and 4th: (1/1 + 2/2 + 3/4) / 3
    assert results["average_precision"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert results["roc_positive"]["judgement"] == "是"
    assert [level["fpr_target"] for level in results["vd_s"]] == [0.005, 0.25]
    assert [level["fnr"] for level in results["vd_s"]] == pytest.approx([1 / 3, 0.0])  # 0.8 misses 0.4; 0.4 none
    assert results["decision"] == {"headline": "argmax", "positive": "是", "negative": "否", "threshold": None,
                                   "chosen_on": None}
    assert results["overall"]["correct"] == 5  # 0.4 (defective) and 0.7 (clean) are called wrong
    assert len(document(SCORED, mode="score", vds_fpr=0.005)["vd_s"]) == 1  # the same level asked twice
    # a generated answer among them: no score is read from the others
    unscored = document(SCORED + [row("g", "空指针解引用", "否", "否")], mode="score")
    assert unscored["roc_auc"] is None and unscored["vd_s"] is None and unscored["decision"]["headline"] == "answer"


def test_a_threshold_needs_two_judgements():
    assert_input_error(lambda: results_document(
        model_path="m", model_kind="lora", test_dataset_path="test.jsonl", mode="score", settings={},
        judgements=["否", "是", "不确定"], samples=SCORED, threshold={"threshold": 0.5, "source": "dev"}),
        "field 'threshold_from'", "needs scored samples (score mode) and two judgements, got score mode and 否/是/不确定")


def test_what_the_model_alone_answers_is_summed_up_beside_the_heads_verdicts():
    """A head decides; each sample also keeps what the model alone answered (score mode): its accuracy, ROC-AUC and
    how often it agrees with the head."""
    alone = [("是", 0.6), ("否", 0.3), ("否", 0.4), ("是", 0.8)]  # right, right, then both wrong
    samples = [row(f"h{i}", "空指针解引用", reference, reference, p_yes=0.5) | {
        "model_prediction": prediction, "model_probabilities": {"是": p, "否": 1 - p}}
        for i, (reference, (prediction, p)) in enumerate(zip(["是", "否", "是", "否"], alone))]
    results = document(samples, mode="score", verdict_head={"spec": "mean@0.5", "layers": [1], "pooling": "mean",
                                                            "path": "/runs/probe"})
    summary = results["model_alone"]
    assert summary["source"] == "scored" and summary["overall"]["correct"] == 2
    assert summary["agreement"] == 0.5  # the head is right everywhere, the model on two of four
    # the model alone's P(是): defective 0.6, 0.4; clean 0.3, 0.8: 2 of 4 pairs ordered
    assert summary["roc_auc"] == pytest.approx(0.5)
    assert summary["overall"]["balanced_accuracy"] == pytest.approx(0.5)
    assert document(samples[:3] + [row("x", "空指针解引用", "否", "否", p_yes=0.2)], mode="score")["model_alone"] is None


# ------------------------------------------------------------------ reading a broken file

def test_a_results_file_that_is_not_whole_is_one_line_naming_the_file_and_field(tmp_path):
    good = document(HAND_MADE_PAIRS)

    def written(name: str, change) -> Path:
        data = json.loads(json.dumps(good, ensure_ascii=False))
        change(data)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return path

    path = written("no_overall", lambda data: data.pop("overall"))
    assert_input_error(lambda: load_results(path), str(path), "field 'overall'", "required field is missing")
    path = written("samples_object", lambda data: data.update(samples={"a1": {}}))
    assert_input_error(lambda: load_results(path), str(path), "field 'samples'", "must be a list")
    path = written("lacking", lambda data: data["samples"][3].pop("reference"))
    assert_input_error(lambda: load_results(path), str(path), "sample 3", "field 'samples'",
                       "sample lacks reference")
    path = written("twice", lambda data: data["samples"].append(dict(data["samples"][0])))
    assert_input_error(lambda: load_results(path), str(path), "field 'samples'", "duplicate sample ids, e.g. 'a1'")
