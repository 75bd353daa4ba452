"""The ``evaluation_results.json`` schema: written by ``eval/model_evaluation.py``,
read by ``eval/plot_subtype_acc.py``. Metrics are computed here, once.

Top level::

    schema              "defect-judge/evaluation-results/v1"
    model_path, model_kind, test_dataset_path, mode ("generate"|"score"), created (ISO 8601)
    settings            the arguments that produced the run
    judgements          the judgement vocabulary: the references' judgements and the partner of each
                        one in a known pair (是/否, 有缺陷/无缺陷, ...; see judgement_vocabulary)
    overall             Summary (below)
    per_subtype         {subtype: Summary}
    per_judgement       {reference judgement: Summary + precision, recall, f1}
    confusion           {reference: {prediction | "invalid": count}}
    roc_auc             float | null (score mode with two judgements)
    versus_majority     {judgement, accuracy, p_value}: always answering the most common reference, and the
                        one-sided exact binomial p-value that the model beats it by chance
    samples             [{id, subtype, reference, prediction (null if invalid), correct, response?,
                          stopped? (generate mode: false when the answer hit max_new_tokens), probabilities?}]
    skipped_no_reference  ids of test records skipped for a reference without 判断: (--skip_unlabelled)

Summary: {accuracy, correct, total, ci95: [low, high] (Wilson), invalid_format, invalid_format_rate,
          truncated (answers that hit max_new_tokens), truncated_invalid (of those, the ones cut before
          a judgement: counted in invalid_format too, but a too-small limit, not a format error)}.
"""
from __future__ import annotations

import datetime
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from .errors import InputError
from .stats import binomial_p_above, wilson_interval

SCHEMA = "defect-judge/evaluation-results/v1"
RESULTS_FILE = "evaluation_results.json"
INVALID = "invalid"
REQUIRED_KEYS = ("schema", "model_path", "mode", "overall", "per_subtype", "per_judgement", "samples")
SAMPLE_KEYS = ("id", "subtype", "reference", "prediction", "correct")


def summary(samples: Sequence[dict]) -> dict:
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


# Two-word judgement vocabularies (the document's 是/否 first). When the references hold one word of
# a pair only (a one-class test set, or --limit), the other is still a well-formed answer: wrong, not invalid.
JUDGEMENT_PAIRS = (("是", "否"), ("有缺陷", "无缺陷"), ("存在缺陷", "不存在缺陷"), ("有", "无"), ("yes", "no"),
                   ("true", "false"))


def judgement_vocabulary(references: Iterable[str]) -> list[str]:
    """The judgements an answer may give: the references' values, plus the partner of each one that
    belongs to a known pair; sorted."""
    vocabulary = set(references)
    for pair in JUDGEMENT_PAIRS:
        if vocabulary & set(pair):
            vocabulary |= set(pair)
    return sorted(vocabulary)


# Judgement words that mean "the defect is present": the positive class of ROC-AUC.
POSITIVE_JUDGEMENTS = ("是", "有", "有缺陷", "存在", "存在缺陷", "存在漏洞", "有漏洞", "yes", "true", "defective", "buggy")
POSITIVE_STARTS = ("有", "是", "存在", "yes", "true", "defect", "bug", "vulnerable")
NEGATIVE_STARTS = ("无", "否", "不", "没", "非", "no", "false", "clean", "safe")


def positive_judgement(judgements: Sequence[str]) -> tuple[str | None, str]:
    """The judgement that means "defect present" for ROC-AUC, and the rule that chose it.

    Only two-class vocabularies have one. An exact known word (是, 有缺陷, yes, ...)
    wins; else the one starting like a positive word and not like a negation
    (有…, 是…, 存在…, yes…); else the lexicographically first.
    """
    if len(judgements) != 2:
        return None, "not a two-class judgement set"
    lowered = {j: j.strip().lower() for j in judgements}
    exact = [j for j in judgements if lowered[j] in POSITIVE_JUDGEMENTS]
    if len(exact) == 1:
        return exact[0], "known positive word"
    starts = [j for j in judgements
              if lowered[j].startswith(POSITIVE_STARTS) and not lowered[j].startswith(NEGATIVE_STARTS)]
    if len(starts) == 1:
        return starts[0], "starts like a positive word"
    negatives = [j for j in judgements if lowered[j].startswith(NEGATIVE_STARTS)]
    if len(negatives) == 1:
        return next(j for j in judgements if j not in negatives), "the other one is a negation"
    return sorted(judgements)[0], "lexicographically first (no rule matched)"


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


def results_document(*, model_path: str, model_kind: str, test_dataset_path: str, mode: str, settings: dict,
                     judgements: Sequence[str], samples: Sequence[dict], extra: dict | None = None) -> dict:
    """The whole ``evaluation_results.json``; ROC-AUC when every sample has probabilities and the
    vocabulary has a positive (defect) judgement."""
    positive, rule = positive_judgement(judgements)
    scored = bool(samples) and all("probabilities" in s for s in samples)
    auc = None
    if positive is not None and scored:
        auc = roc_auc([int(s["reference"] == positive) for s in samples],
                      [s["probabilities"][positive] for s in samples])
    elif not scored:
        positive, rule = None, f"{mode} mode (no probabilities)"
    return {"schema": SCHEMA, "model_path": model_path, "model_kind": model_kind, **(extra or {}),
            "test_dataset_path": test_dataset_path, "mode": mode,
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "settings": settings,
            "judgements": list(judgements), **metrics(samples, judgements), "roc_auc": auc,
            "roc_positive": {"judgement": positive, "rule": rule}, "versus_majority": versus_majority(samples),
            "samples": list(samples)}


def versus_majority(samples: Sequence[dict]) -> dict:
    """The accuracy of always answering the most common reference judgement, and the one-sided exact
    binomial p-value that the model's accuracy is above it by chance alone."""
    counts = Counter(s["reference"] for s in samples)
    if not counts:
        return {"judgement": None, "accuracy": 0.0, "p_value": 1.0}
    judgement, count = max(sorted(counts.items()), key=lambda kv: kv[1])
    share = count / len(samples)
    correct = sum(1 for s in samples if s["correct"])
    return {"judgement": judgement, "accuracy": share, "p_value": binomial_p_above(correct, len(samples), share)}


def format_results_table(results: dict) -> str:
    """The per-subtype table a script prints after an evaluation."""
    from .plotting import display_width

    def pad(text: str, width: int) -> str:
        return text + " " * max(0, width - display_width(text))

    rows = [(name, s) for name, s in results["per_subtype"].items()] + [("总体 overall", results["overall"])]
    width = max(display_width(name) for name, _ in rows) + 2
    generated = results["mode"] == "generate"  # only generated answers can be cut by max_new_tokens
    lines = [f"{results['model_path']} ({results['model_kind']}), mode {results['mode']}",
             f"{pad('subtype', width)}{'n':>5}  {'accuracy':>8}  {'95% CI':>15}  {'invalid':>7}"
             + (f"  {'truncated':>9}" if generated else "")]
    for name, s in rows:
        low, high = s["ci95"]
        lines.append(f"{pad(name, width)}{s['total']:>5}  {s['accuracy']:>8.1%}  "
                     f"{f'[{low:.1%}, {high:.1%}]':>15}  {s['invalid_format']:>7}"
                     + (f"  {s.get('truncated', 0):>9}" if generated else ""))
    lines += _footnotes(results)
    for judgement, s in results["per_judgement"].items():
        lines.append(f"reference {judgement}: accuracy {s['accuracy']:.1%} of {s['total']}, "
                     f"precision {s['precision']:.2f} recall {s['recall']:.2f} F1 {s['f1']:.2f}")
    if results["roc_auc"] is not None:
        lines.append(f"ROC-AUC ({results['roc_positive']['judgement']} = defect): {results['roc_auc']:.3f}")
    majority = results.get("versus_majority")
    if majority and majority["judgement"] is not None:
        lines.append(f"majority class (always {majority['judgement']}): {majority['accuracy']:.1%}; above it: "
                     f"one-sided exact binomial p = {majority['p_value']:.2g}")
    return "\n".join(lines)


def _footnotes(results: dict) -> list[str]:
    """What the table's counts leave unsaid: answers cut by the token limit, samples skipped."""
    lines = []
    overall = results["overall"]
    if overall.get("truncated"):
        limit = (results.get("settings") or {}).get("max_new_tokens", "max_new_tokens")
        lines.append(f"truncated: {overall['truncated']} answer(s) hit the limit of {limit} new tokens, "
                     f"{overall['truncated_invalid']} of them before a judgement (counted as invalid, though the "
                     f"limit cut them: raise --max_new_tokens)")
    skipped = results.get("skipped_no_reference") or []
    if skipped:
        lines.append(f"skipped: {len(skipped)} sample(s) whose reference has no judgement (判断:…), not counted "
                     f"above (--skip_unlabelled), e.g. {skipped[0]}")
    return lines


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
