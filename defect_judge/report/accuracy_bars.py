"""Accuracy bar charts with sample sizes and Wilson 95% intervals.

One chart primitive shared by ``eval/model_evaluation.py`` (``subtype_accuracy.png``,
one model) and ``eval/plot_subtype_acc.py`` (the comparison charts, several
models). A reader should never have to guess how many samples stand behind a
bar, so every category label carries its n and every bar its value and interval.
"""
from __future__ import annotations

import functools
import os
import re
import unicodedata
from pathlib import Path
from typing import Sequence

from defect_judge.evaluate.verdicts import display_label, source_of_results
from defect_judge.fileio import atomic_open
from defect_judge.report.fonts import use_cjk_font
from defect_judge.text import display_width

DPI = 150
# Above this many categories, or with names wider than this (CJK characters
# count twice), vertical bars would need rotated labels: draw horizontal ones.
MAX_VERTICAL_CATEGORIES = 6
MAX_VERTICAL_NAME_WIDTH = 12
# Room to the right of (or above) 100% for the value labels beyond the error bars.
AXIS_LIMIT = 1.16
COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD")
REFERENCE_STYLES = ("--", ":", "-.")
N_ZERO_TEXT = "n = 0"
MAX_BAR_THICKNESS = 0.5  # of a category slot
ERROR_BAR_COLOR = "#333333"
# A category name is wrapped to at most this many lines of this many columns (CJK characters count
# two), the last cut with "…": a 100-character subtype must not push the bars into a third of the
# image. The full names are in the results and the Markdown summary.
LABEL_COLUMNS = 24
LABEL_LINES = 2
FALLBACK_FONT = "DejaVu Sans"  # matplotlib's own, after the CJK font (fonts.use_cjk_font)
MISSING_LETTER = "□"  # stands for a letter no font has (an emoji or symbol is dropped instead)


@functools.lru_cache(maxsize=None)
def _codepoints(font_path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(font_path).get_charmap())


def _drawable_codepoints(cjk_family: str | None) -> frozenset[int]:
    """Every character the fonts the charts use (the CJK font, then matplotlib's own) can draw."""
    from matplotlib import font_manager

    families = [f for f in (cjk_family, FALLBACK_FONT) if f]
    paths = {font_manager.findfont(font_manager.FontProperties(family=f)) for f in families}
    return frozenset().union(*(_codepoints(path) for path in paths))


def drawable_text(text: str, cjk_family: str | None) -> str:
    """``text`` with the characters no font has replaced: an emoji or symbol (🐛, 🔥, a variation
    selector) is dropped, a letter becomes □. matplotlib would draw a box for each and warn
    "Glyph ... missing" once per draw."""
    available = _drawable_codepoints(cjk_family)
    kept = []
    for ch in text:
        if ord(ch) in available or ch in "\n ":
            kept.append(ch)
        elif unicodedata.category(ch)[0] in "LN":
            kept.append(MISSING_LETTER)
    lines = (re.sub(r" {2,}", " ", line).strip() for line in "".join(kept).split("\n"))
    return "\n".join(lines).strip() or "?"


def wrap_label(name: str, columns: int = LABEL_COLUMNS, max_lines: int = LABEL_LINES) -> str:
    """``name`` in lines of at most ``columns`` display columns, broken at a space where there is one
    (CJK text breaks anywhere); past ``max_lines`` the last line ends in "…"."""
    lines, line = [], ""
    for ch in " ".join(name.split()):
        if display_width(line + ch) > columns:
            cut = line.rfind(" ") if ch != " " else -1
            lines.append(line[:cut] if cut > 0 else line)
            line = line[cut + 1:] if cut > 0 else ""
            if ch == " ":
                continue
        line += ch
    lines = [text.strip() for text in [*lines, line] if text.strip()]
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while display_width(last + "…") > columns:
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last.rstrip() + "…"]
    return "\n".join(lines)


def chart_names(categories: Sequence[str], cjk_family: str | None, columns: int = LABEL_COLUMNS) -> list[str]:
    """The category names as drawn: drawable, wrapped; two names that end up alike get #1, #2."""
    names = [wrap_label(drawable_text(name, cjk_family), columns) for name in categories]
    counts, seen = {n: names.count(n) for n in names}, {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(f"{name} #{seen[name]}" if counts[name] > 1 else name)
    return unique


def category_label(name: str, totals: Sequence[int], *, multiline: bool = False) -> str:
    """``空指针解引用 (n=12)``; each model's n (``n=12/10``) when they differ."""
    counts = str(totals[0]) if len(set(totals)) == 1 else "/".join(str(t) for t in totals)
    separator = "\n" if multiline else " "
    return f"{name}{separator}(n={counts})"


def _total(summary: dict | None) -> int:
    return int(summary["total"]) if summary else 0


def _auto_horizontal(categories: Sequence[str]) -> bool:
    return (len(categories) > MAX_VERTICAL_CATEGORIES
            or max(display_width(name) for name in categories) > MAX_VERTICAL_NAME_WIDTH)


def _figure_size(n_categories: int, n_series: int, horizontal: bool) -> tuple[float, float]:
    # Scale with the number of bars so value labels never run into each other.
    if horizontal:
        return 9.0, max(3.5, 1.6 + n_categories * (0.3 + 0.28 * n_series))
    return max(8.0, 1.5 + n_categories * max(1.3, 0.4 + 0.6 * n_series)), 5.5


def _n_zero_label(ax, position: float, horizontal: bool, *, narrow: bool) -> None:
    """Say "n = 0" where the bar would be, rather than draw a misleading zero bar."""
    style = {"fontsize": 8 if narrow else 9, "color": "#777777", "style": "italic"}
    if horizontal:
        ax.text(0.01, position, N_ZERO_TEXT, va="center", ha="left", **style)
    else:  # one bar of several is too narrow for the text lying down
        ax.text(position, 0.02, N_ZERO_TEXT, va="bottom", ha="center", rotation=90 if narrow else 0, **style)


def _draw_series(ax, positions: list[float | None], summaries: Sequence[dict | None], *, label: str, color: str,
                 thickness: float, horizontal: bool) -> None:
    """One model's bars; a ``None`` position is a category already labelled empty for all models."""
    drawn = [(p, s) for p, s in zip(positions, summaries) if p is not None and _total(s) > 0]
    values = [s["accuracy"] for _, s in drawn]
    errors = [[max(0.0, s["accuracy"] - s["ci95"][0]) for _, s in drawn],
              [max(0.0, s["ci95"][1] - s["accuracy"]) for _, s in drawn]]
    error_bars = {"xerr" if horizontal else "yerr": errors} if drawn else {}
    # With nothing to draw, an invisible zero bar still gives the model its legend entry.
    (ax.barh if horizontal else ax.bar)([p for p, _ in drawn] or [0.0], values or [0.0], thickness, color=color,
                                        label=label, error_kw={"ecolor": ERROR_BAR_COLOR, "elinewidth": 1,
                                                               "capsize": 3}, **error_bars)
    for (position, summary), value in zip(drawn, values):
        end = summary["ci95"][1] + 0.012  # beyond the whisker, so the two never overlap
        # a white box keeps grid and reference lines from crossing out the number
        style = {"fontsize": 8, "bbox": {"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.85}}
        if horizontal:
            ax.text(end, position, f"{value:.1%}", va="center", ha="left", **style)
        else:
            ax.text(position, end, f"{value:.1%}", va="bottom", ha="center", **style)
    for position, summary in zip(positions, summaries):
        if position is not None and _total(summary) == 0:
            _n_zero_label(ax, position, horizontal, narrow=True)


def _add_note(fig, ax, note: str) -> None:
    """Put ``note`` under everything the axes draw (tick labels included)."""
    fig.canvas.draw()
    box = ax.get_tightbbox(fig.canvas.get_renderer()).transformed(fig.transFigure.inverted())
    fig.text(box.x0, box.y0 - 0.015, note, ha="left", va="top", fontsize=9, linespacing=1.5)


def check_series(chart: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence]]) -> None:
    """A chart needs categories, series, and one summary per category in every series."""
    if not categories:
        raise ValueError(f"{chart}: no categories to draw")
    if not series:
        raise ValueError(f"{chart}: no series to draw")
    for label, summaries in series:
        if len(summaries) != len(categories):
            raise ValueError(f"{chart}: series {label!r} has {len(summaries)} summaries "
                             f"for {len(categories)} categories")


def accuracy_figure(categories: list[str], series: list[tuple[str, list[dict]]], *, title: str,
                    reference_lines: list[tuple[str, float]] | None = None, note: str | None = None,
                    horizontal: bool | None = None):
    """The chart of ``accuracy_bar_chart`` as a matplotlib ``Figure`` (Agg canvas), not yet saved."""
    check_series("accuracy_bar_chart", categories, series)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, PercentFormatter

    family = use_cjk_font()
    if horizontal is None:
        horizontal = _auto_horizontal(categories)
    names = chart_names(categories, family, LABEL_COLUMNS if horizontal else MAX_VERTICAL_NAME_WIDTH)
    series = [(drawable_text(label, family), summaries) for label, summaries in series]
    title = drawable_text(title, family)
    note = drawable_text(note, family) if note else note
    reference_lines = [(drawable_text(label, family), value) for label, value in reference_lines or []]
    fig = Figure(figsize=_figure_size(len(categories), len(series), horizontal), dpi=DPI)
    FigureCanvasAgg(fig)  # render with Agg whatever backend the caller's matplotlib is set to
    ax = fig.add_subplot()

    # Bars share 80% of a category's slot; a lone bar stays slim rather than a block.
    thickness = min(0.8 / len(series), MAX_BAR_THICKNESS)
    group = thickness * len(series)
    margin = 0.5 if len(categories) == 1 else 0.0  # one category: keep its bars from filling the width
    all_empty = [c for c in range(len(categories)) if all(_total(s[c]) == 0 for _, s in series)]
    for index, (label, summaries) in enumerate(series):
        offset = -group / 2 + thickness * (index + 0.5)
        positions = [None if c in all_empty else c + offset for c in range(len(categories))]
        _draw_series(ax, positions, summaries, label=label,
                     color=COLORS[index % len(COLORS)], thickness=thickness, horizontal=horizontal)
    for category in all_empty:
        _n_zero_label(ax, category, horizontal, narrow=False)
    for index, (label, value) in enumerate(reference_lines or []):
        line = ax.axvline if horizontal else ax.axhline
        line(value, color="#555555", linewidth=1, linestyle=REFERENCE_STYLES[index % len(REFERENCE_STYLES)],
             label=f"{label}: {value:.1%}")

    labels = [category_label(name, [_total(s[i]) for _, s in series], multiline=not horizontal)
              for i, name in enumerate(names)]
    value_axis = ax.xaxis if horizontal else ax.yaxis
    value_axis.set_major_locator(FixedLocator([0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    value_axis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    if horizontal:
        ax.set_yticks(range(len(categories)), labels)
        ax.set_ylim(len(categories) - 0.5 + margin, -0.5 - margin)  # first category on top, as a reader reads
        ax.set_xlim(0, AXIS_LIMIT)
        ax.set_xlabel("准确率")
        ax.grid(axis="x", alpha=0.3)
    else:
        ax.set_xticks(range(len(categories)), labels)
        ax.set_xlim(-0.5 - margin, len(categories) - 0.5 + margin)
        ax.set_ylim(0, AXIS_LIMIT)
        ax.set_ylabel("准确率")
        ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, fontsize=12, pad=10)
    # An empty error bar only to explain the whiskers in the legend.
    ax.errorbar([], [], **{"xerr" if horizontal else "yerr": []}, fmt="none", ecolor=ERROR_BAR_COLOR,
                elinewidth=1, capsize=3, label="Wilson 95% 置信区间")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)  # outside the data
    if note:
        _add_note(fig, ax, note)
    return fig


def accuracy_bar_chart(path: str | os.PathLike, categories: list[str], series: list[tuple[str, list[dict]]], *,
                       title: str, reference_lines: list[tuple[str, float]] | None = None, note: str | None = None,
                       horizontal: bool | None = None) -> None:
    """Draw accuracy per category for one or more models and write a PNG atomically.

    ``series``: (model label, one Summary per category, as ``defect_judge.evaluate.metrics.summary``
    makes them: accuracy, correct, total, ci95); ``None`` or total 0 is drawn as "n = 0".
    Categories keep the given order. ``reference_lines``: (label, accuracy), e.g. the
    majority-class rate. ``note``: text under the chart (e.g. significance tests).
    ``horizontal``: None chooses horizontal bars for many categories or long names.
    """
    save_png(accuracy_figure(categories, series, title=title, reference_lines=reference_lines, note=note,
                             horizontal=horizontal), path)


def save_png(fig, path: str | os.PathLike, *, pad_inches: float = 0.25) -> None:
    """Write a figure as PNG atomically: a temp file beside ``path``, renamed over it when complete."""
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=DPI, bbox_inches="tight", pad_inches=pad_inches)


def model_label(model_path: str) -> str:
    """The model path's last two parts: enough to tell runs and checkpoints apart."""
    parts = Path(model_path).resolve().parts
    return "/".join(parts[-2:])


def results_label(results: dict) -> str:
    """The model of a results file as a chart names it: its path's last two parts, and "+ head" when a
    verdict head decided (verdicts.py)."""
    return display_label(model_label(results["model_path"]), source_of_results(results))


def subtype_accuracy_chart(path: str | os.PathLike, results: dict) -> None:
    """``subtype_accuracy.png`` of one ``evaluation_results.json``: accuracy per subtype, most samples first."""
    per_subtype = results["per_subtype"]
    categories = sorted(per_subtype, key=lambda name: (-per_subtype[name]["total"], name))
    overall = results["overall"]
    accuracy_bar_chart(path, categories, [(results_label(results), [per_subtype[c] for c in categories])],
                       title=f"各缺陷类型准确率 ({results['mode']}, n={overall['total']})",
                       reference_lines=[("总体准确率", overall["accuracy"])])
