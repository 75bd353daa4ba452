"""Issue 14 on hand-made results: PrimeVul's pair outcomes, VD-S, the dev threshold, the v2 results
schema (and v1 files still loading), the new charts, and bad pair data in a test JSONL.

Every expected number is worked out by hand in a comment; the code under test computes it with
scikit-learn and scipy, so these tests check the wiring."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib
import pytest
from PIL import Image

from defect_judge.evaluate.results_folder import PAIR_OUTCOMES_FILE, ROC_FILE, SUBTYPE_ACCURACY_FILE
from defect_judge.report.result_charts import (ALL_PAIRS, pair_categories,
                                 pair_outcome_figure, result_charts, roc_figure)
from defect_judge.evaluate.thresholds import apply_threshold, choose_threshold, vd_s, vd_s_levels
from defect_judge.errors import InputError
from defect_judge.report.fonts import find_cjk_font
from defect_judge.evaluate.pairs import check_record_pairs, pair_mcnemar, pair_results
from defect_judge.evaluate.metrics import metrics
from defect_judge.evaluate.results import SCHEMA, SCHEMA_V1, load_results, results_document
from defect_judge.evaluate.results_table import format_results_table
from defect_judge.data.schema import read_records
from defect_judge.stats import wilson_interval
from helpers import EVALUATE, assert_clean_failure, make_records, run_script, write_records

YES_NO = ["否", "是"]


def row(sample_id: str, subtype: str, reference: str, prediction: str | None, *, pair: str | None = None,
        p_yes: float | None = None) -> dict:
    sample = {"id": sample_id, "subtype": subtype, "reference": reference, "prediction": prediction,
              "correct": prediction == reference}
    if pair is not None:
        sample["pair_id"] = pair
    if p_yes is not None:
        sample["probabilities"] = {"是": p_yes, "否": 1 - p_yes}
    return sample


def document(samples: list[dict], mode: str = "generate", **kwargs) -> dict:
    return results_document(model_path="/runs/lora/checkpoint-8", model_kind="lora", test_dataset_path="test.jsonl",
                            mode=mode, settings={}, judgements=YES_NO, samples=samples, **kwargs)


# ------------------------------------------------------------------ pairs

# Seven twin pairs (defective 是 first), one sample without pair_id, one lone twin, one group of three.
HAND_MADE = [
    row("a1", "空指针解引用", "是", "是", pair="A"), row("a0", "空指针解引用", "否", "否", pair="A"),  # P-C
    row("b1", "空指针解引用", "是", "是", pair="B"), row("b0", "空指针解引用", "否", "否", pair="B"),  # P-C
    row("c1", "空指针解引用", "是", "是", pair="C"), row("c0", "空指针解引用", "否", "是", pair="C"),  # P-V
    row("d1", "资源泄漏", "是", "否", pair="D"), row("d0", "资源泄漏", "否", "否", pair="D"),  # P-B
    row("e1", "资源泄漏", "是", "否", pair="E"), row("e0", "资源泄漏", "否", "是", pair="E"),  # P-R
    # invalid answers count as wrong: an invalid clean twin is "called defective" -> P-V, never P-C
    row("f1", "资源泄漏", "是", "是", pair="F"), row("f0", "资源泄漏", "否", None, pair="F"),  # P-V (invalid)
    # an invalid defective twin is "called clean": with a right clean twin -> P-B
    row("g0", "资源泄漏", "否", "否", pair="G"), row("g1", "资源泄漏", "是", None, pair="G"),  # P-B (invalid)
    row("x", "资源泄漏", "是", "是"),  # no pair_id
    row("h1", "资源泄漏", "是", "是", pair="H"),  # its twin is in another split
    row("i1", "除零错误", "是", "是", pair="I"), row("i0", "除零错误", "否", "否", pair="I"),
    row("i2", "除零错误", "否", "否", pair="I"),  # three versions: not a twin pair
]


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


def test_mcnemar_over_pairs_counts_p_c_fixed_and_broken():
    base = {"A": "P-C", "B": "P-V", "C": "P-B", "D": "P-C", "E": "P-R", "F": "P-V"}
    tuned = {"A": "P-C", "B": "P-C", "C": "P-C", "D": "P-V", "E": "P-C", "F": "P-V", "Z": "P-C"}
    test = pair_mcnemar(base, tuned)
    # shared pairs A-F; fixed B, C, E; broken D: exact two-sided p = 2 * (C(4,0) + C(4,1)) / 2^4 = 0.625
    assert (test["pairs"], test["fixed"], test["broken"]) == (6, 3, 1)
    assert test["p_value"] == pytest.approx(0.625) and test["method"] == "exact binomial"


# ---------------------------------------------------- VD-S and the threshold

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


def test_a_dev_threshold_decides_the_test_predictions_and_both_are_recorded():
    test = [row(f"t{i}", "空指针解引用", reference, "是" if p >= 0.5 else "否", p_yes=p)
            for i, (reference, p) in enumerate([("是", 0.9), ("是", 0.45), ("否", 0.4), ("否", 0.2)])]
    chosen = {"threshold": 0.42, "balanced_accuracy": 0.9, "samples": 10, "source": "dev/evaluation_results.json",
              "test_dataset_path": "dev.jsonl"}
    results = document(test, mode="score", threshold=chosen)
    decision = results["decision"]
    assert decision["headline"] == "threshold" and decision["threshold"] == 0.42 and decision["positive"] == "是"
    assert decision["chosen_on"]["test_dataset_path"] == "dev.jsonl"
    # argmax: 0.45 is called 否 (wrong) -> 3/4; the threshold 0.42 calls it 是 -> 4/4
    assert decision["argmax"]["correct"] == 3 and results["overall"]["correct"] == 4
    assert [s["argmax_prediction"] for s in results["samples"]] == ["是", "否", "否", "否"]
    assert [s["threshold_prediction"] for s in results["samples"]] == ["是", "是", "否", "否"]
    assert [s["prediction"] for s in results["samples"]] == ["是", "是", "否", "否"]
    assert results["overall"]["balanced_accuracy"] == 1.0 and decision["argmax"]["balanced_accuracy"] == 0.75
    assert results["roc_auc"] == 1.0 and len(results["vd_s"]) == 2  # scores are the same either way
    assert "decision: P(是) >= 0.42, chosen on dev (dev.jsonl" in format_results_table(results)
    assert apply_threshold(test, "是", "否", 0.95)[0]["prediction"] == "否"
    with pytest.raises(InputError, match="needs scored samples"):
        document([row("g", "A", "是", "是")], threshold=chosen)


def test_balanced_accuracy_and_mcc_count_an_invalid_answer_as_wrong():
    rows = [row("1", "A", "是", "是"), row("2", "A", "是", "是"), row("3", "A", "是", "否"), row("4", "A", "否", "否"),
            row("5", "A", "否", "否"), row("6", "A", "否", None), row("7", "A", "否", "是")]
    overall = metrics(rows, YES_NO)["overall"]
    # the invalid answer on a 否 sample counts as 是: TP 2, FN 1, TN 2, FP 2
    # balanced accuracy = (2/3 + 2/4) / 2; MCC = (2*2 - 2*1) / sqrt(4 * 3 * 4 * 3) = 2 / 12
    assert overall["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert overall["mcc"] == pytest.approx(1 / 6)
    assert metrics([], YES_NO)["overall"]["mcc"] is None


# --------------------------------------------------------- schema v1 and v2

def v1_document(path: Path, model_path: str, correct: int) -> Path:
    """A results file as the v1 code wrote it: no pairs, decision, vd_s or average_precision."""
    samples = [row(f"s{i}", "空指针解引用" if i % 2 else "资源泄漏", "是" if i % 3 else "否", None) for i in range(12)]
    for sample in samples[:correct]:
        sample["prediction"], sample["correct"] = sample["reference"], True
    data = {"schema": SCHEMA_V1, "model_path": model_path, "model_kind": "lora", "test_dataset_path": "test.jsonl",
            "mode": "generate", "created": "2025-04-03T10:00:00+00:00", "settings": {}, "judgements": YES_NO,
            **metrics(samples, YES_NO), "roc_auc": None, "roc_positive": {"judgement": None, "rule": "generate"},
            "samples": samples}
    for key in ("balanced_accuracy", "mcc"):
        del data["overall"][key]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_v1_results_file_still_loads_prints_and_plots(tmp_path):
    results = load_results(v1_document(tmp_path / "v1.json", "/runs/old/checkpoint-140", 7))
    assert results["schema"] == SCHEMA_V1
    assert all(results[key] is None for key in ("pairs", "vd_s", "decision", "average_precision"))
    table = format_results_table(results)
    assert "总体 overall" in table and "pairs (PrimeVul" not in table and "balanced accuracy" not in table
    written = result_charts(tmp_path / "charts", results)
    assert [p.name for p in written] == [SUBTYPE_ACCURACY_FILE]
    (tmp_path / "not_ours.json").write_text(json.dumps({"schema": "defect-judge/evaluation-results/v9"}))
    with pytest.raises(InputError, match="not an evaluation_results.json of this toolkit"):
        load_results(tmp_path / "not_ours.json")


# ------------------------------------------------------------------ charts

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


# ------------------------------------------------------ bad pair data (JSONL)

def paired_rows(n: int) -> list[dict]:
    """make_records' samples come as (是, 否) of one subtype in turn: twins."""
    return [r | {"pair_id": f"twin-{i // 2}"} for i, r in enumerate(make_records(n))]


@pytest.mark.parametrize("case, bad_line, fragments", [
    ("number", 3, ["must be a non-empty string, got 7"]),
    ("same_judgement", 2, ["pair 'twin-0'", "all 2 samples have the same judgement (是)"]),
    ("two_defective", 9, ["pair 'twin-0'", "2 samples are defective (是); a pair has at most one"]),
    ("subtypes", 4, ["pair 'twin-1'", "different subtypes (内存泄漏 / 除零错误)"]),
])
def test_bad_pair_id_in_a_test_jsonl_is_one_line_naming_file_sample_and_field(case, bad_line, fragments, tmp_path):
    rows = paired_rows(10)
    if case == "number":
        rows[2]["pair_id"] = 7
    elif case == "same_judgement":
        rows[1] = rows[1] | {"text": rows[0]["text"]}  # the clean twin now says 是 too
    elif case == "two_defective":
        rows[8]["pair_id"] = "twin-0"  # a third version, defective like the first
    else:
        rows[3]["subtype"] = "除零错误"
    test_file = write_records(tmp_path / "test.jsonl", rows)
    result = run_script(EVALUATE, "--model_path", tmp_path / "no-model", "--test_dataset_path", test_file,
                        "--output_dir", tmp_path / "out", timeout=120)
    line = assert_clean_failure(result, f"{test_file}:{bad_line}", f"sample {rows[bad_line - 1]['id']}",
                                "field 'pair_id'", *fragments)
    assert "model path does not exist" not in line  # the data is checked before any model is looked at
    assert not (tmp_path / "out").exists()


def test_a_lone_twin_is_only_counted(tmp_path, caplog):
    rows = paired_rows(5)  # twin-2 has one member
    records = read_records(write_records(tmp_path / "test.jsonl", rows))
    check_record_pairs(records, tmp_path / "test.jsonl", "是")
    assert "1 pair_id(s) with a single sample" in caplog.text


# ------------------------------------------------- a model that answers nothing valid, printing a threshold

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


def test_a_printed_threshold_reproduces_its_decisions():
    from defect_judge.evaluate.thresholds import threshold_text

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


def test_a_judgement_no_test_sample_has_is_not_reported_as_zero_of_zero():
    results = document([row("a", "空指针解引用", "是", "是"), row("b", "空指针解引用", "是", "否")])
    table = format_results_table(results)
    assert "of 0" not in table and "reference 否: no test sample has it" in table
