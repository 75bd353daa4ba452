"""defect_judge/data/labels.py: which records are labelled, the judgement vocabulary, the positive judgement and
the majority class; one rule each, which the evaluation, the benchmark, the baseline and the probe share."""
from __future__ import annotations

import pytest

from defect_judge.data.labels import (is_labelled, judgement_vocabulary, labelled_records, majority_class,
                                      positive_judgement, two_classes)
from defect_judge.data.schema import read_records
from defect_judge.errors import InputError
from helpers import make_records, write_records


def test_positive_judgement_rule():
    assert positive_judgement(["否", "是"])[0] == "是"
    assert positive_judgement(["无缺陷", "有缺陷"])[0] == "有缺陷"
    assert positive_judgement(["存在问题", "不存在问题"])[0] == "存在问题"
    assert positive_judgement(["no", "yes"])[0] == "yes"
    assert positive_judgement(["alpha", "beta"]) == ("alpha", "lexicographically first (no rule matched)")
    assert positive_judgement(["是", "否", "不确定"])[0] is None
    assert two_classes(["否", "是"]) == ("是", "否") and two_classes(["是"]) is None


def test_the_vocabulary_adds_the_partner_of_a_known_pair_only():
    assert judgement_vocabulary(["是", "是"]) == ["否", "是"]  # a one-class test set: 否 is wrong, not invalid
    assert judgement_vocabulary(["有缺陷", None]) == ["无缺陷", "有缺陷"]  # an unlabelled record adds nothing
    assert judgement_vocabulary(["可能"]) == ["可能"]
    assert judgement_vocabulary([]) == []


def test_majority_class_share_and_ties():
    assert majority_class(["是", "否", "是"]) == ("是", pytest.approx(2 / 3))
    assert majority_class(["是", "否"]) == ("否", 0.5)  # a tie goes to the smallest value
    assert majority_class([1, 0, 1, 1]) == (1, 0.75)
    assert majority_class([]) == (None, 0.0)


def unlabelled_file(tmp_path, *missing: int):
    rows = make_records(6)
    for index in missing:
        rows[index]["text"][-1]["content"] = "原因：只有原因，没有判断。"
    return write_records(tmp_path / "test.jsonl", rows), rows


def test_an_unlabelled_record_is_refused_naming_file_line_and_sample(tmp_path):
    path, rows = unlabelled_file(tmp_path, 2, 4)
    records = read_records(path)
    with pytest.raises(InputError) as refused:
        labelled_records(records, path, skip_flag="--skip_unlabelled")
    message = str(refused.value)
    for fragment in (f"{path}:3", f"sample {rows[2]['id']}", "field 'text'", "no judgement", "(and 1 more)",
                     "--skip_unlabelled"):
        assert fragment in message, message
    with pytest.raises(InputError, match="no judgement") as plain:
        labelled_records(records, path)
    assert "--skip_unlabelled" not in str(plain.value)


def test_skipping_returns_the_unlabelled_records_apart(tmp_path):
    path, rows = unlabelled_file(tmp_path, 2)
    labelled, skipped = labelled_records(read_records(path), path, skip=True)
    assert [r.id for r in skipped] == [rows[2]["id"]] and all(map(is_labelled, labelled))
    assert [r.id for r in labelled] == [r["id"] for i, r in enumerate(rows) if i != 2]


def test_a_file_without_any_label_is_refused_even_when_skipping(tmp_path):
    path, _ = unlabelled_file(tmp_path, *range(6))
    with pytest.raises(InputError, match="no reference answer holds a judgement"):
        labelled_records(read_records(path), path, skip=True)
