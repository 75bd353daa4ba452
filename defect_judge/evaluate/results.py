"""The ``evaluation_results.json`` schema: written by ``eval/model_evaluation.py``,
read by ``eval/plot_subtype_acc.py``. Metrics are computed here, once.

Top level::

    schema              "defect-judge/evaluation-results/v3" (v1 and v2 files still load: see load_results)
    model_path, test_dataset_path, mode ("generate"|"score"), created (ISO 8601)
    model_kind          base_model | full_model | lora_adapter (model_paths.py), after "output_dir/" when
                        model_path is a training OUTPUT_DIR; classical_baseline for eval/baseline.py
    settings            the arguments that produced the run
    judgements          the judgement vocabulary: the references' judgements and the partner of each
                        one in a known pair (是/否, 有缺陷/无缺陷, ...; see judgement_vocabulary)
    overall             Summary (below)
    per_subtype         {subtype: Summary}
    per_judgement       {reference judgement: Summary + precision, recall, f1}
    confusion           {reference: {prediction | "invalid": count}}
    roc_auc             float | null (score mode with two judgements)
    average_precision   float | null (the area under the precision-recall curve; same condition)
    vd_s                [VD-S at PrimeVul's FPR 0.5%, then at settings.vds_fpr] | null (scored runs):
                        {fpr_target, fnr, tpr, fpr, threshold, negatives, positives,
                         false_positives_allowed, meaningful, note} (defect_judge/evaluate/thresholds.py)
    decision            {headline: "answer" (generate) | "argmax" | "threshold", positive, negative,
                         threshold: float | null, chosen_on: {source, test_dataset_path, samples,
                         balanced_accuracy, ...} | null, argmax: Summary of the argmax predictions (only
                         when the threshold is the headline)}: which predictions ``overall`` counts
    pairs               null (no sample has a pair_id) | {positive, negative, invalid_rule, overall: PairSummary,
                         per_subtype: {subtype: PairSummary}, unpaired: {samples, without_pair_id,
                         in_incomplete_groups, incomplete_groups, example_incomplete}, outcomes: {pair_id:
                         "P-C" | "P-V" | "P-B" | "P-R"}} (defect_judge/evaluate/pairs.py)
    versus_majority     {judgement, accuracy, p_value}: always answering the most common reference, and the
                        one-sided exact binomial p-value that the model beats it by chance
    verdict_source      where the verdicts come from: generated | scored | head | classical (verdicts.py)
    verdict_head        null | {path, weights_sha256, spec, layers, pooling, positive, negative, fit}: the head
                        that decided (verdict_head.py)
    model_alone         null | {source, overall: Summary, roc_auc, agreement, versus_majority}: what the model
                        would have answered without the head, where that was cheap to keep (score mode), and
                        the share of samples where it agrees with the headline verdict
    samples             [{id, subtype, pair_id?, reference, prediction (null if invalid), correct, verdict_source,
                          response?, stopped? (generate mode: false when the answer hit max_new_tokens),
                          probabilities?, argmax_prediction?, threshold_prediction? (both when a dev threshold
                          decides), model_prediction?, model_probabilities? (the model alone, with a head)}]
    skipped_no_reference  ids of test records skipped for a reference without 判断: (--skip_unlabelled)

Summary: {accuracy, correct, total, ci95: [low, high] (Wilson), invalid_format, invalid_format_rate,
          truncated (answers that hit max_new_tokens), truncated_invalid (of those, the ones cut before
          a judgement: counted in invalid_format too, but a too-small limit, not a format error)};
          ``overall`` adds balanced_accuracy and mcc (an invalid answer counts as wrong).
PairSummary: {pairs, with_invalid, P-C/P-V/P-B/P-R: {count, share, ci95}}.

v1 → v2: samples carry ``pair_id``; new ``pairs``, ``vd_s``, ``decision`` and ``average_precision``;
``overall`` has balanced_accuracy and mcc; the metrics come from scikit-learn and scipy instead of the
toolkit's own formulas (same values). v2 → v3: ``verdict_source``, ``verdict_head`` and ``model_alone``;
samples carry their ``verdict_source``. An older file loads with what it could not know filled in
(``verdict_source`` from its mode, the rest null), so old results still print and plot.
"""
from __future__ import annotations

import datetime
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from defect_judge.evaluate.thresholds import (DEFAULT_VDS_FPR, PRIMEVUL_FPR, apply_threshold, both_classes, positive_scores,
                        most_probable, threshold_text, vd_s_levels)
from defect_judge.errors import InputError
from defect_judge.fileio import read_json_object
from defect_judge.evaluate.pairs import has_pairs, pair_results
from defect_judge.stats import binomial_p_above, wilson_interval
from defect_judge.evaluate.verdicts import HEAD, MECHANISMS, SCORED, source_of_results

SCHEMA = "defect-judge/evaluation-results/v3"
SCHEMA_V1 = "defect-judge/evaluation-results/v1"
SCHEMA_V2 = "defect-judge/evaluation-results/v2"
READABLE_SCHEMAS = (SCHEMA_V1, SCHEMA_V2, SCHEMA)
# Keys v2 and v3 added; an older file is read with them null, so every reader can ask for them.
V2_KEYS = ("pairs", "vd_s", "decision", "average_precision")
V3_KEYS = ("verdict_head", "model_alone")
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
    scores = precision_recall_f1(samples, judgements)
    return {
        "overall": summary(samples) | class_balanced_scores(samples, judgements),
        "per_subtype": {name: summary(group) for name, group in sorted(by_subtype.items())},
        "per_judgement": {j: summary(by_reference.get(j, [])) | scores[j] for j in judgements},
        "confusion": confusion(samples, judgements),
    }


def two_classes(judgements: Sequence[str]) -> tuple[str, str] | None:
    """(defective, clean) judgements of a two-judgement vocabulary; None otherwise."""
    positive, _ = positive_judgement(judgements)
    if positive is None:
        return None
    return positive, next(j for j in judgements if j != positive)


def results_document(*, model_path: str, model_kind: str, test_dataset_path: str, mode: str, settings: dict,
                     judgements: Sequence[str], samples: Sequence[dict], extra: dict | None = None,
                     threshold: dict | None = None, vds_fpr: float = DEFAULT_VDS_FPR,
                     verdict_source: str | None = None, verdict_head: dict | None = None) -> dict:
    """The whole ``evaluation_results.json``. With per-sample probabilities and a positive (defect)
    judgement: ROC-AUC, average precision and VD-S (at PrimeVul's 0.5% and at ``vds_fpr``).
    ``threshold`` (``decisions.choose_threshold`` on dev, plus where it came from) decides the
    predictions instead of argmax. With pair_ids: the pair outcomes of the headline predictions.
    ``verdict_source`` (verdicts.py): by default the head's with a ``verdict_head``, else the mode's."""
    verdict_source = verdict_source or source_of_results({"mode": mode, "model_kind": model_kind,
                                                          "verdict_source": HEAD if verdict_head else None})
    classes = two_classes(judgements)
    positive, rule = positive_judgement(judgements)
    scored = bool(samples) and all("probabilities" in s for s in samples)
    if not scored:
        positive, rule = None, f"{mode} mode (no probabilities)"
    decision = {"headline": "argmax" if scored else "answer", "positive": classes[0] if classes else None,
                "negative": classes[1] if classes else None, "threshold": None, "chosen_on": None}
    if threshold is not None:
        if not scored or classes is None:
            raise InputError("a decision threshold needs scored samples (score mode) and two judgements, got "
                             f"{mode} mode and {'/'.join(judgements)}", field="threshold_from")
        argmax = metrics([decided_by(s, most_probable(s)) for s in samples], judgements)["overall"]
        samples = apply_threshold(samples, *classes, threshold["threshold"])
        decision |= {"headline": "threshold", "threshold": threshold["threshold"],
                     "chosen_on": {k: v for k, v in threshold.items() if k != "threshold"}, "argmax": argmax}
    scores = positive_scores(samples, positive)
    labels, values = scores if scores else ([], [])
    return {"schema": SCHEMA, "model_path": model_path, "model_kind": model_kind, **(extra or {}),
            "test_dataset_path": test_dataset_path, "mode": mode,
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "settings": settings,
            "judgements": list(judgements), **metrics(samples, judgements),
            "roc_auc": roc_auc(labels, values) if scores else None,
            "average_precision": average_precision(labels, values) if scores else None,
            "vd_s": vd_s_levels(labels, values, [PRIMEVUL_FPR, vds_fpr]) if scores else None,
            "roc_positive": {"judgement": positive, "rule": rule}, "decision": decision,
            "pairs": pair_results(samples, *classes) if classes and has_pairs(samples) else None,
            "versus_majority": versus_majority(samples), "verdict_source": verdict_source,
            "verdict_head": verdict_head, "model_alone": model_alone(samples, judgements, classes),
            "samples": list(samples)}


def decided_by(sample: dict, prediction: str | None) -> dict:
    """The sample with another prediction (and its correctness)."""
    return sample | {"prediction": prediction, "correct": prediction == sample["reference"]}


def model_alone(samples: Sequence[dict], judgements: Sequence[str], classes: tuple[str, str] | None) -> dict | None:
    """What the model would have answered without the verdict head (the samples' ``model_prediction``), its
    accuracy and ROC-AUC, and how often it agrees with the headline verdict; None when not kept."""
    if not samples or not all("model_prediction" in s for s in samples):
        return None
    alone = [decided_by(s, s["model_prediction"]) | {"probabilities": s.get("model_probabilities") or {}}
             for s in samples]
    scores = positive_scores(alone, classes[0]) if classes else None
    return {"source": SCORED, "overall": summary(alone) | class_balanced_scores(alone, judgements),
            "roc_auc": roc_auc(*scores) if scores else None,
            "agreement": sum(s["prediction"] == s["model_prediction"] for s in samples) / len(samples),
            "versus_majority": versus_majority(alone)}


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
    from defect_judge.report.accuracy_bars import display_width

    def pad(text: str, width: int) -> str:
        return text + " " * max(0, width - display_width(text))

    rows = [(name, s) for name, s in results["per_subtype"].items()] + [("总体 overall", results["overall"])]
    width = max(display_width(name) for name, _ in rows) + 2
    generated = results["mode"] == "generate"  # only generated answers can be cut by max_new_tokens
    failed = ([f"the model failed the answer format: all {len(results['samples'])} answers are invalid (no "
               f"判断:{'/'.join(results['judgements'])}), so it judged nothing"] if all_invalid(results["samples"]) else [])
    lines = [*failed, f"{results['model_path']} ({results['model_kind']}), mode {results['mode']}",
             f"{pad('subtype', width)}{'n':>5}  {'accuracy':>8}  {'95% CI':>15}  {'invalid':>7}"
             + (f"  {'truncated':>9}" if generated else "")]
    for name, s in rows:
        low, high = s["ci95"]
        lines.append(f"{pad(name, width)}{s['total']:>5}  {s['accuracy']:>8.1%}  "
                     f"{f'[{low:.1%}, {high:.1%}]':>15}  {s['invalid_format']:>7}"
                     + (f"  {s.get('truncated', 0):>9}" if generated else ""))
    lines += _footnotes(results)
    for judgement, s in results["per_judgement"].items():
        if not s["total"]:
            lines.append(f"reference {judgement}: no test sample has it (a well-formed answer the model may give)")
        elif s.get("precision") is None:
            lines.append(f"reference {judgement}: accuracy {s['accuracy']:.1%} of {s['total']}, precision / recall / "
                         f"F1 {NOT_APPLICABLE}")
        else:
            lines.append(f"reference {judgement}: accuracy {s['accuracy']:.1%} of {s['total']}, "
                         f"precision {s['precision']:.2f} recall {s['recall']:.2f} F1 {s['f1']:.2f}")
    overall = results["overall"]
    if overall.get("balanced_accuracy") is not None:
        lines.append(f"balanced accuracy {overall['balanced_accuracy']:.1%}, MCC {overall['mcc']:.3f}")
    elif all_invalid(results["samples"]):
        lines.append(f"balanced accuracy, MCC: {NOT_APPLICABLE}")
    if results["roc_auc"] is not None:
        average = results.get("average_precision")
        lines.append(f"ROC-AUC ({results['roc_positive']['judgement']} = defect): {results['roc_auc']:.3f}"
                     + (f", average precision {average:.3f}" if average is not None else ""))
    lines += _decision_lines(results) + _vd_s_lines(results)
    majority = results.get("versus_majority")
    if majority and majority["judgement"] is not None:
        lines.append(f"majority class (always {majority['judgement']}): {majority['accuracy']:.1%}; above it: "
                     f"one-sided exact binomial p = {majority['p_value']:.2g}")
    lines += _source_lines(results)
    return "\n".join(lines + pair_table(results))


def _source_lines(results: dict) -> list[str]:
    """Which mechanism decided, and with a head what the model alone would have answered."""
    source = source_of_results(results)
    mechanism = MECHANISMS.get(source)
    lines = [f"verdicts: {source}" + (f" ({mechanism.description})" if mechanism else "")]
    head = results.get("verdict_head")
    if head:
        lines[0] += f": {head['spec']} (layers {', '.join(map(str, head['layers']))}, {head['pooling']}) from {head['path']}"
    alone = results.get("model_alone")
    if alone:
        auc = "n/a" if alone.get("roc_auc") is None else f"{alone['roc_auc']:.3f}"
        lines.append(f"the model alone ({alone['source']}): accuracy {alone['overall']['accuracy']:.1%}, ROC-AUC {auc}; "
                     f"it agrees with the headline verdict on {alone['agreement']:.1%} of the samples")
    return lines


def _decision_lines(results: dict) -> list[str]:
    """Which predictions the accuracy above counts: argmax, or the threshold chosen on dev."""
    decision = results.get("decision") or {}
    if decision.get("headline") != "threshold":
        return []
    chosen, argmax = decision["chosen_on"], decision["argmax"]
    scores = [s["probabilities"][decision["positive"]] for s in results["samples"] if s.get("probabilities")]
    return [f"decision: P({decision['positive']}) >= {threshold_text(decision['threshold'], scores)}, chosen on dev "
            f"({chosen.get('test_dataset_path') or chosen.get('source')}, {chosen['samples']} samples, balanced "
            f"accuracy {chosen['balanced_accuracy']:.1%}); argmax would give accuracy {argmax['accuracy']:.1%}, "
            f"balanced {argmax['balanced_accuracy']:.1%}"]


def _vd_s_lines(results: dict) -> list[str]:
    """VD-S at each level, with the note when there are too few clean samples for it."""
    lines = []
    for level in results.get("vd_s") or []:
        lines.append(f"VD-S (miss rate at FPR <= {level['fpr_target']:.1%}): {level['fnr']:.1%} "
                     f"(FPR {level['fpr']:.1%}, {level['negatives']} clean / {level['positives']} defective)"
                     + (f"; note: {level['note']}" if level["note"] else ""))
    return lines


NOT_APPLICABLE = "n/a (all answers invalid)"


def outcome_cell(outcome: dict) -> str:
    """``12 (37%)``: a pair outcome's count and share; ``n/a`` when every answer was invalid."""
    if outcome["count"] is None:
        return "n/a"
    return f"{outcome['count']} ({outcome['share']:.0%})"


def pair_table(results: dict) -> list[str]:
    """The pair outcomes (PrimeVul) per subtype and overall, when the test set has twin pairs."""
    from defect_judge.evaluate.pairs import OUTCOMES
    from defect_judge.report.accuracy_bars import display_width

    pairs = results.get("pairs")
    if not pairs:
        return []
    rows = [*pairs["per_subtype"].items(), ("总体 overall", pairs["overall"])]
    width = max(display_width(name) for name, _ in rows) + 2
    lines = ["", f"pairs (PrimeVul: {pairs['positive']} twin + {pairs['negative']} twin, the headline predictions)",
             "subtype" + " " * (width - 7) + f"{'pairs':>5}" + "".join(f"  {name:>13}" for name in OUTCOMES)
             + f"  {'invalid':>7}"]
    for name, s in rows:
        cells = "".join(f"  {outcome_cell(s[o]):>13}" for o in OUTCOMES)
        lines.append(name + " " * max(0, width - display_width(name)) + f"{s['pairs']:>5}{cells}  "
                     f"{s['with_invalid']:>7}")
    overall = pairs["overall"]
    if overall.get("all_invalid"):
        lines.append(f"pair outcomes: {NOT_APPLICABLE}")
    else:
        low, high = overall["P-C"]["ci95"]
        lines.append(f"P-C (both twins right) {overall['P-C']['share']:.1%}, Wilson 95% CI [{low:.1%}, {high:.1%}]; "
                     f"P-V both called defective, P-B both called clean, P-R both reversed; an invalid answer counts "
                     f"as wrong ({overall['with_invalid']} pair(s) had one)")
    unpaired = pairs["unpaired"]
    if unpaired["samples"]:
        lines.append(f"unpaired: {unpaired['samples']} sample(s) not counted in pairs ({unpaired['without_pair_id']} "
                     f"without pair_id, {unpaired['in_incomplete_groups']} in {unpaired['incomplete_groups']} "
                     f"pair_id group(s) that are not one defective + one clean twin)")
    return lines


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


def results_file(path: str | Path) -> Path:
    """An ``evaluation_results.json``, named itself or by the folder that holds it."""
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() else path


def load_results(path: str | Path) -> dict:
    """Read and check an ``evaluation_results.json`` (or the one in a results folder); errors name the file
    and field."""
    path = results_file(path)
    data = read_json_object(path, missing="results file not found", not_object="not an evaluation results object")
    if data.get("schema") not in READABLE_SCHEMAS:
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
    for key in V2_KEYS + V3_KEYS:  # an older file: what it could not know is null
        data.setdefault(key, None)
    data.setdefault("verdict_source", source_of_results(data))
    return data
