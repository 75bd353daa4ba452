"""The charts beside ``subtype_accuracy.png``: pair outcomes (stacked bars) and ROC / precision-recall.

``pair_outcomes.png``: for every category (all pairs, then each subtype) one bar per model, split
into the shares of P-C, P-V, P-B and P-R (defect_judge/evaluate/pairs.py), with the Wilson interval of P-C;
``eval/plot_subtype_acc.py`` draws the same chart for several models. ``roc_curve.png``: the ROC
curve with its AUC, the VD-S operating points and the dev threshold's, beside the precision-recall
curve. Labels go through the same font handling as the accuracy charts (defect_judge/report/accuracy_bars.py),
so Chinese renders and nothing warns about missing glyphs.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from defect_judge.evaluate.thresholds import both_classes, positive_scores
from defect_judge.report.fonts import use_cjk_font
from defect_judge.evaluate.pairs import OUTCOMES
from defect_judge.evaluate.results_folder import PAIR_OUTCOMES_FILE, ROC_FILE, SUBTYPE_ACCURACY_FILE
from defect_judge.evaluate.results_table import NOT_APPLICABLE
from defect_judge.report.accuracy_bars import (COLORS, DPI, ERROR_BAR_COLOR, LABEL_COLUMNS, MAX_BAR_THICKNESS, N_ZERO_TEXT, category_label,
                       chart_names, check_series, drawable_text, results_label, save_png, subtype_accuracy_chart)

log = logging.getLogger(__name__)

ALL_PAIRS = "全部配对 (all pairs)"
OUTCOME_COLORS = {"P-C": "#55A868", "P-V": "#DD8452", "P-B": "#4C72B0", "P-R": "#C44E52"}
OUTCOME_LABELS = {"P-C": "P-C 两者皆对 (both right)", "P-V": "P-V 都判为有缺陷 (both defective)",
                  "P-B": "P-B 都判为无缺陷 (both clean)", "P-R": "P-R 两者皆反 (both reversed)"}
MIN_SEGMENT_TEXT = 0.09  # a narrower segment carries no number: it would not fit
CHANCE_COLOR = "#888888"


def pair_categories(pairs: dict) -> tuple[list[str], list[dict]]:
    """All pairs first, then the subtypes with the most pairs: names and their PairSummaries."""
    per_subtype = pairs["per_subtype"]
    names = sorted(per_subtype, key=lambda name: (-per_subtype[name]["pairs"], name))
    return [ALL_PAIRS, *names], [pairs["overall"], *(per_subtype[name] for name in names)]


def _stacked_bar(ax, position: float, summary: dict, thickness: float) -> None:
    """One model's bar: the outcome shares left to right, each wide one with its number."""
    left = 0.0
    for outcome in OUTCOMES:
        share = summary[outcome]["share"]
        if share > 0:
            ax.barh(position, share, thickness, left=left, color=OUTCOME_COLORS[outcome], edgecolor="white",
                    linewidth=0.6)
            if share >= MIN_SEGMENT_TEXT:  # above the bar's middle: the P-C whisker runs below it
                ax.text(left + share / 2, position - thickness * 0.12, f"{share:.0%}", ha="center", va="center",
                        fontsize=8, color="white")  # no bold: the CJK font has one weight, and matplotlib says so
        left += share
    low, high = summary["P-C"]["ci95"]
    share = summary["P-C"]["share"]
    ax.errorbar([share], [position + thickness * 0.28], xerr=[[max(0.0, share - low)], [max(0.0, high - share)]],
                fmt="none", ecolor=ERROR_BAR_COLOR, elinewidth=1, capsize=3)


def pair_outcome_figure(categories: list[str], series: list[tuple[str, list[dict | None]]], *, title: str,
                        note: str | None = None):
    """Stacked horizontal bars of the pair outcomes: one per model in each category (a matplotlib Figure)."""
    check_series("pair_outcome_chart", categories, series)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, PercentFormatter

    family = use_cjk_font()
    names = chart_names(categories, family, LABEL_COLUMNS)
    labels = [drawable_text(label, family) for label, _ in series]
    several = len(series) > 1
    fig = Figure(figsize=(10.0, max(3.5, 1.8 + len(categories) * (0.35 + 0.32 * len(series)))), dpi=DPI)
    FigureCanvasAgg(fig)  # render with Agg whatever backend the caller's matplotlib is set to
    ax = fig.add_subplot()
    thickness = min(0.8 / len(series), MAX_BAR_THICKNESS)
    for index, (_, summaries) in enumerate(series):
        offset = -thickness * len(series) / 2 + thickness * (index + 0.5)
        for category, summary in enumerate(summaries):
            position = category + offset
            if not summary or not summary["pairs"] or summary.get("all_invalid"):
                text = NOT_APPLICABLE if summary and summary.get("all_invalid") else N_ZERO_TEXT
                ax.text(0.01, position, text, va="center", ha="left", fontsize=8, color="#777777",
                        style="italic")
            else:
                _stacked_bar(ax, position, summary, thickness)
            if several:  # which model this bar is: the category label on the axis names only the category
                ax.text(1.01, position, labels[index], va="center", ha="left", fontsize=8, color="#333333")
    totals = [[(summaries[c] or {}).get("pairs", 0) for _, summaries in series] for c in range(len(categories))]
    ax.set_yticks(range(len(categories)), [category_label(name, totals[c]) for c, name in enumerate(names)])
    ax.set_ylim(len(categories) - 0.5, -0.5)  # all pairs on top
    ax.set_xlim(0, 1.0)
    ax.xaxis.set_major_locator(FixedLocator([0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("配对占比 (share of pairs)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(drawable_text(title, family), fontsize=12, pad=10)
    handles = [Patch(color=OUTCOME_COLORS[o], label=OUTCOME_LABELS[o]) for o in OUTCOMES]
    handles.append(ax.errorbar([], [], xerr=[], fmt="none", ecolor=ERROR_BAR_COLOR, elinewidth=1, capsize=3,
                               label="P-C 的 Wilson 95% 置信区间"))
    _legend_and_note_below(fig, ax, handles, drawable_text(note, family) if note else None)
    return fig


def _legend_and_note_below(fig, ax, handles: list, note: str | None) -> None:
    """The legend under everything the axes draw (tick labels, axis label), the note under the legend:
    placed from the drawn sizes, so neither overlaps whatever the figure's height."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = ax.get_tightbbox(renderer).transformed(fig.transFigure.inverted())
    axes = ax.get_position()
    legend = fig.legend(handles=handles, loc="upper center", bbox_to_anchor=((axes.x0 + axes.x1) / 2, box.y0 - 0.01),
                        ncol=3, frameon=False, fontsize=8)
    if note:
        fig.canvas.draw()
        bottom = legend.get_window_extent(renderer).transformed(fig.transFigure.inverted()).y0
        fig.text(box.x0, bottom - 0.01, note, ha="left", va="top", fontsize=9, linespacing=1.5)


def pair_outcome_chart(path: str | os.PathLike, categories: list[str], series: list[tuple[str, list[dict | None]]],
                       *, title: str, note: str | None = None) -> None:
    """Write the pair-outcome chart as a PNG atomically. ``series``: (model label, one PairSummary per
    category, as ``defect_judge.evaluate.pairs.outcome_summary`` makes them; None or 0 pairs is drawn as n = 0)."""
    save_png(pair_outcome_figure(categories, series, title=title, note=note), path)


def _operating_point(labels: Sequence[int], scores: Sequence[float], threshold: float) -> tuple[float, float]:
    """(FPR, TPR) of calling defective every score >= threshold."""
    from sklearn.metrics import confusion_matrix

    called = [int(score >= threshold) for score in scores]
    tn, fp, fn, tp = confusion_matrix(labels, called, labels=[0, 1]).ravel()
    return fp / (fp + tn), tp / (tp + fn)


def roc_figure(labels: Sequence[int], scores: Sequence[float], *, positive: str, title: str,
               vd_s: Sequence[dict] | None = None, threshold: float | None = None):
    """ROC (with AUC, VD-S points, the threshold's point) beside the precision-recall curve."""
    if not both_classes(labels):
        raise ValueError("roc_chart: the labels hold one class only")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    family = use_cjk_font()
    positive = drawable_text(positive, family)
    fig = Figure(figsize=(11.0, 4.8), dpi=DPI)
    FigureCanvasAgg(fig)
    roc_ax, pr_ax = fig.subplots(1, 2)
    fpr, tpr, _ = roc_curve(labels, scores)
    roc_ax.plot(fpr, tpr, color=COLORS[0], linewidth=1.8, label=f"ROC (AUC = {roc_auc_score(labels, scores):.3f})")
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color=CHANCE_COLOR, linewidth=1, label="随机 (chance)")
    notes = []
    for index, level in enumerate(vd_s or []):
        star = "" if level["meaningful"] else " *"
        roc_ax.plot([level["fpr"]], [level["tpr"]], marker="os"[index % 2], markersize=7, linestyle="none",
                    color=COLORS[3 + index], label=f"VD-S @ FPR ≤ {level['fpr_target']:.1%}: "
                                                   f"{level['fnr']:.1%}{star}")
        if level["note"]:
            notes.append(f"* VD-S @ FPR ≤ {level['fpr_target']:.1%}: {level['note']}")
    if threshold is not None:
        x, y = _operating_point(labels, scores, threshold)
        roc_ax.plot([x], [y], marker="D", markersize=7, linestyle="none", color=COLORS[2],
                    label=f"dev 阈值 (threshold) {threshold:.3g}")
    roc_ax.set_xlabel("假阳性率 FPR")
    roc_ax.set_ylabel(f"真阳性率 TPR ({positive} 的召回率)")
    roc_ax.set_title("ROC 曲线")
    precision, recall, _ = precision_recall_curve(labels, scores)
    pr_ax.plot(recall, precision, color=COLORS[1], linewidth=1.8, drawstyle="steps-post",
               label=f"PR (AP = {average_precision_score(labels, scores):.3f})")
    prevalence = sum(labels) / len(labels)
    pr_ax.axhline(prevalence, linestyle=":", color=CHANCE_COLOR, linewidth=1,
                  label=f"随机 (chance): {prevalence:.1%}")
    pr_ax.set_xlabel("召回率 Recall")
    pr_ax.set_ylabel("精确率 Precision")
    pr_ax.set_title("精确率-召回率曲线 (precision-recall)")
    for ax in (roc_ax, pr_ax):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize=8, frameon=True)
    fig.suptitle(drawable_text(title, family), fontsize=12)
    fig.tight_layout()
    if notes:
        fig.text(0.01, -0.01, drawable_text("\n".join(notes), family), ha="left", va="top", fontsize=8)
    return fig


def roc_chart(path: str | os.PathLike, labels: Sequence[int], scores: Sequence[float], **kwargs) -> None:
    """Write the ROC / precision-recall PNG atomically (arguments as ``roc_figure``)."""
    save_png(roc_figure(labels, scores, **kwargs), path)


def result_charts(output_dir: str | os.PathLike, results: dict) -> list[Path]:
    """Every chart of one evaluation_results.json: subtype accuracy always, pair outcomes when the test
    set has twin pairs, ROC / precision-recall when the samples are scored. A chart that does not apply
    is removed if an earlier run left one, so no stale picture sits beside new results."""
    out = Path(output_dir)
    subtype_accuracy_chart(out / SUBTYPE_ACCURACY_FILE, results)
    written = [out / SUBTYPE_ACCURACY_FILE]
    label = results_label(results)
    pairs = results.get("pairs")
    if pairs and pairs["overall"]["pairs"]:
        categories, summaries = pair_categories(pairs)
        pair_outcome_chart(out / PAIR_OUTCOMES_FILE, categories, [(label, summaries)],
                           title=f"配对结果 (PrimeVul pair outcomes, {results['mode']}, "
                                 f"{pairs['overall']['pairs']} pairs)")
        written.append(out / PAIR_OUTCOMES_FILE)
    positive = (results.get("roc_positive") or {}).get("judgement")
    scored = positive_scores(results["samples"], positive)
    if scored and both_classes(scored[0]):
        decision = results.get("decision") or {}
        roc_chart(out / ROC_FILE, *scored, positive=positive, vd_s=results.get("vd_s"),
                  threshold=decision.get("threshold"),
                  title=f"{label}: {positive} = 有缺陷 (defective), n = {len(scored[0])}")
        written.append(out / ROC_FILE)
    for name in (PAIR_OUTCOMES_FILE, ROC_FILE):
        stale = out / name
        if stale not in written and stale.exists():
            stale.unlink()
            log.info("removed %s of an earlier run (it does not apply to these results)", stale)
    return written
