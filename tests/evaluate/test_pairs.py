"""defect_judge/evaluate/pairs.py on hand-made results: PrimeVul's pair outcomes (P-C, P-V, P-B, P-R, an invalid
answer counted as wrong), the samples left unpaired, McNemar's test over pairs, and the pair check of chat records
(a lone twin only counted). Bad pair data in a test JSONL, through the script: tests/scripts/test_model_evaluation.py.

Every expected number is worked out by hand in a comment; the code under test computes it with scikit-learn and
scipy, so these tests check the wiring."""
from __future__ import annotations

import pytest

from defect_judge.data.schema import read_records
from defect_judge.evaluate.pairs import OUTCOMES, check_record_pairs, pair_mcnemar, pair_results
from defect_judge.stats import wilson_interval
from helpers import HAND_MADE_PAIRS as HAND_MADE, paired_rows, write_records


def test_pair_outcome_counts_on_a_hand_made_results_set():
    pairs = pair_results(HAND_MADE, "是", "否")
    overall = pairs["overall"]
    assert overall["pairs"] == 7 and overall["with_invalid"] == 2
    assert {o: overall[o]["count"] for o in ("P-C", "P-V", "P-B", "P-R")} == {"P-C": 2, "P-V": 2, "P-B": 2, "P-R": 1}
    assert overall["P-C"]["share"] == pytest.approx(2 / 7)
    assert overall["P-C"]["ci95"] == pytest.approx(list(wilson_interval(2, 7)))
    assert sum(overall[o]["share"] for o in ("P-C", "P-V", "P-B", "P-R")) == pytest.approx(1.0)
    # 空指针解引用: A, B right, C both called defective; 资源泄漏: D, G benign, E reversed, F vulnerable
    null = pairs["per_subtype"]["空指针解引用"]
    assert (null["pairs"], null["P-C"]["count"], null["P-V"]["count"], null["with_invalid"]) == (3, 2, 1, 0)
    leak = pairs["per_subtype"]["资源泄漏"]
    assert [leak[o]["count"] for o in ("P-C", "P-V", "P-B", "P-R")] == [0, 1, 2, 1]
    assert leak["with_invalid"] == 2 and "除零错误" not in pairs["per_subtype"]  # its group is not a twin pair
    assert pairs["outcomes"] == {"A": "P-C", "B": "P-C", "C": "P-V", "D": "P-B", "E": "P-R", "F": "P-V", "G": "P-B"}
    # unpaired: x (no pair_id) + h1 (lone) + i0/i1/i2 (group of three)
    assert pairs["unpaired"] == {"samples": 5, "without_pair_id": 1, "in_incomplete_groups": 4,
                                 "incomplete_groups": 2, "example_incomplete": "H"}


def test_mcnemar_over_pairs_counts_p_c_fixed_and_broken():
    base = {"A": "P-C", "B": "P-V", "C": "P-B", "D": "P-C", "E": "P-R", "F": "P-V"}
    tuned = {"A": "P-C", "B": "P-C", "C": "P-C", "D": "P-V", "E": "P-C", "F": "P-V", "Z": "P-C"}
    test = pair_mcnemar(base, tuned)
    # shared pairs A-F; fixed B, C, E; broken D: exact two-sided p = 2 * (C(4,0) + C(4,1)) / 2^4 = 0.625
    assert (test["pairs"], test["fixed"], test["broken"]) == (6, 3, 1)
    assert test["p_value"] == pytest.approx(0.625) and test["method"] == "exact binomial"


def test_a_lone_twin_is_only_counted(tmp_path, caplog):
    rows = paired_rows(5)  # twin-2 has one member
    records = read_records(write_records(tmp_path / "test.jsonl", rows))
    check_record_pairs(records, tmp_path / "test.jsonl", "是")
    assert "1 pair_id(s) with a single sample" in caplog.text


# ------------------------------------------------------------------ beyond 是/否

def test_pairs_of_another_vocabulary_are_told_apart_by_its_defective_judgement():
    """The positive judgement of the test set, not 是, marks a pair's defective twin; two clean versions of one
    pair_id are no twin pair."""
    def judged(sample_id, pair, reference, prediction):
        return {"id": sample_id, "subtype": "除零", "pair_id": pair, "reference": reference, "prediction": prediction,
                "correct": prediction == reference}

    samples = [judged("p1", "P", "有缺陷", "有缺陷"), judged("p0", "P", "无缺陷", "有缺陷"),  # P-V
               judged("q0", "Q", "无缺陷", "有缺陷"), judged("q1", "Q", "有缺陷", "无缺陷"),  # P-R, clean twin first
               judged("r0", "R", "无缺陷", "无缺陷"), judged("r9", "R", "无缺陷", "无缺陷")]  # two clean: unpaired
    pairs = pair_results(samples, "有缺陷", "无缺陷")
    assert pairs["outcomes"] == {"P": "P-V", "Q": "P-R"}
    assert [pairs["overall"][o]["count"] for o in OUTCOMES] == [0, 1, 0, 1]
    assert (pairs["positive"], pairs["negative"]) == ("有缺陷", "无缺陷")
    assert pairs["unpaired"] == {"samples": 2, "without_pair_id": 0, "in_incomplete_groups": 2,
                                 "incomplete_groups": 1, "example_incomplete": "R"}
    # read with 是/否 as the defective/clean judgements, no group is a twin pair
    assert pair_results(samples, "是", "否")["overall"]["pairs"] == 0


def test_mcnemar_over_no_shared_pair_finds_no_difference():
    test = pair_mcnemar({"A": "P-C"}, {"B": "P-V"})
    assert (test["pairs"], test["fixed"], test["broken"], test["p_value"]) == (0, 0, 0, 1.0)
