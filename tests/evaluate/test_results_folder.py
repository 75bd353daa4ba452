"""defect_judge/evaluate/results_folder.py: the documented names of what an evaluation's results folder holds."""
from __future__ import annotations

from defect_judge.evaluate.results_folder import (CHART_FILES, RESULTS_FILE, THRESHOLD_DEV_FOLDER, partial_file,
                                                  partial_files, results_file)


def test_the_documented_names():
    assert RESULTS_FILE == "evaluation_results.json" and THRESHOLD_DEV_FOLDER == "threshold_dev"
    assert CHART_FILES == ("subtype_accuracy.png", "pair_outcomes.png", "roc_curve.png")


def test_partial_files_of_every_rank_are_found_rank_zero_first(tmp_path):
    assert partial_file(tmp_path) == tmp_path / "evaluation_results.partial.jsonl"
    assert partial_file(tmp_path, 2) == tmp_path / "evaluation_results.partial.rank2.jsonl"
    for rank in (2, 0, 1):
        partial_file(tmp_path, rank).write_text("", encoding="utf-8")
    (tmp_path / RESULTS_FILE).write_text("{}", encoding="utf-8")
    assert partial_files(tmp_path) == [partial_file(tmp_path, rank) for rank in (0, 1, 2)]


def test_a_results_file_is_named_itself_or_by_its_folder(tmp_path):
    assert results_file(tmp_path) == tmp_path / RESULTS_FILE
    assert results_file(tmp_path / "dev.json") == tmp_path / "dev.json"
