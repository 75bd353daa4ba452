"""defect_judge/evaluate/results_table.py: the table a script prints after an evaluation, from hand-made results
documents: the pair table, a model whose every answer is invalid (n/a, never a misleading number), a judgement no
test sample has, the scores of a scored run, answers cut by max_new_tokens, and columns that line up under Chinese
subtype names."""
from __future__ import annotations

import json

import matplotlib
import pytest

from defect_judge.evaluate.results import SCHEMA
from defect_judge.evaluate.results_folder import PAIR_OUTCOMES_FILE
from defect_judge.evaluate.results_table import format_results_table
from defect_judge.report.result_charts import result_charts
from defect_judge.text import display_width
from helpers import HAND_MADE_PAIRS as HAND_MADE, YES_NO, results_of as document, sample_row as row


@pytest.fixture(autouse=True)
def _restore_rc():
    with matplotlib.rc_context():  # use_cjk_font sets rcParams; keep tests independent
        yield


def test_pairs_enter_the_results_document_and_the_printed_table():
    results = document(HAND_MADE)
    assert results["schema"] == SCHEMA and results["pairs"]["overall"]["pairs"] == 7
    assert results["decision"]["headline"] == "answer" and results["vd_s"] is None  # generate mode: no scores
    table = format_results_table(results)
    assert "pairs (PrimeVul" in table
    overall_line = [line for line in table.splitlines() if line.startswith("总体 overall")][-1]
    assert overall_line.split()[2:] == ["7", "2", "(29%)", "2", "(29%)", "2", "(29%)", "1", "(14%)", "2"]
    assert "2 pair(s) had one" in table and "unpaired: 5 sample(s)" in table
    assert document([row("x", "A", "是", "是")])["pairs"] is None  # no pair_id: no section


def test_a_model_with_every_answer_invalid_gets_n_a_not_a_misleading_number(tmp_path):
    """All answers invalid: balanced accuracy, MCC, precision/recall/F1 and the pair outcomes need valid answers,
    so they are null in the JSON and n/a in the table and the pair chart (the counting rule alone would give
    balanced accuracy 0, MCC -1 and P-R 100%); the table's first line says the model failed the format."""
    samples = [row(f"{p}{j}", "空指针解引用", "是" if j else "否", None, pair=p) for p in "ABC" for j in (1, 0)]
    results = document(samples)
    overall = results["overall"]
    assert overall["accuracy"] == 0.0 and overall["invalid_format"] == 6
    assert overall["balanced_accuracy"] is None and overall["mcc"] is None
    assert all(results["per_judgement"][j]["precision"] is None for j in YES_NO)
    pairs = results["pairs"]["overall"]
    assert pairs["all_invalid"] and all(pairs[o] == {"count": None, "share": None, "ci95": None}
                                        for o in ("P-C", "P-V", "P-B", "P-R"))
    assert set(results["pairs"]["outcomes"].values()) == {None}
    table = format_results_table(results)
    assert table.splitlines()[0].startswith("the model failed the answer format: all 6 answers are invalid")
    assert "balanced accuracy, MCC: n/a (all answers invalid)" in table and "pair outcomes: n/a" in table
    assert "MCC -1" not in table and "100%" not in table.split("pairs (PrimeVul")[1]
    written = result_charts(tmp_path, json.loads(json.dumps(results)))
    assert tmp_path / PAIR_OUTCOMES_FILE in written
    # one valid answer among them: the pair rule applies again (the invalid twin counts as wrong)
    samples[0] = row("A1", "空指针解引用", "是", "是", pair="A")
    mixed = document(samples)
    assert mixed["pairs"]["overall"]["all_invalid"] is False and mixed["overall"]["mcc"] is not None


def test_a_judgement_no_test_sample_has_is_not_reported_as_zero_of_zero():
    results = document([row("a", "空指针解引用", "是", "是"), row("b", "空指针解引用", "是", "否")])
    table = format_results_table(results)
    assert "of 0" not in table and "reference 否: no test sample has it" in table


# ------------------------------------------------------------------ a scored run, a generated one

# Defective scores 0.9, 0.8, 0.4; clean 0.7, 0.3, 0.2, 0.1; argmax calls P(是) >= 0.5 是: TP 2, FN 1, TN 3, FP 1.
SCORED = [row(f"s{i}", "空指针解引用", reference, "是" if p >= 0.5 else "否", p_yes=p)
          for i, (reference, p) in enumerate([("是", 0.9), ("是", 0.8), ("是", 0.4), ("否", 0.7), ("否", 0.3),
                                              ("否", 0.2), ("否", 0.1)])]


def test_a_scored_run_prints_its_scores_vd_s_with_its_note_and_the_majority_class():
    lines = format_results_table(document(SCORED, mode="score", vds_fpr=0.25)).splitlines()
    # ROC-AUC 11/12 (11 of the 12 defective-clean pairs ordered); AP (1/1 + 2/2 + 3/4) / 3 = 11/12
    assert "ROC-AUC (是 = defect): 0.917, average precision 0.917" in lines
    # balanced accuracy (2/3 + 3/4) / 2 = 70.8%; MCC (2*3 - 1*1) / sqrt(3*3*4*4) = 5/12
    assert "balanced accuracy 70.8%, MCC 0.417" in lines
    assert "reference 是: accuracy 66.7% of 3, precision 0.67 recall 0.67 F1 0.67" in lines
    vd_s = [line for line in lines if line.startswith("VD-S")]
    assert vd_s[0].startswith("VD-S (miss rate at FPR <= 0.5%): 33.3% (FPR 0.0%, 4 clean / 3 defective); note: "
                              "too few clean samples for this level (4 < 200)")
    assert vd_s[1] == "VD-S (miss rate at FPR <= 25.0%): 0.0% (FPR 25.0%, 4 clean / 3 defective)"
    assert any(line.startswith("majority class (always 否): 57.1%; above it: one-sided exact binomial p = ")
               for line in lines)
    assert any(line.startswith("verdicts: scored (") for line in lines)
    assert not any(line.startswith("decision:") for line in lines)  # argmax decides: nothing to say
    assert "truncated" not in lines[1]  # only generated answers can be cut


def test_answers_cut_by_max_new_tokens_get_a_column_and_a_footnote():
    samples = [row("a", "空指针解引用", "是", "是") | {"stopped": True},
               row("b", "空指针解引用", "否", None) | {"stopped": False},  # cut before its judgement
               row("c", "资源泄漏", "是", "是") | {"stopped": False}]  # cut in its reason
    results = document(samples)
    results["settings"]["max_new_tokens"] = 8
    lines = format_results_table(results).splitlines()
    assert lines[1].split()[-1] == "truncated"
    assert lines[2].startswith("空指针解引用") and lines[2].split()[-1] == "1"
    assert lines[4].startswith("总体 overall") and lines[4].split()[-1] == "2"
    assert lines[5] == ("truncated: 2 answer(s) hit the limit of 8 new tokens, 1 of them before a judgement (counted "
                        "as invalid, though the limit cut them: raise --max_new_tokens)")


def test_columns_line_up_under_chinese_and_latin_subtype_names():
    """Each Chinese character takes two columns of a terminal: rows are padded by display width, not by length."""
    samples = HAND_MADE + [row("u", "use after free", "是", "否", pair="U"), row("v", "use after free", "否", "否",
                                                                              pair="U")]
    lines = format_results_table(document(samples)).splitlines()
    table = lines[1:lines.index(next(line for line in lines if line.startswith("总体 overall"))) + 1]
    assert len(table) == 6 and len({display_width(line) for line in table}) == 1, table
    header = lines.index(next(line for line in lines if line.startswith("subtype") and "P-C" in line))
    pair_rows = lines[header:header + 5]  # header, three subtypes with pairs, overall
    assert pair_rows[-1].startswith("总体 overall")
    assert len({display_width(line) for line in pair_rows}) == 1, pair_rows
