"""defect_judge/report/result_charts.py on hand-made results: pair_outcomes.png (stacked bars of P-C, P-V, P-B, P-R per
category, one bar per model) and roc_curve.png (ROC with its AUC, the VD-S points and the dev threshold's, beside
the precision-recall curve): they open as PNGs, draw their Chinese labels without glyph warnings, put each share
and operating point where the numbers say, and a chart that no longer applies is removed."""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import pytest
from PIL import Image

from defect_judge.evaluate.pairs import pair_results
from defect_judge.evaluate.results_folder import PAIR_OUTCOMES_FILE, ROC_FILE, SUBTYPE_ACCURACY_FILE
from defect_judge.evaluate.results_table import NOT_APPLICABLE
from defect_judge.evaluate.thresholds import choose_threshold, vd_s_levels
from defect_judge.report.accuracy_bars import N_ZERO_TEXT
from defect_judge.report.fonts import find_cjk_font
from defect_judge.report.result_charts import (ALL_PAIRS, MIN_SEGMENT_TEXT, pair_categories, pair_outcome_figure,
                                               result_charts, roc_figure)
from helpers import HAND_MADE_PAIRS as HAND_MADE, results_of as document


def glyph_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "Glyph" in str(w.message) or "missing from font" in str(w.message)]


@pytest.fixture(autouse=True)
def _restore_rc():
    with matplotlib.rc_context():  # use_cjk_font sets rcParams; keep tests independent
        yield


def assert_png(path: Path, min_width: int = 900) -> None:
    with Image.open(path) as png:
        png.verify()
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width >= min_width and png.height >= 400, (path, png.size)


def test_the_new_charts_open_and_draw_their_cjk_labels_without_glyph_warnings(tmp_path):
    if find_cjk_font() is None:
        pytest.fail("no CJK font installed: run `make setup` (installs fonts-wqy-microhei)")
    scored = [dict(s, probabilities={"是": p, "否": 1 - p}) for s, p in zip(
        HAND_MADE, [0.9, 0.2, 0.8, 0.4, 0.7, 0.6, 0.3, 0.1, 0.45, 0.55, 0.85, 0.5, 0.35, 0.3, 0.95,
                                  0.65, 0.6, 0.25, 0.05])]
    scored = [s | {"prediction": s["prediction"] or "否"} for s in scored]  # score mode has no invalid answers
    results = document(scored, mode="score", threshold=choose_threshold(
        [int(s["reference"] == "是") for s in scored], [s["probabilities"]["是"] for s in scored]) | {"source": "dev"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = result_charts(tmp_path, results)
        categories, summaries = pair_categories(results["pairs"])
        pair_fig = pair_outcome_figure(categories, [("基线模型", summaries), ("LoRA 微调", summaries)],
                                       title="配对结果对比", note="McNemar 配对检验")
        pair_fig.canvas.draw()
        roc_fig = roc_figure([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6], positive="是", title="ROC 曲线")
        roc_fig.canvas.draw()
    assert glyph_warnings(caught) == []
    assert [p.name for p in written] == [SUBTYPE_ACCURACY_FILE, PAIR_OUTCOMES_FILE, ROC_FILE]
    for path in written:
        assert_png(path)
    labels = [t.get_text() for t in pair_fig.axes[0].get_yticklabels()]
    assert labels[0] == f"{ALL_PAIRS} (n=7)" and "空指针解引用 (n=3)" in labels and "资源泄漏 (n=4)" in labels
    texts = [t.get_text() for t in pair_fig.axes[0].texts]
    assert "基线模型" in texts and "LoRA 微调" in texts  # each bar names its model
    assert [ax.get_title() for ax in roc_fig.axes] == ["ROC 曲线", "精确率-召回率曲线 (precision-recall)"]
    legend = [t.get_text() for t in roc_fig.axes[0].get_legend().get_texts()]
    assert legend[0] == "ROC (AUC = 0.750)"  # defective 0.9, 0.4 vs clean 0.2, 0.6: 3 of 4 pairs ordered
    # generate-mode results of the same folder: the ROC chart no longer applies and is removed
    rewritten = result_charts(tmp_path, document(HAND_MADE))
    assert [p.name for p in rewritten] == [SUBTYPE_ACCURACY_FILE, PAIR_OUTCOMES_FILE]
    assert not (tmp_path / ROC_FILE).exists()


# ------------------------------------------------------------------ what the bars and points say

def test_each_bar_is_split_into_the_outcome_shares_of_its_category():
    """All pairs first, then the subtypes with the most pairs; a bar's segments are its P-C, P-V, P-B, P-R shares
    left to right (an empty one not drawn), each wide enough one with its number."""
    categories, summaries = pair_categories(pair_results(HAND_MADE, "是", "否"))
    assert categories == [ALL_PAIRS, "资源泄漏", "空指针解引用"]  # 4 pairs before 3; 除零错误 has none
    fig = pair_outcome_figure(categories, [("LoRA", summaries)], title="配对结果")
    ax = fig.axes[0]
    bars: dict[int, list[tuple[float, float]]] = {}
    for patch in ax.patches:
        bars.setdefault(round(patch.get_y() + patch.get_height() / 2), []).append((patch.get_x(), patch.get_width()))
    widths = {category: [width for _, width in sorted(segments)] for category, segments in bars.items()}
    # all pairs: 2, 2, 2, 1 of 7; 资源泄漏: P-V 1, P-B 2, P-R 1 of 4; 空指针解引用: P-C 2, P-V 1 of 3
    assert widths[0] == pytest.approx([2 / 7, 2 / 7, 2 / 7, 1 / 7])
    assert widths[1] == pytest.approx([1 / 4, 2 / 4, 1 / 4]) and widths[2] == pytest.approx([2 / 3, 1 / 3])
    assert all(sum(w) == pytest.approx(1.0) for w in widths.values())
    numbers = sorted(t.get_text() for t in ax.texts if t.get_text().endswith("%"))
    assert numbers == sorted(["29%", "29%", "29%", "14%", "25%", "50%", "25%", "67%", "33%"])
    assert 1 / 7 >= MIN_SEGMENT_TEXT  # so even the narrowest segment here carries its number


def test_a_category_without_pairs_or_without_a_valid_answer_is_said_not_drawn():
    summaries = pair_categories(pair_results(HAND_MADE, "是", "否"))[1]
    failed = dict(summaries[1], all_invalid=True)
    fig = pair_outcome_figure(["全部", "资源泄漏", "空指针解引用"], [("A", [summaries[0], failed, None])], title="t")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert NOT_APPLICABLE in texts and N_ZERO_TEXT in texts
    assert len(fig.axes[0].patches) == 4  # only the first category's bar is drawn
    with pytest.raises(ValueError, match="one class only"):
        roc_figure([1, 1], [0.2, 0.9], positive="是", title="t")


def test_the_roc_chart_marks_vd_s_and_the_dev_threshold_where_they_operate():
    labels, scores = [1, 1, 1, 0, 0, 0, 0], [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]
    levels = vd_s_levels(labels, scores, [0.005, 0.25])
    fig = roc_figure(labels, scores, positive="是", title="ROC", vd_s=levels, threshold=0.35)
    roc_ax = fig.axes[0]
    points = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in roc_ax.get_lines()}
    # 0.5%: no false positive allowed (4 clean samples): threshold 0.8, 2 of 3 defects -> miss rate 33.3%, marked *
    assert points["VD-S @ FPR ≤ 0.5%: 33.3% *"] == ([0.0], [pytest.approx(2 / 3)])
    assert points["VD-S @ FPR ≤ 25.0%: 0.0%"] == ([0.25], [1.0])
    # the threshold 0.35 calls 0.9, 0.8, 0.4 and the clean 0.7 defective: TPR 1, FPR 1/4
    assert points["dev 阈值 (threshold) 0.35"] == ([0.25], [1.0])
    notes = [t.get_text() for t in fig.texts]
    assert any(text.startswith("* VD-S @ FPR ≤ 0.5%: too few clean samples") for text in notes), notes
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["PR (AP = 0.917)", "随机 (chance): 42.9%"]  # 3 defective of 7
