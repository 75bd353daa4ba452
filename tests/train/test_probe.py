"""defect_judge/train/probe.py: the linear probe's maths on plain numpy features (no model): the choice of its
regularisation, the affine map it becomes, the calibration of its log-odds, and data it refuses in words that name
no setting."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from defect_judge.train.probe import (PROBES, ProbeDataError, affine_map, calibrated_probe, chosen_value,
                                      describe_fit, probe_grid, temperature)


def planted_features(n: int, seed: int, dims: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Features whose first dimension carries the label, the rest noise on scales far apart (the same scales for
    every seed)."""
    scales = np.random.default_rng(99).uniform(0.1, 10, size=dims)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dims)) * scales
    y = (x[:, 0] + 0.2 * rng.normal(size=n) > 0).astype(int)
    return x, y


@pytest.mark.parametrize("probe", ["logistic", "lda"])
def test_the_calibrated_probe_separates_a_planted_signal_on_new_samples(probe):
    x, y = planted_features(120, 0)
    new_x, new_y = planted_features(60, 1)
    fitted = calibrated_probe(x, y, [str(i // 2) for i in range(120)], probe=probe)
    p = 1 / (1 + np.exp(-(((new_x - fitted.mean) / fitted.scale) @ fitted.weight + fitted.bias)))
    assert ((p >= 0.5) == new_y).mean() >= 0.9 and roc_auc_score(new_y, p) >= 0.95
    report = fitted.report
    assert report["probe"] == probe and report["parameter"] == PROBES[probe].parameter
    assert report["chosen_on"] == "cross-validation over pairs on train" and report["folds"] == 5
    assert [row[report["parameter"]] for row in report["grid"]] == list(PROBES[probe].grid)
    assert report[report["parameter"]] == chosen_value(PROBES[probe], PROBES[probe].grid,
                                                       {row[report["parameter"]]: row for row in report["grid"]})


def test_choosing_on_dev_scores_every_candidate_there():
    x, y = planted_features(80, 2)
    dev_x, dev_y = planted_features(30, 3)
    report = calibrated_probe(x, y, [str(i) for i in range(80)], grid=[0.001, 1.0], dev_x=dev_x, dev_y=dev_y,
                              choose_on="dev").report
    assert report["chosen_on"] == "dev" and report["folds"] is None
    assert [set(row) for row in report["grid"]] == [{"C", "accuracy", "roc_auc", "log_loss", "samples"}] * 2
    assert all(row["samples"] == 30 for row in report["grid"])


def test_a_tie_goes_to_the_lower_log_loss_then_to_the_stronger_regularisation():
    same = {"accuracy": 0.8, "log_loss": 0.4}
    assert chosen_value(PROBES["logistic"], (0.1, 1.0), {0.1: same, 1.0: same}) == 0.1  # smaller C: stronger
    assert chosen_value(PROBES["lda"], (0.1, 0.3), {0.1: same, 0.3: same}) == 0.3  # more shrinkage: stronger
    better = {"accuracy": 0.8, "log_loss": 0.3}
    assert chosen_value(PROBES["logistic"], (0.1, 1.0), {0.1: same, 1.0: better}) == 1.0
    assert chosen_value(PROBES["logistic"], (0.3,), {}) == 0.3  # a single value is given, not chosen


def test_lda_s_principal_components_fold_into_one_affine_map():
    x, y = planted_features(40, 4, dims=60)  # more dimensions than samples
    pipeline = PROBES["lda"].pipeline(0.1).fit(x, y)
    weight, bias = affine_map(pipeline)
    scaler = pipeline.steps[0][1]
    np.testing.assert_allclose((x - scaler.mean_) / scaler.scale_ @ weight + bias, pipeline.decision_function(x),
                               rtol=1e-9, atol=1e-9)


def test_the_temperature_undoes_log_odds_that_are_too_sure():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=4000) * 2
    y = (rng.uniform(size=4000) < 1 / (1 + np.exp(-logits))).astype(int)  # calibrated at T = 1
    t, calibration = temperature(10 * logits, y)
    assert t == pytest.approx(10, rel=0.1)
    assert calibration["log_loss_after"] < calibration["log_loss_before"]
    assert temperature(None, y) == (1.0, "none: too few training samples to cross-validate")


def test_data_a_probe_cannot_fit_is_refused_without_naming_a_setting():
    x = np.random.default_rng(6).normal(size=(6, 4))
    with pytest.raises(ProbeDataError, match="needs both judgements") as one_class:
        calibrated_probe(x, [0] * 6, list("abcdef"))
    assert one_class.value.setting == "judgement"
    with pytest.raises(ProbeDataError, match="choosing shrinkage on dev needs a dev split") as no_dev:
        calibrated_probe(x, [0, 1, 0, 1, 0, 1], list("abcdef"), probe="lda", choose_on="dev")
    assert no_dev.value.setting == "choose_on"
    with pytest.raises(ProbeDataError) as too_few:
        calibrated_probe(x, [0, 1, 0, 0, 0, 0], list("aabbcd"), grid=[0.1, 1.0])
    assert too_few.value.setting == "grid" and too_few.value.value == 1.0
    assert str(too_few.value) == ("too few training samples to choose C by cross-validation (6 samples, 1 of the "
                                  "smaller class, 4 pair groups)")
    assert "--" not in str(too_few.value)
    with pytest.raises(ValueError, match="probe must be one of logistic, lda"):
        calibrated_probe(x, [0, 1, 0, 1, 0, 1], list("abcdef"), probe="svm")


def test_a_grid_s_problem_is_said_to_follow_the_caller_s_setting():
    assert PROBES["logistic"].grid_problem([0.1, 1]) is None
    assert PROBES["logistic"].grid_problem([0.1, 0]) == "must be positive numbers, got [0.1, 0]"
    assert PROBES["lda"].grid_problem([]) == "must be numbers in [0, 1], got []"
    assert PROBES["lda"].grid_problem([0, 1]) is None
    assert probe_grid("lda", [1.0], [0.5]) == [0.5] and probe_grid("logistic", [1.0], [0.5]) == [1.0]


def test_a_fit_describes_itself_in_one_line():
    report = {"probe": "lda", "parameter": "shrinkage", "shrinkage": 0.03, "chosen_on": "dev",
              "grid": [{"shrinkage": 0.03, "accuracy": 0.5}], "temperature": 2.5,
              "train": {"accuracy": 1.0, "samples": 4, "roc_auc": None}}
    assert describe_fit(report) == ("lda probe, shrinkage = 0.03, chosen by dev (accuracy 50.0% there), "
                                    "temperature 2.5; train accuracy 100.0% of 4, ROC-AUC n/a")
