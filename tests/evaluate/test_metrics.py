"""defect_judge/evaluate/metrics.py on hand-made sample rows: accuracy, Wilson intervals, the confusion matrix,
precision / recall / F1, ROC-AUC, and balanced accuracy and MCC with an invalid answer counted as wrong."""
from __future__ import annotations

import pytest

from defect_judge.evaluate.metrics import (class_scores, decision_accuracy, logit_scores, metrics, roc_auc, summary,
                                          verdict_scores)
from defect_judge.stats import wilson_interval
from helpers import sample_row as row

YES_NO = ["否", "是"]


def sample(i, subtype, reference, prediction, p_yes=None):
    row = {"id": str(i), "subtype": subtype, "reference": reference, "prediction": prediction,
           "correct": prediction == reference}
    if p_yes is not None:
        row["probabilities"] = {"是": p_yes, "否": 1 - p_yes}
    return row


def test_metrics_per_subtype_judgement_confusion_and_f1():
    rows = [sample(0, "空指针解引用", "是", "是"), sample(1, "空指针解引用", "是", "否"),
            sample(2, "空指针解引用", "否", "否"), sample(3, "内存泄漏", "否", None),
            sample(4, "内存泄漏", "是", "是"), sample(5, "内存泄漏", "否", "是")]
    result = metrics(rows, YES_NO)
    assert result["overall"]["correct"] == 3 and result["overall"]["total"] == 6
    assert result["overall"]["accuracy"] == 0.5
    assert result["overall"]["invalid_format"] == 1
    assert result["overall"]["invalid_format_rate"] == pytest.approx(1 / 6)
    assert result["overall"]["ci95"] == pytest.approx(list(wilson_interval(3, 6)))
    assert result["per_subtype"]["空指针解引用"]["accuracy"] == pytest.approx(2 / 3)
    assert result["per_subtype"]["内存泄漏"]["accuracy"] == pytest.approx(1 / 3)
    assert result["confusion"] == {"否": {"否": 1, "是": 1, "invalid": 1}, "是": {"否": 1, "是": 2, "invalid": 0}}
    yes = result["per_judgement"]["是"]  # tp 2, fp 1, fn 1
    assert (yes["precision"], yes["recall"], yes["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    no = result["per_judgement"]["否"]  # tp 1, fp 1, fn 2 (the invalid answer is a miss)
    assert (no["precision"], no["recall"]) == pytest.approx((0.5, 1 / 3))
    assert no["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert summary([])["total"] == 0


def test_roc_auc():
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs won 3 of 4
    assert roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 1], [0.2, 0.3]) is None


# ------------------------------------------------------------- a verdict's scores from (labels, scores)

def test_a_verdict_s_probabilities_are_scored_at_one_half():
    import math

    scores = verdict_scores([1, 0, 1, 0], [0.9, 0.5, 0.4, 0.1])  # 0.5 calls defective: 2 of 4 right
    assert scores["accuracy"] == 0.5 and scores["samples"] == 4 and scores["roc_auc"] == pytest.approx(0.75)
    assert scores["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.5) + math.log(0.4) + math.log(0.9)) / 4)
    assert verdict_scores([1, 1], [0.7, 0.2])["roc_auc"] is None
    assert verdict_scores([], []) == {"accuracy": None, "roc_auc": None, "log_loss": None, "samples": 0}


def test_a_head_s_logits_are_scored_as_its_probabilities_would_be_without_rounding():
    import math

    labels, logits = [1.0, 0.0, 1.0, 0.0], [2.0, 0.0, -1.0, -3.0]
    scores = logit_scores(labels, logits)
    probabilities = [1 / (1 + math.exp(-x)) for x in logits]
    assert scores["accuracy"] == decision_accuracy(labels, probabilities) == 0.5
    assert scores["roc_auc"] == roc_auc(labels, probabilities) == pytest.approx(0.75)
    assert scores["log_loss"] == pytest.approx(verdict_scores([1, 0, 1, 0], probabilities)["log_loss"])
    assert scores["samples"] == 4 and 0 < scores["threshold"] < 1 and scores["threshold_balanced_accuracy"] == 0.75
    # 80 and 75 both round to P = 1 in float64: the logits keep them apart, and the loss finite
    extreme = logit_scores([1.0, 0.0], [80.0, 75.0])
    assert extreme["roc_auc"] == 1.0 and extreme["log_loss"] == pytest.approx(75 / 2)
    assert logit_scores([1.0], [1.0])["threshold"] is None and logit_scores([], [])["samples"] == 0


def test_class_probabilities_are_scored_by_their_most_probable_class():
    import math

    scores = class_scores(["否", "是", "是"], [[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]], ["否", "是"])
    assert scores["accuracy"] == pytest.approx(2 / 3)  # a tie goes to the first class: 否, wrong
    assert scores["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.5) + math.log(0.9)) / 3)


# ------------------------------------------------------------- balanced accuracy and MCC

def test_balanced_accuracy_and_mcc_count_an_invalid_answer_as_wrong():
    rows = [row("1", "A", "是", "是"), row("2", "A", "是", "是"), row("3", "A", "是", "否"), row("4", "A", "否", "否"),
            row("5", "A", "否", "否"), row("6", "A", "否", None), row("7", "A", "否", "是")]
    overall = metrics(rows, YES_NO)["overall"]
    # the invalid answer on a 否 sample counts as 是: TP 2, FN 1, TN 2, FP 2
    # balanced accuracy = (2/3 + 2/4) / 2; MCC = (2*2 - 2*1) / sqrt(4 * 3 * 4 * 3) = 2 / 12
    assert overall["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert overall["mcc"] == pytest.approx(1 / 6)
    assert metrics([], YES_NO)["overall"]["mcc"] is None
