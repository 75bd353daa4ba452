"""eval/bench_eval.py on a tiny real model: every method timed and accounted for, and its answers counted as the
evaluation counts them, on the same samples by the same rules (labelled records, judgement vocabulary)."""
from __future__ import annotations

import json

import pytest

from defect_judge.evaluate.results import load_results
from helpers import EVALUATE, REPO_ROOT, assert_clean_failure, make_records, run_script, write_records

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread

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


def test_a_model_with_a_verdict_head_is_timed_against_its_floor(head_model, shipped_split, tmp_path):
    """Given a folder that carries a head, the benchmark times the head's score mode and training's probe features
    against the prefill of the same prompts through the head's layers, and says whether the targets are met."""
    out = tmp_path / "bench.json"
    result = run_script(BENCH, "--model_path", head_model, "--test_dataset_path", shipped_split["test_file"],
                        "--num_samples", "6", "--batch_size", "3", "--repeats", "1", "--threads", "1",
                        "--skip_generation", "--json", out, check=True)
    figures = json.loads(out.read_text())
    seconds = figures["seconds_per_sample"]
    assert set(seconds) == {"score", "prefill", "head", "probe_features", "prefill_to_head_layer"}
    bounds = figures["bounds"]
    assert bounds["head_vs_prefill_to_head_layer"] == pytest.approx(seconds["head"] / seconds["prefill_to_head_layer"])
    assert bounds["probe_features_vs_prefill_to_head_layer"] == pytest.approx(
        seconds["probe_features"] / seconds["prefill_to_head_layer"])
    assert figures["targets"] == {"head_vs_prefill_to_head_layer": 1.2, "probe_features_vs_prefill_to_head_layer": 1.3}
    assert figures["targets_met"]["head_vs_prefill_to_head_layer"] == (bounds["head_vs_prefill_to_head_layer"] <= 1.2)
    assert figures["verdict_head"]["spec"] == "mean@0.5,1.0" and 0 <= figures["accuracy"]["head"] <= 1
    assert "verdict head mean@0.5,1.0: prefill to its highest layer" in result.stdout
