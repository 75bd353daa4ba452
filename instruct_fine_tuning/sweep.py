#!/usr/bin/env python
"""Recipe sweep — which training recipe makes a model learn the judgement, measured on the dev split.

For each recipe it trains through the real launcher (run_training_lora.sh under
deepspeed, exactly what a user runs), keeps a checkpoint every 1/EVALS_PER_EPOCH
epoch, and scores every checkpoint on the dev split with eval/model_evaluation.py
in score mode (the log-probability of each judgement; no generation): dev accuracy
and ROC-AUC at every half epoch, next to the majority class and the TF-IDF
baseline on the same split. The test split is never read.

Writes into OUTPUT_DIR:
  <recipe>/train/              the training run (learning_curve.png, wandb offline; its checkpoints
                               are deleted once scored unless --keep_checkpoints)
  <recipe>/dev-<step>/         the score-mode evaluation of each checkpoint on dev
  sweep_results.json           every recipe's settings, training seconds and dev curve
  sweep.md                     one table: recipe x half epoch, dev accuracy / AUC, and the best of each
  sweep_curves.png             dev accuracy and AUC against epochs, a line per recipe

Each training runs on one rank (one GPU, or one CPU rank) unless the environment's NUM_GPUS asks
for more (run_training_lora.sh alone would take every visible GPU).

A recipe whose results are already in OUTPUT_DIR is skipped, so a sweep can be stopped
and started again. Run it once per data/model; it takes hours on a 2-core CPU.

Examples:
  python instruct_fine_tuning/sweep.py --recipes demo judgement_single --epochs 2
  python instruct_fine_tuning/sweep.py --list
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge.model.run_folder import checkpoint_step, list_checkpoints, remove_checkpoints
from defect_judge.cli import parse_settings
from defect_judge.errors import InputError, RunError, run_main
from defect_judge.fileio import write_json_atomic, write_text_atomic
from defect_judge.train.recipes import RECIPES, Recipe
from defect_judge.data.labels import majority_class
from defect_judge.evaluate.results import load_results
from defect_judge.evaluate.results_folder import RESULTS_FILE
from defect_judge.data.schema import read_records

# ----------------------------------------------------------------------------
MODEL_PATH = "./models/SmolLM2-135M-Instruct"  # base model folder (the embedded model)
TRAIN_DATA = "./dataset/train.jsonl"  # training split (chat JSONL)
# dev split (chat JSONL): every checkpoint is scored on it; every choice is made here, never on test
EVAL_DATA = "./dataset/dev.jsonl"
OUTPUT_DIR = "./runs/sweep"  # the sweep's folder (one subfolder per recipe)
RECIPES_TO_RUN = ["demo"]  # names from defect_judge/train/recipes.py (--list shows them)
EPOCHS = 2.0  # training length of every recipe, in epochs of TRAIN_DATA
EVALS_PER_EPOCH = 2  # checkpoints scored on dev per epoch
BASELINE = True  # also fit the TF-IDF baseline (eval/baseline.py) on train, chosen and scored on dev
# keep every recipe's checkpoints after they are scored (full fine-tuning: a model each); else only their dev
# results and the training logs stay
KEEP_CHECKPOINTS = False
LIST = False  # print the recipes and exit
# ----------------------------------------------------------------------------
PATHS = ("model_path", "train_data", "eval_data", "output_dir")
REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "instruct_fine_tuning" / "run_training_lora.sh"
EVALUATE = REPO / "eval" / "model_evaluation.py"
BASELINE_SCRIPT = REPO / "eval" / "baseline.py"
PYTHON = sys.executable

log = logging.getLogger("sweep")


def ranks() -> int:
    """Data-parallel ranks of each training: NUM_GPUS when set (the launcher's variable), else one. An
    epoch's optimizer steps shrink with them."""
    value = os.environ.get("NUM_GPUS", "1")
    if not value.isdigit():
        raise InputError(f"NUM_GPUS must be a whole number, got {value!r}")
    return max(1, int(value))


def train(recipe: Recipe, args, folder: Path, train_samples: int) -> tuple[float, int]:
    """Train through the launcher with a checkpoint every 1/evals_per_epoch epoch; (seconds, save_steps)."""
    per_epoch = recipe.steps_per_epoch(train_samples, ranks())
    save_steps = max(1, round(per_epoch / args.evals_per_epoch))
    max_steps = max(save_steps, round(per_epoch * args.epochs))
    # TEST_DATA is the dev split too: the launcher checks that it exists, and a sweep never reads the test split.
    env = os.environ | recipe.launcher_env() | {
        "MODEL_PATH": str(args.model_path), "TRAIN_DATA": str(args.train_data), "EVAL_DATA": str(args.eval_data),
        "TEST_DATA": str(args.eval_data), "OUTPUT_DIR": str(folder), "SAVE_STEPS": str(save_steps),
        "NUM_GPUS": str(ranks()), "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    command = [str(LAUNCHER), *recipe.train_args(), "--max_steps", str(max_steps), "--save_total_limit", "1000",
               "--early_stopping_patience", "0", "--load_best_model_at_end", "false", "--logging_steps",
               str(max(1, save_steps // 4))]
    if recipe.fine_tunes:
        log.info("%s: training %d steps (%.2g epochs), a checkpoint every %d: %s", recipe.name, max_steps,
                 args.epochs, save_steps, " ".join(command[1:]))
    else:
        log.info("%s: fitting the verdict head %s on the frozen model (no training steps)", recipe.name,
                 recipe.verdict_head)
    started = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / "train.log", "w", encoding="utf-8") as handle:  # readable while it trains
        result = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RunError(f"training failed (exit {result.returncode}); see {folder.parent / 'train.log'}")
    return seconds, save_steps


def score_on_dev(checkpoint: Path, args, folder: Path) -> dict:
    """Score-mode accuracy and ROC-AUC of one checkpoint on the dev split: its verdict head's when it carries
    one (and then what the model alone scores, beside it)."""
    if not (folder / RESULTS_FILE).is_file():
        scored = subprocess.run([PYTHON, str(EVALUATE), "--model_path", str(checkpoint), "--test_dataset_path",
                                 str(args.eval_data), "--output_dir", str(folder), "--mode", "score",
                                 "--tokenizer_path", ""], stdout=subprocess.DEVNULL)
        if scored.returncode != 0:
            raise RunError(f"scoring {checkpoint} on dev failed (exit {scored.returncode}; its error is above)")
    results = load_results(folder / RESULTS_FILE)
    per = results["per_judgement"]
    alone = results.get("model_alone")
    return {"accuracy": results["overall"]["accuracy"], "roc_auc": results["roc_auc"],
            "per_judgement": {j: s["accuracy"] for j, s in per.items()}, "verdict_source": results["verdict_source"],
            "model_alone": {"accuracy": alone["overall"]["accuracy"], "roc_auc": alone["roc_auc"]} if alone else None}


def run_recipe(recipe: Recipe, args, train_samples: int) -> dict:
    root = Path(args.output_dir) / recipe.name
    done = root / "recipe_results.json"
    if done.is_file():
        log.info("%s: already done (%s)", recipe.name, done)
        return json.loads(done.read_text(encoding="utf-8"))
    train_dir = root / "train"
    seconds, save_steps = train(recipe, args, train_dir, train_samples)
    per_epoch = recipe.steps_per_epoch(train_samples, ranks())
    curve = []
    # A linear probe alone has no checkpoints: its OUTPUT_DIR (the head on the frozen model) is scored, at epoch 0.
    for checkpoint in list_checkpoints(train_dir) if recipe.fine_tunes else [train_dir]:
        step = checkpoint_step(checkpoint) if recipe.fine_tunes else 0
        scores = score_on_dev(checkpoint, args, root / f"dev-{step}")
        curve.append({"step": step, "epoch": step / per_epoch, **scores})
        log.info("%s: step %d (epoch %.2f): dev accuracy %.3f, AUC %s", recipe.name, step, step / per_epoch,
                 scores["accuracy"], "n/a" if scores["roc_auc"] is None else f"{scores['roc_auc']:.3f}")
    result = {"recipe": recipe.name, "description": recipe.description, "settings": recipe.to_json(),
              "train_seconds": round(seconds, 1), "steps_per_epoch": per_epoch, "save_steps": save_steps,
              "curve": curve}
    write_json_atomic(done, result)
    if not args.keep_checkpoints:
        remove_checkpoints(list_checkpoints(train_dir))
    return result


def baseline_on_dev(args) -> dict | None:
    folder = Path(args.output_dir) / "baseline"
    if not (folder / RESULTS_FILE).is_file():
        subprocess.run([PYTHON, str(BASELINE_SCRIPT), "--train_dataset_path", str(args.train_data),
                        "--dev_dataset_path", "", "--test_dataset_path", str(args.eval_data), "--output_dir",
                        str(folder)], check=True, stdout=subprocess.DEVNULL)
    results = load_results(folder / RESULTS_FILE)
    return {"accuracy": results["overall"]["accuracy"], "roc_auc": results["roc_auc"]}


def sweep_table(results: list[dict], reference: dict) -> str:
    """Markdown: a row per recipe, a column per evaluation (accuracy / AUC), the best of each in bold."""
    epochs = sorted({round(point["epoch"], 2) for r in results for point in r["curve"]})
    header = ["recipe", "train min"] + [f"epoch {e:g}" for e in epochs] + ["best dev acc (AUC)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = {round(p["epoch"], 2): p for p in r["curve"]}
        best = max(r["curve"], key=lambda p: (p["accuracy"], p["roc_auc"] or 0), default=None)
        row = [f"`{r['recipe']}`", f"{r['train_seconds'] / 60:.0f}"]
        for e in epochs:
            p = cells.get(e)
            row.append("–" if p is None else f"{p['accuracy']:.2f} / {_auc(p['roc_auc'])}")
        row.append("–" if best is None else f"**{best['accuracy']:.2f}** ({_auc(best['roc_auc'])}) at epoch "
                                            f"{best['epoch']:.2g}")
        lines.append("| " + " | ".join(row) + " |")
    notes = [f"Cells: dev accuracy / ROC-AUC (score mode). Majority class on dev: {reference['majority']:.2f}."]
    if reference.get("baseline"):
        b = reference["baseline"]
        notes.append(f"TF-IDF + logistic regression (fitted on train, C by cross-validation) on dev: "
                     f"{b['accuracy']:.2f} / {_auc(b['roc_auc'])}.")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def _auc(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def sweep_curves(path: Path, results: list[dict], reference: dict) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from defect_judge.report.fonts import use_cjk_font
    from defect_judge.report.accuracy_bars import DPI, save_png

    use_cjk_font()
    fig = Figure(figsize=(11, 4.5), dpi=DPI)
    FigureCanvasAgg(fig)
    accuracy_ax, auc_ax = fig.subplots(1, 2, sharex=True)
    for r in results:
        epochs = [p["epoch"] for p in r["curve"]]
        accuracy_ax.plot(epochs, [p["accuracy"] for p in r["curve"]], marker="o", label=r["recipe"])
        auc_ax.plot(epochs, [p["roc_auc"] if p["roc_auc"] is not None else float("nan") for p in r["curve"]],
                    marker="o", label=r["recipe"])
    accuracy_ax.axhline(reference["majority"], color="gray", linestyle="--", label="majority class")
    auc_ax.axhline(0.5, color="gray", linestyle="--", label="chance")
    if reference.get("baseline"):
        accuracy_ax.axhline(reference["baseline"]["accuracy"], color="black", linestyle=":", label="TF-IDF baseline")
        if reference["baseline"]["roc_auc"] is not None:
            auc_ax.axhline(reference["baseline"]["roc_auc"], color="black", linestyle=":", label="TF-IDF baseline")
    for ax, name in ((accuracy_ax, "dev accuracy (score mode)"), (auc_ax, "dev ROC-AUC")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_ylim(0.3, 1.0)
        ax.grid(alpha=0.3)
    auc_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    save_png(fig, path, pad_inches=0.1)


def main() -> None:
    args, _ = parse_settings(globals(), paths=PATHS, flags={"RECIPES_TO_RUN": "recipes"})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.list:
        for recipe in RECIPES.values():
            print(f"{recipe.name:24} {recipe.description}")
        return
    unknown = [name for name in args.recipes if name not in RECIPES]
    if unknown:
        raise InputError(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}", field="recipes")
    if args.epochs <= 0 or args.evals_per_epoch < 1:
        raise InputError("epochs must be > 0 and evals_per_epoch at least 1")
    log.info("training on %d rank(s) (NUM_GPUS)", ranks())
    pair_ids = [r.pair_id for r in read_records(args.train_data)]
    dev = read_records(args.eval_data)
    judgements = [r.judgement for r in dev]
    reference = {"majority": majority_class(judgements)[1],
                 "baseline": baseline_on_dev(args) if args.baseline else None}
    results = [run_recipe(RECIPES[name], args, RECIPES[name].training_items(pair_ids)) for name in args.recipes]
    output_dir = Path(args.output_dir)
    summary = {"model_path": str(args.model_path), "train_data": str(args.train_data),
               "eval_data": str(args.eval_data), "train_samples": len(pair_ids), "dev_samples": len(dev),
               "reference": reference, "recipes": results}
    write_json_atomic(output_dir / "sweep_results.json", summary)
    table = sweep_table(results, reference)
    write_text_atomic(output_dir / "sweep.md", table)
    sweep_curves(output_dir / "sweep_curves.png", results, reference)
    print(table)
    log.info("wrote %s, %s and %s", output_dir / "sweep_results.json", output_dir / "sweep.md",
             output_dir / "sweep_curves.png")


if __name__ == "__main__":
    run_main(main)
