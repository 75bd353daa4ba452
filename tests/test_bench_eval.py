"""eval/bench_eval.py on a tiny real model: every method timed and accounted for, and its answers counted as the
evaluation counts them, on the same samples by the same rules (labelled records, judgement vocabulary)."""
from __future__ import annotations

import json

import pytest
from evaluation_fixtures import one_thread  # noqa: F401

from defect_judge.evaluate.results import load_results
from helpers import EVALUATE, REPO_ROOT, assert_clean_failure, make_records, run_script, write_records

BENCH = REPO_ROOT / "eval" / "bench_eval.py"


def test_help_lists_the_flags():
    help_text = run_script(BENCH, "--help", check=True).stdout
    assert "--json" in help_text
    assert "--skip_unlabelled" in help_text


def test_benchmark_runs_and_accounts_for_its_time(tiny_model_dir, shipped_split, tmp_path):
    """bench_eval.py on a tiny model: every method timed, speed-ups and bounds consistent with the timings."""
    out = tmp_path / "bench.json"
    run_script(BENCH, "--model_path", tiny_model_dir, "--test_dataset_path", shipped_split["test_file"],
               "--num_samples", "4", "--batch_size", "4", "--max_new_tokens", "3", "--repeats", "1",
               "--threads", "1", "--json", out, check=True)
    result = json.loads(out.read_text())
    seconds = result["seconds_per_sample"]
    assert set(seconds) == {"naive", "generate", "score", "prefill", "naive_prefill"}
    assert all(value > 0 for value in seconds.values())
    assert result["speedup"]["generate_vs_naive"] == pytest.approx(seconds["naive"] / seconds["generate"])
    bounds = result["bounds"]
    assert bounds["max_speedup_reading_every_prompt"] == pytest.approx(seconds["naive"] / seconds["prefill"])
    assert 1 <= bounds["naive_mean_new_tokens"] <= 3
    assert 0 <= result["agreement"]["generate_vs_naive_judgement"] <= 1
    assert result["samples"] == 4 and set(result["targets_met"]) == set(result["targets"])


def test_the_benchmark_counts_answers_as_the_evaluation_does(tiny_model_dir, tmp_path):
    """A one-class test file (every reference 否) with one unlabelled sample: the benchmark refuses it as the
    evaluation does, and with --skip_unlabelled both judge the same samples with the same vocabulary (是 is a
    wrong answer, not an invalid one, nor a judgement scoring cannot give), so their accuracy and invalid-answer
    rate agree in both modes."""
    rows = [r for r in make_records(12) if r["text"][-1]["content"].startswith("判断:否")]
    rows[1]["text"][-1]["content"] = "原因：只有原因，没有判断。"
    test_file = write_records(tmp_path / "one_class.jsonl", rows)
    n = len(rows) - 1
    bench = [BENCH, "--model_path", tiny_model_dir, "--test_dataset_path", test_file, "--num_samples", str(n),
             "--batch_size", str(n), "--max_new_tokens", "3", "--repeats", "1", "--threads", "1"]
    assert_clean_failure(run_script(*bench), str(test_file), f"sample {rows[1]['id']}", "no judgement",
                         "--skip_unlabelled")

    out = tmp_path / "bench.json"
    run_script(*bench, "--skip_unlabelled", "--json", out, check=True)
    benchmark = json.loads(out.read_text())
    assert benchmark["samples"] == n and benchmark["skipped_no_reference"] == [rows[1]["id"]]
    for mode in ("score", "generate"):
        run_script(EVALUATE, "--model_path", tiny_model_dir, "--test_dataset_path", test_file, "--output_dir",
                   tmp_path / mode, "--mode", mode, "--batch_size", str(n), "--max_new_tokens", "3",
                   "--skip_unlabelled", check=True)
        results = load_results(tmp_path / mode)
        assert results["judgements"] == ["否", "是"] and results["skipped_no_reference"] == [rows[1]["id"]]
        assert benchmark["accuracy"][mode] == pytest.approx(results["overall"]["accuracy"]), mode
        if mode == "generate":
            assert benchmark["invalid_format_rate"][mode] == pytest.approx(results["overall"]["invalid_format_rate"])
        else:  # every scored answer is a judgement of the vocabulary; the tiny model prefers 是, a wrong one
            assert results["overall"]["invalid_format"] == 0
            assert any(s["prediction"] == "是" for s in results["samples"])
