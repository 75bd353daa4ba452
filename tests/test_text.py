"""defect_judge/text.py: widths as a terminal shows them, so tables of Chinese subtype names line up."""
from __future__ import annotations

from defect_judge.text import display_width, pad_to


def test_wide_characters_take_two_columns():
    assert display_width("abc") == 3
    assert display_width("空指针") == 6 and display_width("总体 overall") == 12
    assert display_width("") == 0


def test_padding_lines_up_mixed_text_and_never_cuts():
    rows = [pad_to(name, 10) + "|" for name in ("空指针", "overflow", "越界 read")]
    assert {display_width(row) for row in rows} == {11}
    assert pad_to("越界访问越界访问", 4) == "越界访问越界访问"
