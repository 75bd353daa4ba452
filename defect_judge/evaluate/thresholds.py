"""From scores to decisions: VD-S, the decision threshold chosen on dev, and applying it.

A scored sample (score mode, or the TF-IDF baseline) carries ``probabilities``; its score is the
probability of the positive (defective) judgement, ``data/labels.positive_judgement``. Everything here
is scikit-learn's ROC arithmetic (``roc_curve``, ``balanced_accuracy_score``): no curve of our own.

VD-S (PrimeVul, Ding et al., ICSE 2025): the false-negative rate at the threshold where the
false-positive rate is at most a level r (0.5% there): how many defects a judge misses when it may
raise almost no false alarm. It only means that with enough clean samples: with N of them, an FPR
of at most r allows floor(N·r) false positives, so with fewer than 1/r clean samples (200 at 0.5%)
the level is "no false positive at all", and the result says so.

The decision threshold: argmax (the most probable judgement) is a threshold of 0.5 on P(positive)
for two judgements, and a model that leans to one answer is badly served by it. A threshold chosen
on the dev split (maximising balanced accuracy, the mean of the two recalls) and applied unchanged
to test corrects the lean without looking at the test labels.
"""
from __future__ import annotations

import math
from typing import Sequence

PRIMEVUL_FPR = 0.005  # the level PrimeVul reports VD-S at
DEFAULT_VDS_FPR = 0.05  # the second, user-set level (eval/model_evaluation.py --vds_fpr)
THRESHOLD_RULE = ("maximise balanced accuracy on the dev split; among equal ones the threshold nearest 0.5 "
                  "(argmax); a sample is called defective when P(defective) >= threshold")


def positive_scores(samples: Sequence[dict], positive: str | None) -> tuple[list[int], list[float]] | None:
    """(1 for a defective reference, P(positive)) of every sample; None without scores or without a
    positive judgement."""
    if positive is None or not samples or not all(positive in (s.get("probabilities") or {}) for s in samples):
        return None
    return [int(s["reference"] == positive) for s in samples], [float(s["probabilities"][positive]) for s in samples]


def both_classes(labels: Sequence[int]) -> bool:
    return 0 < sum(labels) < len(labels)


def negatives_needed(fpr_target: float) -> int:
    """Clean samples needed before an FPR of ``fpr_target`` allows one false positive (200 at 0.5%)."""
    return math.ceil(1 / fpr_target - 1e-9)


def vd_s(labels: Sequence[int], scores: Sequence[float], fpr_target: float) -> dict:
    """The miss rate (FNR) at the lowest threshold whose false-positive rate is at most ``fpr_target``."""
    import numpy as np
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    allowed = np.flatnonzero(fpr <= fpr_target + 1e-12)  # index 0 (nothing called defective) always is
    best = int(allowed[np.argmax(tpr[allowed])])
    negatives = len(labels) - int(sum(labels))
    needed = negatives_needed(fpr_target)
    allowed_fp = math.floor(negatives * fpr_target + 1e-9)
    note = None
    if negatives < needed:
        note = (f"too few clean samples for this level ({negatives} < {needed}): it allows no false positive at "
                f"all, so this is the miss rate at zero false alarms")
    threshold = float(thresholds[best])
    return {"fpr_target": fpr_target, "fnr": float(1 - tpr[best]), "tpr": float(tpr[best]), "fpr": float(fpr[best]),
            "threshold": threshold if math.isfinite(threshold) else None, "negatives": negatives,
            "positives": int(sum(labels)), "false_positives_allowed": allowed_fp, "meaningful": negatives >= needed,
            "note": note}


def vd_s_levels(labels: Sequence[int], scores: Sequence[float], levels: Sequence[float]) -> list[dict] | None:
    """VD-S at each level (PrimeVul's 0.5% first); None with one class only."""
    if not both_classes(labels):
        return None
    return [vd_s(labels, scores, level) for level in dict.fromkeys(levels)]


def _cut(thresholds, index: int) -> float:
    """A threshold that calls defective exactly the scores >= thresholds[index] (roc_curve's, descending,
    the first infinite): halfway to the next lower score, so a test score between two dev scores is
    not decided by which of them happened to be in dev."""
    import numpy as np

    if index == 0:  # nothing called defective: just above the highest score
        return float(np.nextafter(thresholds[1], np.inf))
    if index == len(thresholds) - 1:  # everything called defective
        return float(thresholds[index])
    middle = (float(thresholds[index]) + float(thresholds[index + 1])) / 2
    return middle if middle > thresholds[index + 1] else float(thresholds[index])


def choose_threshold(labels: Sequence[int], scores: Sequence[float], default: float = 0.5) -> dict | None:
    """The threshold on P(positive) with the highest balanced accuracy on these (dev) scores; None when
    they hold one class only (no threshold can be chosen)."""
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score, roc_curve

    if not both_classes(labels):
        return None
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    balanced = (tpr + 1 - fpr) / 2
    candidates = np.flatnonzero(balanced >= balanced.max() - 1e-12)
    cuts = {int(i): _cut(thresholds, int(i)) for i in candidates}
    best = min(cuts, key=lambda i: (abs(cuts[i] - default), cuts[i]))
    threshold = cuts[best]
    called = [int(score >= threshold) for score in scores]
    return {"threshold": threshold, "rule": THRESHOLD_RULE,
            "balanced_accuracy": float(balanced_accuracy_score(labels, called)),
            "tpr": float(tpr[best]), "fpr": float(fpr[best]), "samples": len(labels),
            "positives": int(sum(labels)), "negatives": len(labels) - int(sum(labels))}


def threshold_text(threshold: float, scores: Sequence[float] = ()) -> str:
    """The threshold with as few significant digits (4 at least) as still make every one of ``scores`` fall on
    the same side as the exact value: printed, it reproduces the decisions it made (0.99997, not 1)."""
    for digits in range(4, 18):
        text = f"{threshold:.{digits}g}"
        rounded = float(text)
        if rounded == threshold or all((score >= rounded) == (score >= threshold) for score in scores):
            if rounded != 1.0 or threshold == 1.0:  # never print a threshold below 1 as 1: nothing would pass it
                return text
    return repr(threshold)


def most_probable(sample: dict) -> str:
    """The judgement with the highest probability of a scored sample (the first in sorted order on a tie)."""
    probabilities = sample["probabilities"]
    return max(sorted(probabilities), key=lambda judgement: probabilities[judgement])


def apply_threshold(samples: Sequence[dict], positive: str, negative: str, threshold: float) -> list[dict]:
    """Copies of the scored samples decided by the threshold: ``prediction``/``correct`` become the
    thresholded call, ``argmax_prediction`` keeps the most probable judgement, ``threshold_prediction``
    the thresholded one."""
    decided = []
    for sample in samples:
        call = positive if sample["probabilities"][positive] >= threshold else negative
        decided.append(sample | {"argmax_prediction": most_probable(sample), "threshold_prediction": call,
                                 "prediction": call, "correct": call == sample["reference"]})
    return decided
