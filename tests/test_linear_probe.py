"""defect_judge/train/linear_probe.py's probe on real components: a real linear probe finding a planted signal in
a tiny real model's hidden states, and the head made from it against scikit-learn's own pipeline."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from defect_judge.model.hidden_states import prompt_features
from defect_judge.train.linear_probe import fit_probe, head_from_probe
from planted import four_layer_model, ids_of, planted


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, embedded_tokenizer):
    return four_layer_model(tmp_path_factory.mktemp("tiny-4"), embedded_tokenizer)


def test_the_probe_finds_a_planted_signal_on_held_out_samples(tiny, embedded_tokenizer):
    model, _ = tiny
    train, held_out = planted(60, 10), planted(30, 11)
    train_x = prompt_features(model, ids_of(embedded_tokenizer, train), [1, 2], "mean").numpy()
    test_x = prompt_features(model, ids_of(embedded_tokenizer, held_out), [1, 2], "mean").numpy()
    train_y = [int(r.judgement == "是") for r in train]
    test_y = [int(r.judgement == "是") for r in held_out]
    fit = fit_probe(train_x, train_y, [r.pair_id for r in train], dev_x=test_x, dev_y=test_y)
    assert fit.report["dev"]["accuracy"] == 1.0 and fit.report["dev"]["roc_auc"] == 1.0
    assert fit.report["chosen_on"].startswith("cross-validation") and len(fit.report["grid"]) >= 5
    # A signal that is not there: shuffled labels stay near chance on held-out data.
    shuffled = random.Random(0).sample(train_y, len(train_y))
    noise = fit_probe(train_x, shuffled, [r.pair_id for r in train], dev_x=test_x, dev_y=test_y)
    assert noise.report["dev"]["accuracy"] < 0.8


def test_the_head_is_the_fitted_pipeline_exactly(tiny):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model, _ = tiny
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2 * 64)) * rng.uniform(0.1, 5, size=2 * 64) + rng.normal(size=2 * 64)
    y = (x[:, 3] + 0.5 * x[:, 70] > np.median(x[:, 3] + 0.5 * x[:, 70])).astype(int)
    fit = fit_probe(x, y, [str(i // 2) for i in range(40)], c_grid=[0.3])
    head = head_from_probe(fit, "mean@0.5,1.0", model.config, positive="是", negative="否")
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=5000)).fit(x, y)
    ours = head.probabilities(torch.tensor(x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(x)[:, 1], atol=1e-5)
    assert head.layers == (2, 4) and head.dim == 128
