"""eval/plot_subtype_acc.py on results files in the real evaluation_results.json schema."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
from PIL import Image

from defect_judge import load_script
from defect_judge.evaluate.metrics import metrics
from defect_judge.evaluate.results import SCHEMA
from defect_judge.stats import mcnemar_exact
from helpers import PLOT, run_script

SCRIPT = PLOT
CHARTS = ("model_comparison.png", "overall_accuracy_comparison.png", "type_accuracy_comparison.png")
SUBTYPES = {"资源泄漏": 9, "空指针解引用": 12, "除零错误": 3, "数组越界访问与缓冲区溢出": 6}  # 30 samples
JUDGEMENTS = ["否", "是", "不确定"]  # no sample has 不确定 as reference: an n = 0 category
BASE_MODEL = "/data/Qwen2.5-Coder-7B-Instruct/"
TUNED_MODEL = "/data/qwen_instruct_lora_finetuned_0401/checkpoint-140"


def sample_ids() -> list[str]:
    return [f"{name}.json#{i}" for name, n in SUBTYPES.items() for i in range(n)]


def write_results(path: Path, model_path: str, correct: set[str], *, ids: list[str] | None = None,
                  judgements: list[str] = JUDGEMENTS) -> Path:
    """An evaluation_results.json whose metrics come from the real results code."""
    samples = []
    for sample_id in sample_ids() if ids is None else ids:
        subtype, index = sample_id.split(".json#")
        reference = "是" if int(index) % 3 else "否"
        wrong = "否" if reference == "是" else "是"
        prediction = reference if sample_id in correct else (None if int(index) == 7 else wrong)
        samples.append({"id": sample_id, "subtype": subtype, "reference": reference, "prediction": prediction,
                        "correct": sample_id in correct, "response": f"判断:{prediction}\n\n原因：……"})
    data = {"schema": SCHEMA, "model_path": model_path, "model_kind": "lora", "test_dataset_path": "dataset/test.jsonl",
            "mode": "generate", "created": "2025-04-03T10:00:00+00:00", "settings": {"max_new_tokens": 64},
            "judgements": judgements, **metrics(samples, judgements), "roc_auc": None, "samples": samples}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


# The baseline gets the first 15 samples right; the tuned model fixes 8 of the others and breaks 2.
IDS = sample_ids()
BASE_CORRECT = set(IDS[:15])
FIXED, BROKEN = set(IDS[15:23]), set(IDS[:2])
TUNED_CORRECT = (BASE_CORRECT - BROKEN) | FIXED


@pytest.fixture
def two_results(tmp_path: Path) -> tuple[Path, Path]:
    return (write_results(tmp_path / "evaluation_results_ori_0403.json", BASE_MODEL, BASE_CORRECT),
            write_results(tmp_path / "evaluation_results.json", TUNED_MODEL, TUNED_CORRECT))


def assert_chart(path: Path) -> None:
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert width >= 900 and height >= 500, f"{path.name} is {width}x{height}"
    assert image[..., :3].std() > 0.05, f"{path.name} is blank"
    with Image.open(path) as png:
        assert round(png.info["dpi"][0]) >= 150


def assert_clean_exit(result) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "missing from font" not in result.stderr and "Glyph" not in result.stderr, result.stderr


def assert_refused(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("plot_subtype_acc.py: error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_two_models_three_charts_and_summary(tmp_path: Path, two_results):
    base, tuned = two_results
    out = tmp_path / "comparison"
    result = run_script(SCRIPT, "--result1_path", base, "--result2_path", tuned, "--output_dir", out, timeout=120)
    assert_clean_exit(result)
    for chart in CHARTS:
        assert_chart(out / chart)
    assert sorted(p.name for p in out.iterdir()) == sorted([*CHARTS, "comparison_summary.md"])  # no temp files

    markdown = (out / "comparison_summary.md").read_text(encoding="utf-8")
    assert markdown in result.stdout  # printed as well
    # 8 fixed, 2 broken: exact two-sided p = 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 0.109375
    assert mcnemar_exact(8, 2) == pytest.approx(0.109375)
    assert ("qwen_instruct_lora_finetuned_0401/checkpoint-140: fixed 8, broken 2, p = 0.1094 (exact binomial)"
            in markdown)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in markdown.splitlines() if line.startswith("| ")}
    # labels are the model paths' last parts; overall 15/30 → 21/30
    assert rows["Qwen2.5-Coder-7B-Instruct"].startswith("| Qwen2.5-Coder-7B-Instruct | 50.0% |")
    assert "| 21 / 30 |" in rows["qwen_instruct_lora_finetuned_0401/checkpoint-140"]
    assert rows["qwen_instruct_lora_finetuned_0401/checkpoint-140"].endswith("| +20.0 pp |")
    # per subtype, most samples first: 空指针解引用 has 12 (base 6/12 right after 资源泄漏's 9, tuned 6-0+... )
    subtype_rows = [line for line in markdown.split("## Per subtype")[1].split("##")[0].splitlines()
                    if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0][2:] for row in subtype_rows] == ["空指针解引用", "资源泄漏", "数组越界访问与缓冲区溢出", "除零错误"]
    # 资源泄漏 (ids 0-8): base right on all 9, tuned broke 2 → 7/9
    assert rows["资源泄漏"] == "| 资源泄漏 | 9 | 100.0% | 77.8% | -22.2 pp |"
    # 空指针解引用 (ids 9-20): base right on 9..14 (6/12), tuned also on 15..20 → 12/12
    assert rows["空指针解引用"] == "| 空指针解引用 | 12 | 50.0% | 100.0% | +50.0 pp |"
    assert rows["不确定"] == "| 不确定 | 0 | — | — | — |"  # the judgement with no sample
    assert "| 否 | 10 |" in markdown and "| 是 | 20 |" in markdown


def test_three_models_and_given_labels(tmp_path: Path, two_results):
    base, tuned = two_results
    full = write_results(tmp_path / "full.json", "/data/qwen_full_finetuned_0402/checkpoint-140",
                         BASE_CORRECT | set(IDS[15:29]))
    out = tmp_path / "three"
    result = run_script(SCRIPT, "--results", base, tuned, full, "--labels", "基线", "LoRA", "全参数",
                        "--output_dir", out, timeout=120)
    assert_clean_exit(result)
    for chart in CHARTS:
        assert_chart(out / chart)
    markdown = (out / "comparison_summary.md").read_text(encoding="utf-8")
    assert "- LoRA: fixed 8, broken 2, p = 0.1094 (exact binomial)" in markdown
    # 14 fixed, 0 broken: exact p = 2 / 2^14
    assert f"- 全参数: fixed 14, broken 0, p = {2 / 2 ** 14:.4g} (exact binomial)" in markdown
    assert "| subtype | n | 基线 | LoRA | 全参数 | Δ LoRA | Δ 全参数 |" in markdown


def test_many_discordant_pairs_use_chi_square(tmp_path: Path):
    base = write_results(tmp_path / "a.json", "/m/base", set())
    tuned = write_results(tmp_path / "b.json", "/m/tuned", set(IDS))
    result = run_script(SCRIPT, "--results", base, tuned, "--output_dir", tmp_path / "out", timeout=120)
    assert_clean_exit(result)
    # 30 fixed, 0 broken: chi2 = (30 - 1)^2 / 30 = 28.03 on 1 dof, p = erfc(sqrt(28.03 / 2)) = 1.192e-7
    assert "fixed 30, broken 0, p = 1.192e-07 (chi-square, continuity-corrected)" in result.stdout


def test_same_model_path_twice_gets_distinct_labels(tmp_path: Path):
    a = write_results(tmp_path / "a.json", TUNED_MODEL, BASE_CORRECT)
    b = write_results(tmp_path / "b.json", TUNED_MODEL, TUNED_CORRECT)
    result = run_script(SCRIPT, "--results", a, b, "--output_dir", tmp_path / "out", timeout=120)
    assert_clean_exit(result)
    assert "| qwen_instruct_lora_finetuned_0401/checkpoint-140 #1 | 50.0% |" in result.stdout
    assert "| qwen_instruct_lora_finetuned_0401/checkpoint-140 #2 | 70.0% |" in result.stdout


def test_mismatched_ids_are_refused(tmp_path: Path, two_results):
    base, _ = two_results
    other = write_results(tmp_path / "other.json", TUNED_MODEL, TUNED_CORRECT, ids=IDS[:-1] + ["内存泄漏.json#0"])
    out = tmp_path / "out"
    result = run_script(SCRIPT, "--result1_path", base, "--result2_path", other, "--output_dir", out, timeout=60)
    assert_refused(result, str(base), str(other), "different test sets", "'数组越界访问与缓冲区溢出.json#5'")
    assert not out.exists()


def test_same_ids_with_other_references_are_refused(tmp_path: Path, two_results):
    base, _ = two_results
    other = write_results(tmp_path / "other.json", TUNED_MODEL, TUNED_CORRECT)
    data = json.loads(other.read_text(encoding="utf-8"))
    data["samples"][4]["reference"] = "否" if data["samples"][4]["reference"] == "是" else "是"
    other.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    result = run_script(SCRIPT, "--results", base, other, "--output_dir", tmp_path / "out", timeout=60)
    assert_refused(result, "disagree on sample '资源泄漏.json#4': reference")


@pytest.mark.parametrize("case", ["single", "missing", "malformed", "schema", "labels", "both_forms", "empty"])
def test_bad_input_is_a_clear_error(tmp_path: Path, two_results, case: str):
    base, tuned = two_results
    args, expected = {
        "single": (["--results", base], "at least two results files are needed"),
        "missing": (["--result1_path", base, "--result2_path", tmp_path / "nope.json"], "nope.json: results file not found"),
        "malformed": (["--result1_path", base, "--result2_path", tmp_path / "bad.json"], "bad.json:3: invalid JSON"),
        "schema": (["--result1_path", tmp_path / "other_schema.json", "--result2_path", tuned],
                   "field 'schema': not an evaluation_results.json of this toolkit"),
        "labels": (["--results", base, tuned, "--labels", "only-one"], "1 labels for 2 results files"),
        "both_forms": (["--results", base, tuned, "--result1_path", base], "either --results or --result1_path"),
        "empty": (["--results", tmp_path / "empty.json", tmp_path / "empty.json"], "the results hold no samples"),
    }[case]
    (tmp_path / "bad.json").write_text('{"schema": "defect-judge/evaluation-results/v1",\n "samples": [\n  {,\n', encoding="utf-8")
    write_results(tmp_path / "empty.json", BASE_MODEL, set(), ids=[])
    (tmp_path / "other_schema.json").write_text(json.dumps({"overall_accuracy": 0.5, "results": []}), encoding="utf-8")
    out = tmp_path / "out"
    result = run_script(SCRIPT, *args, "--output_dir", out, timeout=60)
    assert_refused(result, expected)
    assert not out.exists()  # nothing half-written


def test_debug_shows_the_traceback_and_help_lists_the_flags(tmp_path: Path, two_results):
    base, _ = two_results
    result = run_script(SCRIPT, "--results", base, "--debug", timeout=60)
    assert result.returncode != 0 and "Traceback" in result.stderr
    usage = run_script(SCRIPT, "--help", timeout=60)
    assert usage.returncode == 0
    for flag in ("--result1_path", "--result2_path", "--results", "--output_dir", "--labels"):
        assert flag in usage.stdout


def test_default_labels_grow_until_different_model_paths_differ():
    script = load_script("eval/plot_subtype_acc.py")
    models = [script.Model(Path(f"{i}.json"), {"model_path": p}) for i, p in enumerate(
        ["/data/Qwen2.5-Coder-7B-Instruct/", "/x/ft/final_model", "/y/ft/final_model", "/x/ft/final_model",
         "/data/run_0401/checkpoint-140"])]
    assert script.model_labels(models, []) == [
        "Qwen2.5-Coder-7B-Instruct", "x/ft/final_model #1", "y/ft/final_model", "x/ft/final_model #2",
        "run_0401/checkpoint-140"]
    # a training OUTPUT_DIR named "train" (the demo's) keeps its run folder; a verdict head says so
    runs = [script.Model(Path("a.json"), {"model_path": "runs/demo/20261205-1200/train", "mode": "generate"}),
            script.Model(Path("b.json"), {"model_path": "runs/demo/20261205-1200/train", "mode": "generate",
                                          "verdict_source": "head"})]
    assert script.model_labels(runs, []) == ["20261205-1200/train", "20261205-1200/train + head"]


def test_results_folders_are_accepted_for_their_results_files(tmp_path: Path):
    base = tmp_path / "base"
    tuned = tmp_path / "tuned"
    base.mkdir()
    tuned.mkdir()
    write_pair_results(base / "evaluation_results.json", "/m/base", BASE_OUTCOMES)
    write_pair_results(tuned / "evaluation_results.json", "/m/tuned", TUNED_OUTCOMES)
    out = tmp_path / "out"
    result = run_script(SCRIPT, "--results", base, tuned, "--output_dir", out)
    assert_clean_exit(result)
    summary = (out / "comparison_summary.md").read_text(encoding="utf-8")
    assert str(base / "evaluation_results.json") in summary and (out / PAIR_CHART).is_file()


# ------------------------------------------------------------ twin pairs

PAIR_CHART = "pair_outcomes_comparison.png"
# Ten twin pairs: p0-p5 空指针解引用, p6-p9 资源泄漏. Calls (defective twin, clean twin) per outcome.
CALLS = {"P-C": ("是", "否"), "P-V": ("是", "是"), "P-B": ("否", "否"), "P-R": ("否", "是")}
BASE_OUTCOMES = ["P-C", "P-C", "P-V", "P-V", "P-V", "P-B", "P-R", "P-C", "P-V", "P-B"]
TUNED_OUTCOMES = ["P-C", "P-V", "P-C", "P-C", "P-C", "P-C", "P-C", "P-C", "P-C", "P-B"]


def write_pair_results(path: Path, model_path: str, outcomes: list[str], *, v1: bool = False) -> Path:
    """An evaluation_results.json over twin pairs, made by the real results code; ``v1``: as the v1 code
    wrote it (no pair_id, no pairs section)."""
    from defect_judge.evaluate.results import SCHEMA_V1, results_document

    samples = []
    for index, outcome in enumerate(outcomes):
        subtype = "空指针解引用" if index < 6 else "资源泄漏"
        for reference, prediction in zip(("是", "否"), CALLS[outcome]):
            samples.append({"id": f"p{index}-{reference}", "subtype": subtype, "pair_id": f"p{index}",
                            "reference": reference, "prediction": prediction, "correct": prediction == reference})
    if v1:
        samples = [{k: v for k, v in s.items() if k != "pair_id"} for s in samples]
    data = results_document(model_path=model_path, model_kind="lora", test_dataset_path="dataset/test.jsonl",
                            mode="generate", settings={}, judgements=["否", "是"], samples=samples)
    if v1:
        data = {k: v for k, v in data.items() if k not in ("pairs", "decision", "vd_s", "average_precision")}
        data["schema"] = SCHEMA_V1
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("base_is_v1", [False, True])
def test_pair_outcomes_side_by_side_with_mcnemar_over_pairs(tmp_path: Path, base_is_v1: bool):
    """A v1 baseline (no pair_ids) on the same test set takes its pairs from the other file."""
    base = write_pair_results(tmp_path / "base.json", BASE_MODEL, BASE_OUTCOMES, v1=base_is_v1)
    tuned = write_pair_results(tmp_path / "tuned.json", TUNED_MODEL, TUNED_OUTCOMES)
    out = tmp_path / "comparison"
    result = run_script(SCRIPT, "--results", base, tuned, "--labels", "基线", "LoRA", "--output_dir", out, timeout=120)
    assert_clean_exit(result)
    for chart in (*CHARTS, PAIR_CHART):
        assert_chart(out / chart)
    markdown = (out / "comparison_summary.md").read_text(encoding="utf-8")
    assert "## Pair outcomes (PrimeVul)" in markdown and "10 twin pairs" in markdown
    # base: P-C 3, P-V 4, P-B 2, P-R 1; tuned: P-C 8, P-V 1, P-B 1, P-R 0
    assert "| 基线 | 10 | 3 (30%) | 4 (40%) | 2 (20%) | 1 (10%) |" in markdown
    assert "| LoRA | 10 | 8 (80%) | 1 (10%) | 1 (10%) | 0 (0%) |" in markdown and "| +50.0 pp |" in markdown
    # fixed p2, p3, p4, p5, p6, p8; broken p1: exact p = 2 * (C(7,0) + C(7,1)) / 2^7 = 0.125
    assert "- LoRA: P-C fixed 6, broken 1 of 10 pairs, p = 0.125 (exact binomial)" in markdown
    # P-C per subtype, most pairs first: 空指针解引用 base p0, p1 of 6; tuned p0, p2-p5 of 6
    assert "| 空指针解引用 | 6 | 2 (33%) | 5 (83%) |" in markdown and "| 资源泄漏 | 4 | 1 (25%) | 3 (75%) |" in markdown
    assert markdown in result.stdout


def test_results_without_pairs_keep_the_three_charts_and_drop_a_stale_pair_chart(tmp_path: Path, two_results):
    out = tmp_path / "comparison"
    out.mkdir()
    (out / PAIR_CHART).write_bytes(b"an earlier comparison's chart")
    result = run_script(SCRIPT, "--results", *two_results, "--output_dir", out, timeout=120)
    assert_clean_exit(result)
    assert sorted(p.name for p in out.iterdir()) == sorted([*CHARTS, "comparison_summary.md"])
    assert "Pair outcomes" not in (out / "comparison_summary.md").read_text(encoding="utf-8")


def test_v1_results_files_still_compare(tmp_path: Path):
    base = write_pair_results(tmp_path / "base.json", BASE_MODEL, BASE_OUTCOMES, v1=True)
    tuned = write_pair_results(tmp_path / "tuned.json", TUNED_MODEL, TUNED_OUTCOMES, v1=True)
    out = tmp_path / "comparison"
    result = run_script(SCRIPT, "--results", base, tuned, "--output_dir", out, timeout=120)
    assert_clean_exit(result)
    assert sorted(p.name for p in out.iterdir()) == sorted([*CHARTS, "comparison_summary.md"])
    # 20 samples: base right on 2 * 3 (P-C) + 4 (P-V: the defective twin) + 2 (P-B: the clean) = 12
    assert "| 12 / 20 |" in (out / "comparison_summary.md").read_text(encoding="utf-8")


def test_files_that_disagree_on_a_pair_id_are_refused(tmp_path: Path):
    base = write_pair_results(tmp_path / "base.json", BASE_MODEL, BASE_OUTCOMES)
    tuned = write_pair_results(tmp_path / "tuned.json", TUNED_MODEL, TUNED_OUTCOMES)
    data = json.loads(tuned.read_text(encoding="utf-8"))
    data["samples"][3]["pair_id"] = "p9"
    tuned.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    result = run_script(SCRIPT, "--results", base, tuned, "--output_dir", tmp_path / "out", timeout=60)
    assert_refused(result, "disagree on sample 'p1-否': pair_id 'p1' vs 'p9'")
