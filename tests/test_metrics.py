"""defect_judge/evaluate/metrics.py on hand-made sample rows: accuracy, Wilson intervals, the confusion matrix,
precision / recall / F1 and ROC-AUC."""
from __future__ import annotations

import pytest

from defect_judge.evaluate.metrics import metrics, roc_auc, summary
from defect_judge.stats import wilson_interval

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
