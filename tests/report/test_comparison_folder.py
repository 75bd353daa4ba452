"""defect_judge/report/comparison_folder.py: the names of what eval/plot_subtype_acc.py writes into its output_dir,
checked against what the script really leaves there (with and without twin pairs) and against the layout the
module's docstring gives."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from defect_judge import load_script
from defect_judge.evaluate.results import results_document
from defect_judge.fileio import write_json_atomic
from defect_judge.report import comparison_folder
from defect_judge.report.comparison_folder import (ACCURACY_CHARTS, JUDGEMENT_CHART, OVERALL_CHART, PAIR_CHART,
                                                   SUBTYPE_CHART, SUMMARY_FILE)

NAMES = (SUBTYPE_CHART, OVERALL_CHART, JUDGEMENT_CHART, PAIR_CHART, SUMMARY_FILE)


def results(path: Path, model_path: str, right: int, *, paired: bool) -> Path:
    """An evaluation_results.json of 8 twin pairs over two subtypes (the real results code), the first ``right``
    samples called right and the rest wrong; without their pair_ids when not ``paired``."""
    samples = []
    for index in range(16):
        reference = "是" if index % 2 == 0 else "否"
        prediction = reference if index < right else {"是": "否", "否": "是"}[reference]
        samples.append({"id": f"s{index}", "subtype": "除零" if index < 8 else "内存泄漏", "reference": reference,
                        "prediction": prediction, "correct": prediction == reference,
                        **({"pair_id": f"p{index // 2}"} if paired else {})})
    write_json_atomic(path, results_document(model_path=model_path, model_kind="lora",
                                             test_dataset_path="dataset/test.jsonl", mode="generate", settings={},
                                             judgements=["否", "是"], samples=samples))
    return path


@pytest.mark.parametrize("paired", [False, True])
def test_the_comparison_script_writes_exactly_the_named_files(tmp_path, paired):
    base = results(tmp_path / "base.json", "/m/base", 6, paired=paired)
    tuned = results(tmp_path / "tuned.json", "/m/tuned", 12, paired=paired)
    out = tmp_path / "comparison"
    load_script("eval/plot_subtype_acc.py").main(["--results", str(base), str(tuned), "--output_dir", str(out)])
    charts = [*ACCURACY_CHARTS, *([PAIR_CHART] if paired else [])]
    assert sorted(path.name for path in out.iterdir()) == sorted([*charts, SUMMARY_FILE])
    for chart in charts:
        with Image.open(out / chart) as image:
            assert image.format == "PNG" and image.width > 400, chart
    assert len({hashlib.sha256((out / chart).read_bytes()).hexdigest() for chart in charts}) == len(charts)
    summary = (out / SUMMARY_FILE).read_text(encoding="utf-8")
    assert summary.startswith("# ") and ("## Pair outcomes (PrimeVul)" in summary) is paired


def test_the_accuracy_charts_are_the_three_every_comparison_writes():
    assert ACCURACY_CHARTS == (SUBTYPE_CHART, OVERALL_CHART, JUDGEMENT_CHART)
    assert PAIR_CHART not in ACCURACY_CHARTS and len(set(NAMES)) == len(NAMES)
    assert all(name.endswith(".png") for name in NAMES if name != SUMMARY_FILE) and SUMMARY_FILE.endswith(".md")


def test_the_docstring_lists_every_name_once():
    layout = comparison_folder.__doc__.split("output_dir/")[1].strip().splitlines()
    assert sorted(line.split()[0] for line in layout) == sorted(NAMES)
