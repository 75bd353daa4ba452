"""The table a script prints after an evaluation: accuracy per subtype, the scores below it, the pair outcomes.

It reads an ``evaluation_results.json`` document (``results.py``) and prints it; it computes nothing new.
"""
from __future__ import annotations

from defect_judge.evaluate.metrics import all_invalid
from defect_judge.evaluate.pairs import OUTCOMES
from defect_judge.evaluate.thresholds import threshold_text
from defect_judge.evaluate.verdicts import MECHANISMS, source_of_results
from defect_judge.text import display_width, pad_to


def format_results_table(results: dict) -> str:
    """The per-subtype table a script prints after an evaluation."""
    rows = [(name, s) for name, s in results["per_subtype"].items()] + [("总体 overall", results["overall"])]
    width = max(display_width(name) for name, _ in rows) + 2
    generated = results["mode"] == "generate"  # only generated answers can be cut by max_new_tokens
    failed = ([f"the model failed the answer format: all {len(results['samples'])} answers are invalid (no "
               f"判断:{'/'.join(results['judgements'])}), so it judged nothing"] if all_invalid(results["samples"]) else [])
    lines = [*failed, f"{results['model_path']} ({results['model_kind']}), mode {results['mode']}",
             f"{pad_to('subtype', width)}{'n':>5}  {'accuracy':>8}  {'95% CI':>15}  {'invalid':>7}"
             + (f"  {'truncated':>9}" if generated else "")]
    for name, s in rows:
        low, high = s["ci95"]
        lines.append(f"{pad_to(name, width)}{s['total']:>5}  {s['accuracy']:>8.1%}  "
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
        lines.append(pad_to(name, width) + f"{s['pairs']:>5}{cells}  "
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
