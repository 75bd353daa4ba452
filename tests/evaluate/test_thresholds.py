"""defect_judge/evaluate/thresholds.py on hand-made scores: VD-S (PrimeVul's miss rate at a false-positive rate of at
most 0.5%, and what too few clean samples make of it), the decision threshold chosen on dev (the best balanced
accuracy, the nearest to argmax's 0.5 among equals, halfway between two dev scores), applying it, and printing it
so that it reproduces its decisions.

Every expected number is worked out by hand in a comment; the code under test computes it with scikit-learn, so
these tests check the wiring."""
from __future__ import annotations

import pytest

from defect_judge.evaluate.results_table import format_results_table
from defect_judge.evaluate.thresholds import (apply_threshold, choose_threshold, most_probable, negatives_needed,
                                              positive_scores, threshold_text, vd_s, vd_s_levels)
from helpers import results_of as document, sample_row as row

# Defective scores 0.9, 0.8, 0.4; clean 0.7, 0.3, 0.2, 0.1.
LABELS = [1, 1, 1, 0, 0, 0, 0]
SCORES = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]


def test_vd_s_with_too_few_negatives_says_so():
    # 4 clean samples: FPR <= 0.5% allows none; the lowest threshold with no false positive is 0.8, which
    # finds 2 of 3 defects: VD-S = 1/3.
    strict = vd_s(LABELS, SCORES, 0.005)
    assert strict["fnr"] == pytest.approx(1 / 3) and strict["fpr"] == 0.0 and strict["threshold"] == 0.8
    assert strict["false_positives_allowed"] == 0 and strict["meaningful"] is False
    assert "too few clean samples" in strict["note"] and "(4 < 200)" in strict["note"]
    # FPR <= 25% allows one of the 4: threshold 0.4 flags 0.7 (FPR 1/4) and finds every defect: VD-S = 0
    loose = vd_s(LABELS, SCORES, 0.25)
    assert (loose["fnr"], loose["fpr"], loose["threshold"]) == pytest.approx((0.0, 0.25, 0.4))
    assert loose["meaningful"] is True and loose["note"] is None
    assert vd_s_levels([1, 1], [0.2, 0.3], [0.005]) is None  # one class: nothing to measure


def test_vd_s_with_enough_negatives_allows_one_false_positive_in_200():
    labels = [0] * 200 + [1] * 4
    scores = [i / 1000 for i in range(200)] + [0.5, 0.1985, 0.15, 0.1]  # clean: 0.000 .. 0.199
    level = vd_s(labels, scores, 0.005)
    # 200 clean allow floor(200 * 0.005) = 1 false positive: threshold 0.1985 flags the clean 0.199 (FPR 1/200)
    # and the defects 0.5 and 0.1985; 0.15 and 0.1 are missed: VD-S = 2/4 (with no false positive: 3/4)
    assert level["false_positives_allowed"] == 1 and level["meaningful"] is True and level["note"] is None
    assert (level["fnr"], level["fpr"], level["threshold"]) == pytest.approx((0.5, 0.005, 0.1985))
    # among points of equal recall the one with fewer false positives is reported
    assert vd_s(labels, [i / 1000 for i in range(200)] + [0.5, 0.3, 0.15, 0.1], 0.005)["fpr"] == 0.0


def test_threshold_chosen_on_dev_maximises_balanced_accuracy():
    chosen = choose_threshold(LABELS, SCORES)
    # balanced accuracy = (TPR + TNR) / 2 at each cut: >= 0.9: (1/3 + 1) / 2 = 0.667; >= 0.8: 0.833;
    # >= 0.7: (2/3 + 3/4) / 2 = 0.708; >= 0.4: (1 + 3/4) / 2 = 0.875 (best); >= 0.3: 0.75 ...
    # The cut lies halfway between 0.4 and the next lower score 0.3.
    assert chosen["threshold"] == pytest.approx(0.35) and chosen["balanced_accuracy"] == pytest.approx(0.875)
    assert (chosen["tpr"], chosen["fpr"], chosen["positives"], chosen["negatives"]) == pytest.approx((1, 0.25, 3, 4))
    # Two equally good cuts, 0.75 (>= 0.9) and 0.35 (>= 0.4), both at balanced accuracy 0.75: the one nearer
    # argmax's 0.5 wins (0.35 is 0.15 from it, 0.75 is 0.25)
    tie = choose_threshold([1, 0, 1, 0], [0.9, 0.6, 0.4, 0.3])
    assert tie["threshold"] == pytest.approx(0.35) and tie["balanced_accuracy"] == pytest.approx(0.75)
    assert choose_threshold([1, 1, 1], [0.2, 0.5, 0.9]) is None  # one class: no threshold to choose


def test_a_printed_threshold_reproduces_its_decisions():
    assert threshold_text(0.99997, [0.99996, 0.99998]) == "0.99997"  # "1" would call nothing defective
    assert float(threshold_text(0.999999997, [0.99999999])) < 1.0
    assert threshold_text(0.5173289775, [0.3, 0.9]) == "0.5173"  # no score near it: four digits do
    assert threshold_text(0.5173289775, [0.51732897, 0.51732898]) == "0.51732898"
    scores = [0.2, 0.99996, 0.99997, 0.99998]
    results = document([row(str(i), "a", "是" if i % 2 else "否", None, p_yes=p) for i, p in enumerate(scores)],
                       mode="score", threshold={"threshold": 0.999965, "samples": 4, "balanced_accuracy": 0.75,
                                                "source": "dev", "test_dataset_path": "dev.jsonl"})
    line = next(l for l in format_results_table(results).splitlines() if l.startswith("decision:"))
    assert "P(是) >= 0.999965," in line


# ------------------------------------------------------------------ the edges of the choice

def test_a_cut_at_either_end_is_a_threshold_that_calls_all_or_nothing():
    """When calling every sample defective is the best (nearest 0.5 among equals), the threshold is the lowest dev
    score itself; when calling none is, it lies just above the highest, so no dev score reaches it."""
    # reversed scores: nothing called (balanced accuracy 0.5, cut just above 0.8, 0.3 from 0.5) and everything
    # called (0.5, cut 0.3, 0.2 from 0.5) tie; the single cut >= 0.8 calls the clean one only (0.0)
    everything = choose_threshold([0, 1], [0.8, 0.3])
    assert everything["threshold"] == 0.3 and everything["balanced_accuracy"] == 0.5
    assert (everything["tpr"], everything["fpr"]) == (1.0, 1.0)
    # the same with the scores below 0.5: calling nothing (cut just above 0.45, 0.05 from 0.5) wins
    nothing = choose_threshold([0, 1], [0.45, 0.2])
    assert 0.45 < nothing["threshold"] < 0.4501 and (nothing["tpr"], nothing["fpr"]) == (0.0, 0.0)
    assert [s["prediction"] for s in apply_threshold(
        [row("c", "a", "否", "否", p_yes=0.45), row("d", "a", "是", "否", p_yes=0.2)], "是", "否",
        nothing["threshold"])] == ["否", "否"]


def test_scores_are_read_only_from_samples_that_all_have_them():
    scored = [row("a", "x", "是", "是", p_yes=0.7), row("b", "x", "否", "是", p_yes=0.6)]
    assert positive_scores(scored, "是") == ([1, 0], [0.7, 0.6])
    assert positive_scores(scored, "否") == ([0, 1], [pytest.approx(0.3), pytest.approx(0.4)])
    assert positive_scores(scored + [row("c", "x", "否", "否")], "是") is None  # one generated answer among them
    assert positive_scores(scored, None) is None and positive_scores([], "是") is None


def test_vd_s_levels_come_once_each_and_need_enough_clean_samples():
    assert (negatives_needed(0.005), negatives_needed(0.05), negatives_needed(0.1)) == (200, 20, 10)
    levels = vd_s_levels(LABELS, SCORES, [0.005, 0.25, 0.005])
    assert [level["fpr_target"] for level in levels] == [0.005, 0.25]  # 0.5% asked twice, reported once


def test_argmax_keeps_the_most_probable_judgement_and_the_first_in_order_on_a_tie():
    assert most_probable({"probabilities": {"是": 0.7, "否": 0.3}}) == "是"
    assert most_probable({"probabilities": {"是": 0.5, "否": 0.5}}) == "否"  # 否 (U+5426) sorts before 是 (U+662F)
    decided = apply_threshold([row("t", "a", "是", "否", p_yes=0.45)], "是", "否", 0.4)[0]
    assert (decided["argmax_prediction"], decided["threshold_prediction"], decided["prediction"]) == ("否", "是", "是")
    assert decided["correct"] is True and decided["probabilities"] == {"是": 0.45, "否": pytest.approx(0.55)}
