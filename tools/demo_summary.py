#!/usr/bin/env python
"""Write runs/demo/<time>/summary.md: the demo's results, timings, images and wandb folder in one page."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge.errors import InputError, run_main
from defect_judge.fileio import write_text_atomic
from defect_judge.modeling import read_best_checkpoint
from defect_judge.results import load_results

STAGE_NAMES = {"convert": "1 convert + split", "baseline_eval": "2 baseline evaluation", "training": "3 LoRA training",
               "tuned_eval": "4 fine-tuned evaluation", "plots": "5 comparison plots"}


def overall_row(label: str, results: dict) -> str:
    o = results["overall"]
    low, high = o["ci95"]
    return (f"| {label} | {o['accuracy']:.1%} ({o['correct']}/{o['total']}) | {low:.1%} – {high:.1%} | "
            f"{o['invalid_format_rate']:.1%} |")


def wandb_runs(train_dir: Path) -> list[Path]:
    return sorted(train_dir.glob("wandb/offline-run-*")) + sorted(train_dir.glob("wandb/run-*"))


def summary_markdown(run_dir: Path, timings: dict[str, int]) -> str:
    base = load_results(run_dir / "eval_base" / "evaluation_results.json")
    tuned = load_results(run_dir / "eval_tuned" / "evaluation_results.json")
    best = read_best_checkpoint(run_dir / "train")
    comparison = run_dir / "comparison"
    gain = tuned["overall"]["accuracy"] - base["overall"]["accuracy"]
    verdict = (f"The fine-tuned model is **ahead by {gain * 100:.1f} points**." if gain > 0 else
               f"The fine-tuned model is **not ahead** ({gain * 100:+.1f} points).")
    lines = [f"# Demo run `{run_dir}`", "",
             f"Evaluation mode: `{tuned['mode']}` on `{tuned['test_dataset_path']}`. {verdict}", "",
             "| model | accuracy | Wilson 95% CI | invalid format |", "|---|---|---|---|",
             overall_row(f"base `{base['model_path']}`", base),
             overall_row(f"LoRA `{tuned['model_path']}` ({best['best_checkpoint']})", tuned), ""]
    comparison_md = comparison / "comparison_summary.md"
    if comparison_md.is_file():
        text = comparison_md.read_text(encoding="utf-8").strip()
        lines += ["## Comparison (per subtype, paired McNemar test)", "",
                  "\n".join(l.replace("# ", "### ", 1) if l.startswith("# ") else l for l in text.splitlines()), ""]
    lines += ["## Best checkpoint", "",
              f"`{run_dir / 'train' / best['best_checkpoint']}`: {best['metric']} = {best['value']:.4f} "
              f"at step {best['step']} (selected from `{run_dir / 'train' / 'best_checkpoint.json'}`)", "",
              "## Timings (this machine)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {STAGE_NAMES.get(k, k)} | {v} |" for k, v in timings.items()]
    lines += [f"| **total** | **{sum(timings.values())}** |", "", "## Files", ""]
    for image in ["model_comparison.png", "overall_accuracy_comparison.png", "type_accuracy_comparison.png"]:
        lines.append(f"- `{comparison / image}`")
    lines += [f"- `{run_dir / 'eval_base' / 'subtype_accuracy.png'}`", f"- `{run_dir / 'eval_tuned' / 'subtype_accuracy.png'}`"]
    runs = wandb_runs(run_dir / "train")
    lines += ["", "## wandb", ""]
    if runs:
        lines += [f"Offline run: `{runs[-1]}`. Upload it with:", "", "```bash", f".venv/bin/wandb sync {runs[-1]}", "```"]
    else:
        lines.append("No wandb run was recorded (report_to none?).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run_dir", required=True, help="the demo's run folder")
    parser.add_argument("--timings", nargs="*", default=[], help="stage=seconds pairs, in order")
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    timings = {}
    for item in args.timings:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise InputError(f"expected stage=seconds, got {item!r}", field="--timings")
        timings[name] = int(value)
    text = summary_markdown(run_dir, timings)
    write_text_atomic(run_dir / "summary.md", text)
    print(text)
    print(f"summary -> {run_dir / 'summary.md'}")


if __name__ == "__main__":
    run_main(main)
