"""defect_judge/report/fonts.py against matplotlib's own font list: the CJK font it finds holds the glyphs of the
charts' Chinese labels and makes matplotlib draw them without a missing-glyph warning (its defaults do warn); the
list's first installed family is the one chosen; and a matplotlib that knows no CJK font (none installed, or a font
cache written before one was) gets one warning with the install hint, its settings left as they were.

A matplotlib without a CJK font is a real one started in a process of its own on a font cache that lists the fonts
of this machine less the CJK ones, the state ``INSTALL_HINT`` tells a user to clear."""
from __future__ import annotations

import json
import warnings

import matplotlib
import pytest
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font

from defect_judge.report.fonts import CJK_FONT_FAMILIES, INSTALL_HINT, find_cjk_font, use_cjk_font
from helpers import PYTHON, run_script

LABELS = "空指针解引用 资源泄漏 除零错误 配对结果 两者皆对 真阳性率 精确率-召回率曲线"


@pytest.fixture(autouse=True)
def _restore_rc():
    """Each test starts from matplotlib's own defaults (an earlier test module may have called use_cjk_font, which
    sets rcParams for the process) and leaves the rcParams as it found them."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        yield


@pytest.fixture(scope="module")
def cjk_family() -> str:
    family = find_cjk_font()
    if family is None:
        pytest.fail("no CJK font installed: run `make setup` (installs fonts-wqy-microhei)")
    return family


def glyph_warnings_drawing(text: str) -> list[str]:
    """The missing-glyph warnings of drawing ``text`` as a title above an axis with negative ticks."""
    fig = Figure(figsize=(6, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([-2, 2], [-1, 1])
    ax.set_title(text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    return [str(w.message) for w in caught if "Glyph" in str(w.message) or "missing from font" in str(w.message)]


def test_the_font_found_holds_every_glyph_of_the_chinese_labels(cjk_family):
    assert cjk_family in CJK_FONT_FAMILIES
    font = FT2Font(font_manager.findfont(font_manager.FontProperties(family=cjk_family), fallback_to_default=False))
    missing = [ch for ch in LABELS if not ch.isspace() and font.get_char_index(ord(ch)) == 0]
    assert missing == [], (cjk_family, missing)


def test_matplotlib_draws_chinese_with_it_and_warns_without_it(cjk_family):
    assert glyph_warnings_drawing(LABELS)  # matplotlib's own default font has no Chinese: boxes, and it says so
    assert use_cjk_font() == cjk_family
    assert matplotlib.rcParams["font.sans-serif"][0] == cjk_family
    assert matplotlib.rcParams["font.family"] == ["sans-serif"] and matplotlib.rcParams["axes.unicode_minus"] is False
    assert glyph_warnings_drawing(LABELS) == []  # the minus sign too: the CJK font has no U+2212
    found = font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]), fallback_to_default=False)
    assert found == font_manager.findfont(font_manager.FontProperties(family=cjk_family))


# ------------------------------------------------------------------ other machines' font lists

def matplotlib_knowing(tmp_path, cjk_families: tuple[str, ...] = ()) -> dict:
    """The environment of a matplotlib whose font cache lists this machine's fonts less every CJK family, plus the CJK
    font found here under each name of ``cjk_families``: a machine with those installed (none: a machine without)."""
    cache = tmp_path / f"fontlist-v{font_manager.FontManager.__version__}.json"
    font_manager.json_dump(font_manager.fontManager, cache)
    data = json.loads(cache.read_text(encoding="utf-8"))
    found = [entry for entry in data["ttflist"] if entry["name"] == find_cjk_font()]
    assert found
    data["ttflist"] = [entry for entry in data["ttflist"] if entry["name"] not in CJK_FONT_FAMILIES]
    data["ttflist"] += [dict(entry, name=name) for name in cjk_families for entry in found]
    cache.write_text(json.dumps(data), encoding="utf-8")
    return {"MPLCONFIGDIR": str(tmp_path)}


def in_that_matplotlib(env: dict, expression: str):
    code = ("import json, logging; logging.basicConfig(format='%(levelname)s %(message)s'); import matplotlib; "
            f"from defect_judge.report.fonts import find_cjk_font, use_cjk_font; print(json.dumps({expression}))")
    result = run_script(PYTHON, "-c", code, env=env, timeout=120, check=True)
    return json.loads(result.stdout), result.stderr


def test_without_a_cjk_font_it_warns_once_with_the_install_hint_and_changes_nothing(tmp_path, cjk_family):
    values, stderr = in_that_matplotlib(
        matplotlib_knowing(tmp_path),
        "[find_cjk_font(), use_cjk_font(), use_cjk_font(), matplotlib.rcParams['font.sans-serif'][0], "
        "matplotlib.rcParams['axes.unicode_minus']]")
    assert values == [None, None, None, "DejaVu Sans", True]
    warned = [line for line in stderr.splitlines() if line.startswith("WARNING")]
    assert len(warned) == 1 and "no CJK font found" in warned[0] and INSTALL_HINT in warned[0], stderr


@pytest.mark.parametrize("installed, chosen", [
    (("WenQuanYi Micro Hei", "Noto Sans CJK SC"), "Noto Sans CJK SC"),  # the list's first
    (("Arial Unicode MS", "WenQuanYi Micro Hei"), "WenQuanYi Micro Hei"),  # Arial Unicode MS: its last resort
    (("Arial Unicode MS",), "Arial Unicode MS"),
])
def test_the_lists_first_installed_family_is_chosen(tmp_path, cjk_family, installed, chosen):
    values, stderr = in_that_matplotlib(matplotlib_knowing(tmp_path, installed), "[find_cjk_font(), use_cjk_font()]")
    assert values == [chosen, chosen] and "WARNING" not in stderr
