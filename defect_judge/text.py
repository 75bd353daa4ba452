"""Text as a terminal shows it: wide (CJK) characters take two columns, so tables of Chinese subtype names line up."""
from __future__ import annotations

import unicodedata


def display_width(text: str) -> int:
    """Width in monospace columns: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad_to(text: str, width: int) -> str:
    """``text`` followed by spaces up to ``width`` columns (none when it is already as wide)."""
    return text + " " * max(0, width - display_width(text))
