"""defect_judge/train/targets.py: the toolkit-vs-TRL targets, one place for the training benchmark and the GPU check."""
from __future__ import annotations

from defect_judge import load_script
from defect_judge.train.targets import PEAK_MEMORY_VS_TRL, TOKENS_PER_SECOND_VS_TRL
from tools.gpu_check import measure


def test_both_benchmarks_report_against_the_same_targets():
    assert 0 < PEAK_MEMORY_VS_TRL < 1 <= TOKENS_PER_SECOND_VS_TRL  # faster than TRL, in less memory
    bench_train = load_script("instruct_fine_tuning/bench_train.py")
    assert sorted(bench_train.TARGETS.values()) == sorted(measure.TARGETS.values()) == sorted(
        [PEAK_MEMORY_VS_TRL, TOKENS_PER_SECOND_VS_TRL])
