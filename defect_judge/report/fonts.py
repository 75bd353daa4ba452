"""Find an installed CJK font so Chinese subtype names render as characters, not boxes."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CJK_FONT_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Serif CJK SC", "Noto Sans SC",
    "Source Han Sans SC", "Source Han Sans CN", "Source Han Sans",
    "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback", "AR PL UMing CN", "AR PL UKai CN",
    "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Hiragino Sans GB", "Arial Unicode MS",
)
INSTALL_HINT = ("install one, e.g. `sudo apt-get install fonts-wqy-microhei` (Debian/Ubuntu), "
                "`sudo dnf install google-noto-sans-cjk-fonts` (Fedora) or `brew install --cask font-noto-sans-cjk` (macOS), "
                "then delete matplotlib's font cache (~/.cache/matplotlib)")
_warned = False


def find_cjk_font() -> str | None:
    """Name of the first installed CJK font family matplotlib knows, else None."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((family for family in CJK_FONT_FAMILIES if family in installed), None)


def use_cjk_font() -> str | None:
    """Make matplotlib draw CJK text with an installed font; warn once if there is none."""
    global _warned
    import matplotlib

    family = find_cjk_font()
    if family is None:
        if not _warned:
            log.warning("no CJK font found: Chinese labels would render as boxes; %s", INSTALL_HINT)
            _warned = True
        return None
    matplotlib.rcParams["font.sans-serif"] = [family, "DejaVu Sans"]
    matplotlib.rcParams["font.family"] = "sans-serif"
    matplotlib.rcParams["axes.unicode_minus"] = False
    return family
