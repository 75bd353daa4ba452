"""defect_judge/train/linear_probe.py's probe on real components (its maths: train/probe.py): a real linear probe
finding a planted signal in a tiny real model's hidden states, and the head made from it against scikit-learn's own
pipeline."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from scipy.special import expit

from defect_judge.model.hidden_states import prompt_features
from defect_judge.train.linear_probe import fit_probe, head_from_probe
from defect_judge.train.probe import PROBES, describe_fit
from helpers import four_layer_model, ids_of, planted


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, embedded_tokenizer):
    return four_layer_model(tmp_path_factory.mktemp("tiny-4"), embedded_tokenizer)


@pytest.mark.parametrize("probe", ["logistic", "lda"])
def test_the_probe_finds_a_planted_signal_on_held_out_samples(tiny, embedded_tokenizer, probe):
    model, _ = tiny
    train, held_out = planted(60, 10), planted(30, 11)
    train_x = prompt_features(model, ids_of(embedded_tokenizer, train), [1, 2], "mean").numpy()
    test_x = prompt_features(model, ids_of(embedded_tokenizer, held_out), [1, 2], "mean").numpy()
    train_y = [int(r.judgement == "是") for r in train]
    test_y = [int(r.judgement == "是") for r in held_out]
    fit = fit_probe(train_x, train_y, [r.pair_id for r in train], probe=probe, dev_x=test_x, dev_y=test_y)
    assert fit.report["dev"]["accuracy"] == 1.0 and fit.report["dev"]["roc_auc"] == 1.0
    assert fit.report["chosen_on"].startswith("cross-validation") and len(fit.report["grid"]) >= 5
    assert fit.report["probe"] == probe and fit.report[fit.report["parameter"]] in PROBES[probe].grid
    # A signal that is not there: shuffled labels stay near chance on held-out data.
    shuffled = random.Random(0).sample(train_y, len(train_y))
    noise = fit_probe(train_x, shuffled, [r.pair_id for r in train], probe=probe, dev_x=test_x, dev_y=test_y)
    assert noise.report["dev"]["accuracy"] < 0.8


def _reference_pipeline(probe: str, value: float):
    """scikit-learn's own pipeline for the probe, built here and not by the module under test."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if probe == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=value, max_iter=5000))
    return make_pipeline(StandardScaler(), PCA(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage=value))


@pytest.mark.parametrize("probe, value", [("logistic", 0.3), ("lda", 0.1)])
def test_the_head_is_the_fitted_pipeline_exactly(tiny, probe, value):
    """The head (scaler's mean/scale, one weight vector and bias) gives the pipeline's predict_proba at the
    fitted temperature, on the training rows and on new ones: for LDA the principal components are folded into the
    head's weights. Its verdicts at 0.5 are the pipeline's own."""
    model, _ = tiny
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2 * 64)) * rng.uniform(0.1, 5, size=2 * 64) + rng.normal(size=2 * 64)
    y = (x[:, 3] + 0.5 * x[:, 70] > np.median(x[:, 3] + 0.5 * x[:, 70])).astype(int)
    train, new = slice(0, 40), slice(40, 60)
    fit = fit_probe(x[train], y[train], [str(i // 2) for i in range(40)], probe=probe, grid=[value])
    head = head_from_probe(fit, "mean@0.5,1.0", model.config, positive="是", negative="否")
    reference = _reference_pipeline(probe, value).fit(x[train], y[train])
    temperature = fit.report["temperature"]
    calibration = fit.report["calibration"]
    assert temperature > 0 and calibration["log_loss_after"] <= calibration["log_loss_before"]
    for rows in (train, new):
        expected = expit(reference.decision_function(x[rows]) / temperature)
        ours = head.probabilities(torch.tensor(x[rows], dtype=torch.float32)).numpy()
        np.testing.assert_allclose(ours, expected, atol=1e-5)
        np.testing.assert_allclose(fit.probabilities(x[rows]), expected, atol=1e-6)
        assert ((ours >= 0.5) == (reference.predict(x[rows]) == 1)).all()
    assert head.layers == (2, 4) and head.dim == 128
    assert fit.report["parameter"] == ("C" if probe == "logistic" else "shrinkage") and fit.report["probe"] == probe
    assert describe_fit(fit.report).startswith(f"{probe} probe, {fit.report['parameter']} = {value:g}, chosen by given")
    assert f"temperature {temperature:.3g}" in describe_fit(fit.report)


def test_the_head_is_calibrated_and_its_scores_keep_their_ranking():
    """LDA on more dimensions than samples separates train perfectly and its log-odds run to the tens: as
    probabilities in float32 many round to exactly 0 or 1, and the ranking ROC and VD-S read is lost. The
    temperature chosen on out-of-fold decisions brings its held-out log loss down and keeps every score apart,
    with the same verdicts."""
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 300))
    y = (x[:, 0] + 0.7 * rng.normal(size=200) > 0).astype(int)
    train, held = slice(0, 80), slice(80, 200)
    fit = fit_probe(x[train], y[train], [str(i // 2) for i in range(80)], probe="lda", grid=[0.001])
    reference = _reference_pipeline("lda", 0.001).fit(x[train], y[train])
    raw = torch.sigmoid(torch.tensor(reference.decision_function(x[held]), dtype=torch.float32)).numpy()
    head = head_from_probe(fit, "mean@0.5,1.0", _Config(150), positive="是", negative="否")
    calibrated = head.probabilities(torch.tensor(x[held], dtype=torch.float32)).numpy()
    assert fit.report["temperature"] > 2
    assert ((raw == 0) | (raw == 1)).sum() > 10 and not ((calibrated == 0) | (calibrated == 1)).any()
    assert log_loss(y[held], calibrated) < log_loss(y[held], np.clip(raw, 1e-7, 1 - 1e-7)) / 2
    assert roc_auc_score(y[held], calibrated) >= roc_auc_score(y[held], raw)
    assert ((calibrated >= 0.5) == (raw >= 0.5)).all()


@pytest.mark.parametrize("probe, grid", [("lda", [0.001, 0.03, 0.3]), ("logistic", [0.01, 1.0])])
def test_the_calibration_of_a_chosen_probe_is_the_one_it_would_have_alone(probe, grid):
    """Choosing among several values calibrates the chosen one on the out-of-fold decisions its own
    cross-validation made; fitted alone on the same folds, that value gets the same temperature."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 120))
    y = (x[:, 0] + 0.8 * rng.normal(size=80) > 0).astype(int)
    groups = [str(i // 2) for i in range(80)]
    chosen = fit_probe(x, y, groups, probe=probe, grid=grid)
    value = chosen.report[chosen.report["parameter"]]
    assert value != grid[0]  # each value's temperature differs: the first value's folds would not do
    alone = fit_probe(x, y, groups, probe=probe, grid=[value])
    assert chosen.report["chosen_on"].startswith("cross-validation") and alone.report["chosen_on"].startswith("given")
    assert chosen.report["temperature"] == pytest.approx(alone.report["temperature"], rel=1e-9)
    for loss in ("log_loss_before", "log_loss_after"):
        assert chosen.report["calibration"][loss] == pytest.approx(alone.report["calibration"][loss], rel=1e-9)
    assert chosen.report["temperature"] != pytest.approx(1.0)


class _Config:
    """The two fields of a model config that a head is made for: the hidden size, and a depth of 4 layers (the
    spec mean@0.5,1.0 then reads layers 2 and 4)."""
    def __init__(self, hidden_size: int):
        self.hidden_size, self.num_hidden_layers = hidden_size, 4


def test_a_head_fitted_before_the_probe_was_named_still_describes_itself():
    """verdict_head.json written by earlier versions has C and no probe: it reads as the logistic probe."""
    old = {"C": 0.1, "chosen_on": "dev", "grid": [{"C": 0.1, "accuracy": 0.75}]}
    assert describe_fit(old) == "logistic probe, C = 0.1, chosen by dev (accuracy 75.0% there)"

