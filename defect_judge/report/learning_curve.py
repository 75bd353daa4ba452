"""The learning curve of a training run: losses and dev accuracy (the answer's, and the verdict head's when the
run has one) against the optimizer step.

Drawn from the Trainer's ``log_history`` (``trainer_state.json``), which a resumed
run carries over from its checkpoint, so the curve always covers the whole run.
"""
from __future__ import annotations

import os
from typing import Sequence

from defect_judge.report.fonts import use_cjk_font
from defect_judge.report.accuracy_bars import DPI, save_png

TRAIN_COLOR, EVAL_COLOR, ACCURACY_COLOR, HEAD_COLOR, BEST_COLOR = "#4C72B0", "#DD8452", "#55A868", "#8172B2", "#C44E52"


def curve_points(log_history: Sequence[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of every history entry that logged ``key``, in step order, the last one per step."""
    points = {int(entry["step"]): float(entry[key]) for entry in log_history
              if key in entry and "step" in entry and entry[key] is not None}
    return sorted(points.items())


def learning_curve_figure(log_history: Sequence[dict], *, best_step: int | None = None, title: str = ""):
    """Top: training and eval loss; bottom: eval judgement accuracy (and the verdict head's, which a run with a
    head selects on); the chosen checkpoint marked in both."""
    train = curve_points(log_history, "loss")
    evals = curve_points(log_history, "eval_loss")
    accuracy = curve_points(log_history, "eval_judgement_accuracy")
    head_accuracy = curve_points(log_history, "eval_head_accuracy")
    if not train and not evals:
        raise ValueError("the training history holds no loss values")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    use_cjk_font()
    fig = Figure(figsize=(8.0, 6.5), dpi=DPI)
    FigureCanvasAgg(fig)  # render with Agg whatever backend the caller's matplotlib is set to
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    if train:
        top.plot(*zip(*train), color=TRAIN_COLOR, linewidth=1.2, label="train loss")
    if evals:
        top.plot(*zip(*evals), color=EVAL_COLOR, marker="o", markersize=4, linewidth=1.5, label="eval loss")
    top.set_ylabel("loss (key-token weighted)")
    if accuracy:
        bottom.plot(*zip(*accuracy), color=ACCURACY_COLOR, marker="o", markersize=4, linewidth=1.5,
                    label="eval judgement accuracy")
    if head_accuracy:
        bottom.plot(*zip(*head_accuracy), color=HEAD_COLOR, marker="s", markersize=4, linewidth=1.5,
                    label="eval verdict-head accuracy")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("accuracy")
    bottom.set_xlabel("optimizer step")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if best_step is not None:
            ax.axvline(best_step, color=BEST_COLOR, linestyle="--", linewidth=1.2,
                       label=f"chosen checkpoint (step {best_step})")
        ax.legend(loc="best", fontsize=8, frameon=False)
    if title:
        top.set_title(title)
    fig.tight_layout()
    return fig


def learning_curve_chart(path: str | os.PathLike, log_history: Sequence[dict], *, best_step: int | None = None,
                         title: str = "") -> None:
    """Write the learning curve PNG atomically."""
    save_png(learning_curve_figure(log_history, best_step=best_step, title=title), path, pad_inches=0.1)
