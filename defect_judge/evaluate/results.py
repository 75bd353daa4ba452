"""The ``evaluation_results.json`` schema: the document written by ``eval/model_evaluation.py`` and
``eval/baseline.py``, read by ``eval/plot_subtype_acc.py``; its metrics come from ``metrics.py``, its printed
table from ``results_table.py``, its file name from ``results_folder.py``.

Top level::

    schema              "defect-judge/evaluation-results/v3" (v1 and v2 files still load: see load_results)
    model_path, test_dataset_path, mode ("generate"|"score"), created (ISO 8601)
    model_kind          base_model | full_model | lora_adapter (model/paths.py), after "output_dir/" when
                        model_path is a training OUTPUT_DIR; classical_baseline for eval/baseline.py
    settings            the arguments that produced the run
    judgements          the judgement vocabulary: the references' judgements and the partner of each
                        one in a known pair (是/否, 有缺陷/无缺陷, ...; data/labels.py's judgement_vocabulary)
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
    verdict_head        null | {path, weights_sha256, spec, layers, pooling, positive, negative, reads_base,
                        fit}: the head that decided (verdict_head.py); reads_base: it read the base model, the
                        adapter switched off
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
from collections import Counter
from pathlib import Path
from typing import Sequence

from defect_judge.data.labels import positive_judgement, two_classes
from defect_judge.errors import InputError
from defect_judge.evaluate.metrics import (average_precision, class_balanced_scores, metrics, roc_auc, summary,
                                           versus_majority)
from defect_judge.evaluate.pairs import has_pairs, pair_results
from defect_judge.evaluate.results_folder import results_file
from defect_judge.evaluate.thresholds import (DEFAULT_VDS_FPR, PRIMEVUL_FPR, apply_threshold, most_probable,
                                              positive_scores, vd_s_levels)
from defect_judge.evaluate.verdicts import HEAD, SCORED, source_of_results
from defect_judge.fileio import read_json_object

SCHEMA = "defect-judge/evaluation-results/v3"
SCHEMA_V1 = "defect-judge/evaluation-results/v1"
SCHEMA_V2 = "defect-judge/evaluation-results/v2"
READABLE_SCHEMAS = (SCHEMA_V1, SCHEMA_V2, SCHEMA)
# Keys v2 and v3 added; an older file is read with them null, so every reader can ask for them.
V2_KEYS = ("pairs", "vd_s", "decision", "average_precision")
V3_KEYS = ("verdict_head", "model_alone")
REQUIRED_KEYS = ("schema", "model_path", "mode", "overall", "per_subtype", "per_judgement", "samples")
SAMPLE_KEYS = ("id", "subtype", "reference", "prediction", "correct")


def results_document(*, model_path: str, model_kind: str, test_dataset_path: str, mode: str, settings: dict,
                     judgements: Sequence[str], samples: Sequence[dict], extra: dict | None = None,
                     threshold: dict | None = None, vds_fpr: float = DEFAULT_VDS_FPR,
                     verdict_source: str | None = None, verdict_head: dict | None = None) -> dict:
    """The whole ``evaluation_results.json``. With per-sample probabilities and a positive (defect)
    judgement: ROC-AUC, average precision and VD-S (at PrimeVul's 0.5% and at ``vds_fpr``).
    ``threshold`` (``thresholds.choose_threshold`` on dev, plus where it came from) decides the
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
