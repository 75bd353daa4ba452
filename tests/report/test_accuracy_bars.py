"""defect_judge.report.accuracy_bars: the accuracy bar chart shared by evaluation and comparison."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import matplotlib
import matplotlib.image
import pytest
from matplotlib.patches import Rectangle
from PIL import Image

from defect_judge.report.fonts import find_cjk_font
from defect_judge.report.accuracy_bars import DPI, N_ZERO_TEXT, accuracy_bar_chart, accuracy_figure, category_label
from defect_judge.evaluate.metrics import summary

MANY_SUBTYPES = ["空指针解引用", "资源泄漏", "数组越界", "除零错误", "未初始化变量", "整数溢出",
                 "并发竞争条件与死锁", "内存重复释放"]
VALUE_LABEL = re.compile(r"^\d+\.\d%$")


def summary_of(correct: int, total: int) -> dict:
    """A Summary made by the real results code from ``total`` samples, ``correct`` of them right."""
    return summary([{"correct": i < correct, "prediction": "是"} for i in range(total)])


def glyph_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "missing from font" in str(w.message) or "Glyph" in str(w.message)]


def drawn_bars(fig) -> list[Rectangle]:
    """The bars with a size (an empty series keeps a zero-size bar only for its legend entry)."""
    ax = fig.axes[0]
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_width() > 0 and p.get_height() > 0]


def texts(fig) -> list:
    return list(fig.axes[0].texts)


def test_category_label_shows_n_and_each_models_n_when_they_differ():
    assert category_label("空指针解引用", [12, 12]) == "空指针解引用 (n=12)"
    assert category_label("空指针解引用", [12, 10]) == "空指针解引用 (n=12/10)"
    assert category_label("资源泄漏", [3], multiline=True) == "资源泄漏\n(n=3)"


@pytest.fixture(autouse=True)
def _restore_rc():
    with matplotlib.rc_context():  # use_cjk_font sets rcParams; keep tests independent
        yield


def test_single_model_many_categories_is_horizontal_png_with_cjk_and_n0(tmp_path: Path):
    if find_cjk_font() is None:
        pytest.fail("no CJK font installed: run `make setup` (installs fonts-wqy-microhei)")
    summaries = [summary_of(5, 12), summary_of(3, 9), summary_of(7, 8), summary_of(0, 0),
                 summary_of(2, 5), summary_of(1, 4), summary_of(3, 3), summary_of(0, 2)]
    path = tmp_path / "charts" / "subtype_accuracy.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accuracy_bar_chart(path, MANY_SUBTYPES, [("SmolLM2-135M-Instruct", summaries)], title="各缺陷类型准确率",
                           reference_lines=[("多数类基线", 0.55)])
    assert glyph_warnings(caught) == []
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert width >= 1200 and height >= 700  # 9 x 5.6 inches at 150 dpi, less the trimmed margins
    assert image[..., :3].std() > 0.05  # something is drawn
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert round(png.info["dpi"][0]) >= 150
    assert [p.name for p in path.parent.iterdir()] == ["subtype_accuracy.png"]  # no temp file left behind

    fig = accuracy_figure(MANY_SUBTYPES, [("SmolLM2-135M-Instruct", summaries)], title="各缺陷类型准确率")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "空指针解引用 (n=12)" and labels[3] == "除零错误 (n=0)"  # given order, top first
    bars = drawn_bars(fig)
    # horizontal: bars differ in width (the accuracy), share one height; 0% (0 of 2) and n = 0 have no bar
    assert len(bars) == 6 and len({round(b.get_height(), 6) for b in bars}) == 1
    assert sorted(round(b.get_width(), 3) for b in bars) == sorted(
        round(s["accuracy"], 3) for s in summaries if s["total"] and s["correct"])
    assert [t.get_text() for t in texts(fig)].count(N_ZERO_TEXT) == 1
    values = [t.get_text() for t in texts(fig) if VALUE_LABEL.match(t.get_text())]
    assert len(values) == 7 and "41.7%" in values and "0.0%" in values  # 0 of 2 is a measured 0%, not n = 0
    zero_label = next(t for t in texts(fig) if t.get_text() == N_ZERO_TEXT)
    assert zero_label.get_position()[1] == pytest.approx(3)  # on the 除零错误 row


def test_few_short_categories_are_vertical_and_error_bars_are_wilson():
    fig = accuracy_figure(["是", "否"], [("base", [summary_of(6, 10), summary_of(9, 10)])], title="t")
    bars = drawn_bars(fig)
    assert len(bars) == 2 and len({round(b.get_width(), 6) for b in bars}) == 1  # vertical: equal widths
    assert [round(b.get_height(), 3) for b in bars] == [0.6, 0.9]
    # the whisker ends are the Wilson interval of the summary
    lines = [c for c in fig.axes[0].collections if len(c.get_segments()) == 2]
    ends = sorted(round(y, 3) for seg in lines[0].get_segments() for _, y in seg)
    expected = sorted(round(v, 3) for s in (summary_of(6, 10), summary_of(9, 10)) for v in s["ci95"])
    assert ends == expected
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["是\n(n=10)", "否\n(n=10)"]


def test_forced_orientation_and_per_model_n_zero():
    fig = accuracy_figure(["空指针解引用", "资源泄漏"],
                          [("a", [summary_of(3, 4), summary_of(0, 0)]), ("b", [summary_of(4, 4), summary_of(1, 2)])],
                          title="t", horizontal=True)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["空指针解引用 (n=4)", "资源泄漏 (n=0/2)"]
    assert len(drawn_bars(fig)) == 3
    assert [t.get_text() for t in texts(fig)].count(N_ZERO_TEXT) == 1


def test_labels_do_not_overlap_and_legend_is_outside_the_data(tmp_path: Path):
    series = [("qwen_instruct_lora_finetuned_0401/checkpoint-140", [summary_of(5, 12), summary_of(3, 9), summary_of(8, 8)]),
              ("Qwen2.5-Coder-7B-Instruct", [summary_of(9, 12), summary_of(6, 9), summary_of(8, 8)]),
              ("qwen_full_finetuned_0402/checkpoint-140", [summary_of(10, 12), summary_of(4, 9), summary_of(7, 8)])]
    for categories, horizontal in ((["空指针", "资源泄漏", "数组越界"], None), (MANY_SUBTYPES[:3], True)):
        fig = accuracy_figure(categories, series, title="模型对比", note="McNemar: fixed 8, broken 2, p = 0.1094")
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        boxes = [t.get_window_extent(renderer) for t in texts(fig) if VALUE_LABEL.match(t.get_text())]
        assert len(boxes) == 9
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), f"value labels overlap ({horizontal=})"
        ticks = [t.get_window_extent(renderer) for t in (ax.get_yticklabels() if horizontal else ax.get_xticklabels())]
        for i, a in enumerate(ticks):
            for b in ticks[i + 1:]:
                assert not a.overlaps(b), "category labels overlap"
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.x0 > ax.get_window_extent(renderer).x1  # right of the plotting area
        note = fig.texts[0].get_window_extent(renderer)
        assert note.y1 < ax.get_tightbbox(renderer).y0 + 1  # under the tick labels, not over them


def test_missing_font_would_be_detected(tmp_path: Path, monkeypatch):
    """Control for the glyph check above: without a CJK font matplotlib does warn."""
    import defect_judge.report.accuracy_bars as plotting

    def latin_only_font():
        matplotlib.rcParams["font.sans-serif"] = ["DejaVu Sans"]
        matplotlib.rcParams["font.family"] = "sans-serif"

    monkeypatch.setattr(plotting, "use_cjk_font", latin_only_font)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accuracy_bar_chart(tmp_path / "boxes.png", ["空指针解引用"], [("m", [summary_of(1, 2)])], title="t")
    assert glyph_warnings(caught)


def test_bad_series_is_refused_and_previous_image_kept(tmp_path: Path):
    path = tmp_path / "chart.png"
    accuracy_bar_chart(path, ["是"], [("m", [summary_of(1, 2)])], title="first")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="2 summaries for 1 categories"):
        accuracy_bar_chart(path, ["是"], [("m", [summary_of(1, 2), summary_of(1, 2)])], title="second")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["chart.png"]
    assert DPI >= 150
