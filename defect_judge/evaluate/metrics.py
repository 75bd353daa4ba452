"""The metrics of evaluation results, computed here once: accuracy with Wilson intervals, the confusion matrix,
precision / recall / F1, ROC-AUC, average precision, balanced accuracy and MCC, and the majority class beside them.

A sample is a row of ``evaluation_results.json``'s ``samples`` (``results.py`` documents the schema):
``reference``, ``prediction`` (None: an invalid answer), ``correct``; ``stopped`` for a generated answer.

The scores of a verdict from (labels, scores) are computed here too, for every stage that reports them: a
probability of defective (the linear probe, ``verdict_scores``), a verdict head's logits (its dev evaluation during
training, ``logit_scores``) and a classifier's class probabilities (the baseline's choice of C, ``class_scores``).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from defect_judge.data.labels import majority_class
from defect_judge.evaluate.thresholds import both_classes, choose_threshold
from defect_judge.stats import binomial_p_above, wilson_interval

INVALID = "invalid"


def summary(samples: Sequence[dict]) -> dict:
    """Accuracy (an invalid answer is a wrong one) with its Wilson interval, and the invalid and truncated
    answers: how answers are counted, by the evaluation and its benchmark alike."""
    total = len(samples)
    correct = sum(1 for s in samples if s["correct"])
    invalid = sum(1 for s in samples if s["prediction"] is None)
    # ``stopped`` is false only for a generated answer cut by max_new_tokens (score mode has none).
    truncated = [s for s in samples if s.get("stopped") is False]
    low, high = wilson_interval(correct, total)
    return {"accuracy": correct / total if total else 0.0, "correct": correct, "total": total,
            "ci95": [low, high], "invalid_format": invalid,
            "invalid_format_rate": invalid / total if total else 0.0, "truncated": len(truncated),
            "truncated_invalid": sum(1 for s in truncated if s["prediction"] is None)}


def _grouped(samples: Iterable[dict], key: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for sample in samples:
        groups[sample[key]].append(sample)
    return groups


def _answer(sample: dict) -> str:
    """The prediction as a class label: an invalid answer is its own column, ``invalid``."""
    return sample["prediction"] if sample["prediction"] is not None else INVALID


def confusion(samples: Sequence[dict], judgements: Sequence[str]) -> dict[str, dict[str, int]]:
    """{reference: {prediction | "invalid": count}} (scikit-learn's confusion_matrix), a row for every
    judgement of the vocabulary and for any other reference seen."""
    from sklearn.metrics import confusion_matrix

    columns = [*judgements, INVALID]
    rows = list(dict.fromkeys([*judgements, *(s["reference"] for s in samples)]))
    if not samples:
        return {ref: dict.fromkeys(columns, 0) for ref in rows}
    labels = list(dict.fromkeys([*rows, *columns]))
    matrix = confusion_matrix([s["reference"] for s in samples], [_answer(s) for s in samples], labels=labels)
    return {ref: {pred: int(matrix[labels.index(ref), labels.index(pred)]) for pred in columns} for ref in rows}


def all_invalid(samples: Sequence[dict]) -> bool:
    """Every answer failed the format: metrics that compare valid answers have nothing to compare."""
    return bool(samples) and all(s["prediction"] is None for s in samples)


def precision_recall_f1(samples: Sequence[dict], judgements: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """One-vs-rest precision/recall/F1 of each judgement (scikit-learn's precision_recall_fscore_support);
    an invalid answer is a miss; 0 where a ratio has nothing to divide by; null when every answer is invalid."""
    from sklearn.metrics import precision_recall_fscore_support

    if all_invalid(samples):
        return {j: {"precision": None, "recall": None, "f1": None} for j in judgements}
    if not samples or not judgements:
        return {j: {"precision": 0.0, "recall": 0.0, "f1": 0.0} for j in judgements}
    precision, recall, f1, _ = precision_recall_fscore_support(
        [s["reference"] for s in samples], [_answer(s) for s in samples], labels=list(judgements), average=None,
        zero_division=0)
    return {j: {"precision": float(p), "recall": float(r), "f1": float(f)}
            for j, p, r, f in zip(judgements, precision, recall, f1)}


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (scikit-learn's roc_auc_score; ties count half); None with one class."""
    from sklearn.metrics import roc_auc_score

    if not both_classes(labels):
        return None
    return float(roc_auc_score(labels, scores))


def decision_accuracy(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> float | None:
    """The share of samples called right, a score at or above ``threshold`` calling a sample defective (label 1);
    None without samples."""
    import numpy as np

    labels, scores = np.asarray(labels), np.asarray(scores)
    return float(((scores >= threshold) == (labels > 0.5)).mean()) if len(labels) else None


def verdict_scores(labels: Sequence[int], probabilities: Sequence[float]) -> dict:
    """P(defective) against the labels (1: defective): accuracy at 0.5, ROC-AUC (None with one class), log loss
    (scikit-learn's), the number of samples; accuracy and log loss None without samples."""
    import numpy as np
    from sklearn.metrics import log_loss

    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    return {"accuracy": decision_accuracy(labels, probabilities),
            "roc_auc": roc_auc(labels, probabilities),
            "log_loss": float(log_loss(labels, probabilities, labels=[0, 1])) if len(labels) else None,
            "samples": int(len(labels))}


def logit_scores(labels: Sequence[float], logits: Sequence[float]) -> dict:
    """A verdict head's logits (P(defective) = sigmoid(logit)) against the labels (1: defective): accuracy (logit
    >= 0), ROC-AUC on the logits (sigmoid would merge the extreme ones; None with one class), the mean binary
    cross-entropy from the logits (exact where P would round to 0 or 1), the number of samples, and the threshold
    on P(defective) with the highest balanced accuracy (``choose_threshold``; None with one class)."""
    import torch
    import torch.nn.functional as F

    if not len(labels):
        return {"accuracy": None, "roc_auc": None, "log_loss": None, "samples": 0, "threshold": None,
                "threshold_balanced_accuracy": None}
    logit_values = torch.tensor(logits, dtype=torch.float64)
    label_values = torch.tensor(labels, dtype=torch.float64)
    chosen = choose_threshold([int(y) for y in labels], torch.sigmoid(logit_values).tolist())
    return {"accuracy": decision_accuracy(labels, logits, threshold=0.0),
            "roc_auc": roc_auc(labels, logits),
            "log_loss": float(F.binary_cross_entropy_with_logits(logit_values, label_values)),
            "samples": len(labels),
            "threshold": chosen["threshold"] if chosen else None,
            "threshold_balanced_accuracy": chosen["balanced_accuracy"] if chosen else None}


def class_scores(truth: Sequence[str], probabilities, classes: Sequence[str]) -> dict:
    """A classifier's class probabilities (a row a sample, a column a class of ``classes``) against the true
    classes: the accuracy of the most probable class (the first on a tie) and the log loss (scikit-learn's)."""
    import numpy as np
    from sklearn.metrics import accuracy_score, log_loss

    predicted = [classes[i] for i in np.argmax(probabilities, axis=1)]
    return {"accuracy": float(accuracy_score(truth, predicted)),
            "log_loss": float(log_loss(truth, probabilities, labels=classes))}


def average_precision(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the precision-recall curve (scikit-learn's average_precision_score); None with one class."""
    from sklearn.metrics import average_precision_score

    if not both_classes(labels):
        return None
    return float(average_precision_score(labels, scores))


def decided_labels(samples: Sequence[dict], judgements: Sequence[str]) -> list[str]:
    """Each prediction as a class for balanced accuracy and MCC. An invalid answer counts as wrong: with
    two judgements it becomes the other one (so MCC stays the two-class one); otherwise its own class."""
    if len(judgements) != 2:
        return [_answer(s) for s in samples]
    other = {judgements[0]: judgements[1], judgements[1]: judgements[0]}
    return [s["prediction"] if s["prediction"] is not None else other.get(s["reference"], INVALID) for s in samples]


def class_balanced_scores(samples: Sequence[dict], judgements: Sequence[str]) -> dict[str, float | None]:
    """Balanced accuracy (the mean recall over the references' judgements) and Matthews' correlation
    coefficient, both scikit-learn's; null without samples, and when every answer is invalid (the
    counting rule alone would give 0 and -1)."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef

    if not samples or all_invalid(samples):
        return {"balanced_accuracy": None, "mcc": None}
    truth, decided = [s["reference"] for s in samples], decided_labels(samples, judgements)
    with warnings.catch_warnings():  # a one-class test set: sklearn warns, the values are still defined
        warnings.simplefilter("ignore")
        return {"balanced_accuracy": float(balanced_accuracy_score(truth, decided)),
                "mcc": float(matthews_corrcoef(truth, decided))}


def metrics(samples: Sequence[dict], judgements: Sequence[str]) -> dict:
    """overall / per_subtype / per_judgement / confusion for a list of sample results."""
    by_subtype = _grouped(samples, "subtype")
    by_reference = _grouped(samples, "reference")
    scores = precision_recall_f1(samples, judgements)
    return {
        "overall": summary(samples) | class_balanced_scores(samples, judgements),
        "per_subtype": {name: summary(group) for name, group in sorted(by_subtype.items())},
        "per_judgement": {j: summary(by_reference.get(j, [])) | scores[j] for j in judgements},
        "confusion": confusion(samples, judgements),
    }


def versus_majority(samples: Sequence[dict]) -> dict:
    """The accuracy of always answering the most common reference judgement, and the one-sided exact
    binomial p-value that the model's accuracy is above it by chance alone."""
    judgement, share = majority_class(s["reference"] for s in samples)
    if judgement is None:
        return {"judgement": None, "accuracy": 0.0, "p_value": 1.0}
    correct = sum(1 for s in samples if s["correct"])
    return {"judgement": judgement, "accuracy": share, "p_value": binomial_p_above(correct, len(samples), share)}
