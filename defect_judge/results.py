"""The ``evaluation_results.json`` schema: written by ``eval/model_evaluation.py``,
read by ``eval/plot_subtype_acc.py``. Metrics are computed here, once.

Top level::

    schema              "defect-judge/evaluation-results/v1"
    model_path, model_kind, test_dataset_path, mode ("generate"|"score"), created (ISO 8601)
    settings            the arguments that produced the run
    judgements          the judgement vocabulary, from the references (e.g. ["否", "是"])
    overall             Summary (below)
    per_subtype         {subtype: Summary}
    per_judgement       {reference judgement: Summary + precision, recall, f1}
    confusion           {reference: {prediction | "invalid": count}}
    roc_auc             float | null (score mode with two judgements)
    samples             [{id, subtype, reference, prediction (null if invalid), correct, response?, probabilities?}]

Summary: {accuracy, correct, total, ci95: [low, high] (Wilson), invalid_format, invalid_format_rate}.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from .errors import InputError
from .stats import wilson_interval

SCHEMA = "defect-judge/evaluation-results/v1"
INVALID = "invalid"
REQUIRED_KEYS = ("schema", "model_path", "mode", "overall", "per_subtype", "per_judgement", "samples")
SAMPLE_KEYS = ("id", "subtype", "reference", "prediction", "correct")


def summary(samples: Sequence[dict]) -> dict:
    total = len(samples)
    correct = sum(1 for s in samples if s["correct"])
    invalid = sum(1 for s in samples if s["prediction"] is None)
    low, high = wilson_interval(correct, total)
    return {"accuracy": correct / total if total else 0.0, "correct": correct, "total": total,
            "ci95": [low, high], "invalid_format": invalid,
            "invalid_format_rate": invalid / total if total else 0.0}


def _grouped(samples: Iterable[dict], key: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for sample in samples:
        groups[sample[key]].append(sample)
    return groups


def confusion(samples: Sequence[dict], judgements: Sequence[str]) -> dict[str, dict[str, int]]:
    table = {ref: {pred: 0 for pred in [*judgements, INVALID]} for ref in judgements}
    for sample in samples:
        table.setdefault(sample["reference"], {pred: 0 for pred in [*judgements, INVALID]})
        table[sample["reference"]][sample["prediction"] if sample["prediction"] is not None else INVALID] += 1
    return table


def precision_recall_f1(samples: Sequence[dict], judgement: str) -> dict[str, float]:
    """One-vs-rest precision/recall/F1 of a judgement; an invalid answer is a miss."""
    tp = sum(1 for s in samples if s["reference"] == judgement and s["prediction"] == judgement)
    fp = sum(1 for s in samples if s["reference"] != judgement and s["prediction"] == judgement)
    fn = sum(1 for s in samples if s["reference"] == judgement and s["prediction"] != judgement)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann–Whitney U, ties counted half); None with one class."""
    positives = [s for l, s in zip(labels, scores) if l]
    negatives = [s for l, s in zip(labels, scores) if not l]
    if not positives or not negatives:
        return None
    ranked = sorted((score, label) for label, score in zip(labels, scores))
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        average_rank = (i + j + 1) / 2
        rank_sum += average_rank * sum(1 for _, label in ranked[i:j] if label)
        i = j
    u = rank_sum - len(positives) * (len(positives) + 1) / 2
    return u / (len(positives) * len(negatives))


def metrics(samples: Sequence[dict], judgements: Sequence[str]) -> dict:
    """overall / per_subtype / per_judgement / confusion for a list of sample results."""
    by_subtype = _grouped(samples, "subtype")
    by_reference = _grouped(samples, "reference")
    return {
        "overall": summary(samples),
        "per_subtype": {name: summary(group) for name, group in sorted(by_subtype.items())},
        "per_judgement": {j: summary(by_reference.get(j, [])) | precision_recall_f1(samples, j) for j in judgements},
        "confusion": confusion(samples, judgements),
    }


def load_results(path: str | Path) -> dict:
    """Read and check an ``evaluation_results.json``; errors name the file and field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("results file not found", path=path) from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", path=path) from None
    except json.JSONDecodeError as error:
        raise InputError(f"invalid JSON: {error.msg}", path=path, line=error.lineno) from None
    if not isinstance(data, dict):
        raise InputError("not an evaluation results object", path=path)
    if data.get("schema") != SCHEMA:
        raise InputError(f"not an evaluation_results.json of this toolkit (schema {data.get('schema')!r}, "
                         f"expected {SCHEMA!r})", path=path, field="schema")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise InputError("required field is missing", path=path, field=key)
    if not isinstance(data["samples"], list):
        raise InputError("must be a list", path=path, field="samples")
    for index, sample in enumerate(data["samples"]):
        missing = [k for k in SAMPLE_KEYS if not isinstance(sample, dict) or k not in sample]
        if missing:
            raise InputError(f"sample lacks {', '.join(missing)}", path=path, sample=index, field="samples")
    ids = Counter(s["id"] for s in data["samples"])
    duplicated = [i for i, n in ids.items() if n > 1]
    if duplicated:
        raise InputError(f"duplicate sample ids, e.g. {duplicated[0]!r}", path=path, field="samples")
    return data
