#!/usr/bin/env python
"""Write runs/demo/<time>/summary.md: the demo's results next to the bars they must clear, its timings,
images and wandb folder in one page.

The judge (the fine-tuned model with its verdict head when the run trained one, else the fine-tuned
generative judge) is read against the references on the same test split: always answering the majority
class (with the one-sided exact binomial p-value), the TF-IDF + logistic-regression baseline (with
McNemar's paired test), the base model and the fine-tuned model's own generated verdicts. The checkpoint
was chosen on the dev split, which best_checkpoint.json names; the test split was used for no choice.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge.cli import parse_settings
from defect_judge.errors import InputError, run_main
from defect_judge.evaluate.metrics import metrics
from defect_judge.evaluate.pairs import OUTCOMES
from defect_judge.evaluate.results import decided_by, load_results
from defect_judge.evaluate.results_folder import PAIR_OUTCOMES_FILE, RESULTS_FILE, ROC_FILE, SUBTYPE_ACCURACY_FILE
from defect_judge.evaluate.results_table import outcome_cell
from defect_judge.evaluate.thresholds import threshold_text
from defect_judge.evaluate.verdicts import HEAD
from defect_judge.fileio import write_text_atomic
from defect_judge.report.comparison_folder import ACCURACY_CHARTS, PAIR_CHART, SUMMARY_FILE
from defect_judge.stats import mcnemar
from defect_judge.templates import answer_prefix
from defect_judge.model.run_folder import LEARNING_CURVE_FILE, read_best_checkpoint
from defect_judge.train.tracking import newest_offline_run

# ----------------------------------------------------------------------------
run_dir = "runs/demo/latest"  # the demo's run folder (summary.md is written there)
recipe = "demo"  # the training recipe's name
timings = []  # stage=seconds pairs, in the order the stages ran
# ----------------------------------------------------------------------------
STAGE_NAMES = {"convert": "1 convert + split", "tfidf_baseline": "2 TF-IDF baseline", "base_eval": "3 base model evaluation",
               "training": "4 fine-tuning", "tuned_eval": "5 fine-tuned evaluation", "plots": "6 comparison plots"}
# What "judges better" means here: the demo says which of these the run met.
TARGET_ACCURACY = 0.70
TARGET_P_VALUE = 0.01
TARGET_PER_JUDGEMENT = 0.60
DEMO_SUMMARY_FILE = "summary.md"  # written into run_dir


def overall_row(label: str, results: dict) -> str:
    o = results["overall"]
    low, high = o["ci95"]
    per = " / ".join(f"{j} {s['accuracy']:.0%}" for j, s in results["per_judgement"].items())
    auc = "–" if results.get("roc_auc") is None else f"{results['roc_auc']:.2f}"
    return (f"| {label} | {o['accuracy']:.1%} ({o['correct']}/{o['total']}) | {low:.1%} – {high:.1%} | {per} | "
            f"{auc} | {o['invalid_format_rate']:.1%} |")


def paired_counts(baseline: dict, other: dict) -> tuple[int, int]:
    """(fixed, broken): samples the baseline got wrong and the other right, and the reverse."""
    right = {s["id"]: s["correct"] for s in baseline["samples"]}
    fixed = sum(1 for s in other["samples"] if s["correct"] and not right.get(s["id"], False))
    broken = sum(1 for s in other["samples"] if not s["correct"] and right.get(s["id"], False))
    return fixed, broken


def in_format(sample: dict) -> bool:
    """A generated answer that opens with 判断:{its verdict}\n\n原因： and gives a reason after it."""
    response = sample.get("response") or ""
    prefix = answer_prefix(sample["prediction"]) if sample["prediction"] is not None else None
    return prefix is not None and response.startswith(prefix) and bool(response[len(prefix):].strip())


def target_lines(judge: dict, tfidf: dict) -> list[str]:
    """One line per target, met or not: the musts, then the goal (the TF-IDF baseline's accuracy and P-C)."""
    o, majority = judge["overall"], judge["versus_majority"]
    per = {j: s["accuracy"] for j, s in judge["per_judgement"].items() if s["total"]}
    fixed, broken = paired_counts(tfidf, judge)
    p_tfidf, method = mcnemar(fixed, broken)
    checks = [
        (majority["p_value"] < TARGET_P_VALUE,
         f"above the majority class (always {majority['judgement']}, {majority['accuracy']:.1%}) with exact binomial "
         f"p < {TARGET_P_VALUE}: p = {majority['p_value']:.2g}"),
        (min(per.values(), default=0) >= TARGET_PER_JUDGEMENT,
         f"every judgement ≥ {TARGET_PER_JUDGEMENT:.0%}: " + ", ".join(f"{j} {a:.1%}" for j, a in per.items())),
        (o["accuracy"] >= TARGET_ACCURACY, f"accuracy ≥ {TARGET_ACCURACY:.0%}: {o['accuracy']:.1%}"),
        (o["invalid_format"] == 0, f"0% invalid answers: {o['invalid_format_rate']:.1%}"),
    ]
    if judge["mode"] == "generate":
        good = sum(in_format(s) for s in judge["samples"])
        checks.append((good == len(judge["samples"]), f"every answer in the format 判断:…\\n\\n原因：… with a reason: "
                                                       f"{good}/{len(judge['samples'])}"))
    checks.append((o["accuracy"] >= tfidf["overall"]["accuracy"],
                   f"goal: at or above the TF-IDF baseline ({tfidf['overall']['accuracy']:.1%}): McNemar {fixed} fixed "
                   f"/ {broken} broken, p = {p_tfidf:.2g} ({method})"))
    if judge.get("pairs") and tfidf.get("pairs"):
        ours, theirs = judge["pairs"]["overall"]["P-C"]["count"], tfidf["pairs"]["overall"]["P-C"]["count"]
        checks.append((ours is not None and ours >= theirs,
                       f"goal: P-C at or above the TF-IDF baseline's ({theirs}): {'n/a' if ours is None else ours}"))
    return [f"- {'✅' if ok else '❌'} {text}" for ok, text in checks]


def agreement_line(generative: dict, judge: dict) -> list[str]:
    """How often the head's verdict and the fine-tuned model's own generated verdict agree."""
    own = {s["id"]: s["prediction"] for s in generative["samples"]}
    same = sum(1 for s in judge["samples"] if own.get(s["id"]) == s["prediction"])
    return [f"The head's verdict and the fine-tuned model's own generated verdict agree on {same} of "
            f"{len(judge['samples'])} test samples.", ""]


def pair_lines(models: list[tuple[str, dict]]) -> list[str]:
    """P-C / P-V / P-B / P-R of each model over the test split's twin pairs."""
    rows = [(label, r["pairs"]["overall"]) for label, r in models if r.get("pairs")]
    if not rows:
        return ["The test split has no twin pairs (no pair_id).", ""]
    lines = [f"{rows[0][1]['pairs']} pairs: P-C both right, P-V both called defective, P-B both called clean, "
             f"P-R both reversed. An invalid answer counts as the wrong call, so a pair with one is never P-C "
             f"(last column).", "", "| model | P-C | P-V | P-B | P-R | pairs with an invalid answer |",
             "|---|---|---|---|---|---|"]
    for label, overall in rows:
        lines.append(f"| {label} | " + " | ".join(outcome_cell(overall[o]) for o in OUTCOMES)
                     + f" | {overall['with_invalid']} |")
    return lines + [""]


def score_lines(scored: dict, folder: Path) -> list[str]:
    """The fine-tuned model's scores (its head's, when it has one): ROC-AUC, VD-S and the decision threshold
    chosen on dev; with a head, what the model alone scores beside it."""
    head = scored.get("verdict_source") == HEAD
    lines = [f"## Scores of the fine-tuned model{' with its head' if head else ''} (score mode)", ""]
    auc = "n/a" if scored.get("roc_auc") is None else f"{scored['roc_auc']:.3f}"
    decision = scored["decision"]
    chosen = decision.get("chosen_on") or {}
    lines.append(f"ROC-AUC {auc}; accuracy {scored['overall']['accuracy']:.1%} ({decision['headline']} decision"
                 + (f": P(defective) ≥ {threshold_text(decision['threshold'])}, the threshold with the highest balanced "
                    f"accuracy "
                    f"({chosen.get('balanced_accuracy', float('nan')):.2f}) on `{chosen.get('test_dataset_path')}`"
                    if decision.get("threshold") is not None else "") + ").")
    for level in scored.get("vd_s") or []:
        note = f" ({level['note']})" if level.get("note") else ""
        lines.append(f"- VD-S at FPR ≤ {level['fpr_target']:.1%}: miss rate {level['fnr']:.1%}{note}")
    alone = scored.get("model_alone")
    if alone:
        auc_alone = "n/a" if alone.get("roc_auc") is None else f"{alone['roc_auc']:.3f}"
        lines.append(f"- the model alone (its scored answer, no head): accuracy {alone['overall']['accuracy']:.1%}, "
                     f"ROC-AUC {auc_alone}; it agrees with the head's verdict on {alone['agreement']:.0%} of the samples")
    lines += ["", f"ROC and precision–recall curves: `{folder / ROC_FILE}`", ""]
    return lines


def summary_markdown(run_dir: Path, timings: dict[str, int], recipe: str) -> str:
    base = load_results(run_dir / "eval_base" / RESULTS_FILE)
    tfidf = load_results(run_dir / "eval_tfidf" / RESULTS_FILE)
    tuned = load_results(run_dir / "eval_tuned" / RESULTS_FILE)
    head_path = run_dir / "eval_head" / RESULTS_FILE
    head = load_results(head_path) if head_path.is_file() else None
    judge = head or tuned
    train_dir = run_dir / "train"
    best = read_best_checkpoint(train_dir)
    comparison = run_dir / "comparison"
    rows = [overall_row(f"majority class (always {tuned['versus_majority']['judgement']})", _majority(tuned)),
            overall_row("TF-IDF + logistic regression", tfidf), overall_row(f"base `{base['model_path']}`", base),
            overall_row(f"fine-tuned `{tuned['model_path']}` ({best['best_checkpoint']}), its own verdict", tuned)]
    pairs = [("TF-IDF + logistic regression", tfidf), ("base", base), ("fine-tuned", tuned)]
    if head is not None:
        spec = (head.get("verdict_head") or {}).get("spec")
        rows.append(overall_row(f"fine-tuned + head `{spec}` (the head's verdict, the model's reason)", head))
        pairs.append(("fine-tuned + head", head))
    lines = [f"# Demo run `{run_dir}`", "",
             f"Recipe `{recipe}` (defect_judge/train/recipes.py). Evaluation mode `{tuned['mode']}` on the test split "
             f"`{tuned['test_dataset_path']}` ({tuned['overall']['total']} samples), used for no choice.", "",
             "| model | accuracy | Wilson 95% CI | per judgement | ROC-AUC | invalid format |",
             "|---|---|---|---|---|---|", *rows, "",
             f"## Does the {'judge with the head' if head else 'fine-tuned judge'} judge well?", "",
             *target_lines(judge, tfidf), "", *(agreement_line(tuned, head) if head else []),
             "## Twin pairs (PrimeVul's pair-wise outcomes)", "", *pair_lines(pairs)]
    scored_path = run_dir / "eval_tuned_score" / RESULTS_FILE
    if scored_path.is_file():
        lines += score_lines(load_results(scored_path), run_dir / "eval_tuned_score")
    comparison_md = comparison / SUMMARY_FILE
    if comparison_md.is_file():
        text = comparison_md.read_text(encoding="utf-8").strip()
        lines += ["## Comparison (per subtype, paired McNemar test against the base model)", "",
                  "\n".join(l.replace("# ", "### ", 1) if l.startswith("# ") else l for l in text.splitlines()), ""]
    value = "n/a" if best.get("value") is None else f"{best['value']:.4f}"
    lines += ["## Chosen checkpoint", "",
              f"`{train_dir / best['best_checkpoint']}`: {best['metric']} = {value} at step {best['step']}, chosen on "
              f"`{best.get('eval_data', 'n/a')}` ({best.get('eval_samples', '?')} samples; "
              f"{'the TEST split: optimistic' if best.get('eval_is_test_data') else 'the dev split'}).", "",
              f"Learning curve: `{train_dir / LEARNING_CURVE_FILE}`", "",
              "## Timings (this machine)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {STAGE_NAMES.get(k, k)} | {v} |" for k, v in timings.items()]
    lines += [f"| **total** | **{sum(timings.values())}** |", "", "## Files", ""]
    lines += [f"- `{comparison / image}`" for image in ACCURACY_CHARTS]
    lines += [f"- `{run_dir / name / SUBTYPE_ACCURACY_FILE}`" for name in ("eval_tfidf", "eval_base", "eval_tuned",
                                                                          "eval_head") if (run_dir / name).is_dir()]
    pair_charts = sorted([*run_dir.glob(f"*/{PAIR_OUTCOMES_FILE}"), *run_dir.glob(f"*/{PAIR_CHART}")])
    lines += [f"- `{path}`" for path in pair_charts + sorted(run_dir.glob(f"*/{ROC_FILE}"))]
    lines.append(f"- `{train_dir / LEARNING_CURVE_FILE}`")
    offline_run = newest_offline_run(train_dir)
    lines += ["", "## wandb", ""]
    if offline_run is not None:
        lines += [f"Offline run: `{offline_run}`. Upload it with:", "", "```bash", f".venv/bin/wandb sync {offline_run}",
                  "```"]
    else:
        lines.append("No offline wandb run was recorded (logged online, or report_to none).")
    return "\n".join(lines) + "\n"


def _majority(results: dict) -> dict:
    """The majority-class answer scored like a model, for the table."""
    answer = results["versus_majority"]["judgement"]
    samples = [decided_by(s, answer) for s in results["samples"]]
    return metrics(samples, results["judgements"]) | {"roc_auc": None}


def main() -> None:
    args, _ = parse_settings(globals(), paths=("run_dir",))
    run_dir = Path(args.run_dir)
    timings = {}
    for item in args.timings:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise InputError(f"expected stage=seconds, got {item!r}", field="--timings")
        timings[name] = int(value)
    text = summary_markdown(run_dir, timings, args.recipe)
    write_text_atomic(run_dir / DEMO_SUMMARY_FILE, text)
    print(text)
    print(f"summary -> {run_dir / DEMO_SUMMARY_FILE}")


if __name__ == "__main__":
    run_main(main)
