"""defect_judge/model/verdict_head.py on real components: the spec, a real linear probe finding a planted signal in
a tiny real model's hidden states, the head against scikit-learn's own pipeline, save/load, refusals of a
head that does not fit, the forward pass that stops at the highest layer read, and the training path's
features against the evaluation path's."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from defect_judge.model.chat import render_prompt
from defect_judge.errors import InputError
from defect_judge.data.schema import RawSample, Record, raw_to_record
from defect_judge.train.training import PaddingCollator, SupervisedDataset, fit_samples, prompt_ids
from defect_judge.model.verdict_head import (HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, HeadSpec, LayerTap, VerdictHead,
                                       decoder_layers, fit_probe, head_from_probe, load_head, pool, prompt_features)
from helpers import OUTPUT_FORMAT, TASK, build_tiny_model

FILLER = ["buf", "len", "ptr", "count", "node", "list", "size", "index", "flag", "data", "next", "value", "tmp"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, embedded_tokenizer):
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny-4"), embedded_tokenizer, layers=4, seed=3)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), folder


def planted(n: int, seed: int) -> list[Record]:
    """Records whose judgement is decided by one marker word in otherwise random code-like text."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        defective = i % 2 == 0
        words = [rng.choice(FILLER) for _ in range(rng.randint(8, 20))]
        words.insert(rng.randrange(len(words) + 1), "unchecked" if defective else "validated")
        raw = RawSample(subtype="空指针解引用", task=TASK, event="int f(void) { " + " ".join(words) + "; }",
                        output_format=OUTPUT_FORMAT, judgement="是" if defective else "否", reason="见代码。",
                        pair_id=f"p{i // 2}")
        records.append(raw_to_record(raw, f"s{seed}-{i}.json#0"))
    return records


def ids_of(tokenizer, records: list[Record]) -> list[list[int]]:
    return [tokenizer(render_prompt(tokenizer, r.prompt_messages), add_special_tokens=False)["input_ids"]
            for r in records]


# ----------------------------------------------------------------------- spec

@pytest.mark.parametrize("text,pooling,layers", [("mean@0.5", "mean", (0.5,)), ("last@1.0", "last", (1.0,)),
                                                 ("mean@8,12,16", "mean", (8, 12, 16)),
                                                 ("mean@0.27,0.4,0.53,0.67,0.8", "mean", (0.27, 0.4, 0.53, 0.67, 0.8))])
def test_spec_parses_and_prints_back(text, pooling, layers):
    spec = HeadSpec.parse(text)
    assert (spec.pooling, spec.layers) == (pooling, layers)
    assert HeadSpec.parse(str(spec)) == spec and str(spec) == text


def test_spec_layers_resolve_against_the_depth():
    assert HeadSpec.parse("mean@0.27,0.4,0.53,0.67,0.8").layer_indices(30) == (8, 12, 16, 20, 24)
    assert HeadSpec.parse("mean@1.0").layer_indices(30) == (30,) and HeadSpec.parse("mean@1").layer_indices(30) == (1,)
    assert HeadSpec.parse("last@0.01").layer_indices(4) == (1,)  # never layer 0 (the embeddings)
    with pytest.raises(InputError, match="the model has 4 layers"):
        HeadSpec.parse("mean@8").layer_indices(4)


@pytest.mark.parametrize("text", ["max@0.5", "mean", "mean@", "mean@0", "mean@1.5", "mean@a", "mean@0.5,,1"])
def test_a_bad_spec_is_one_clear_error(text):
    with pytest.raises(InputError) as caught:
        HeadSpec.parse(text, field="--verdict_head")
    assert "--verdict_head" in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------- features

def test_the_forward_pass_stops_after_the_highest_layer_read(tiny, embedded_tokenizer):
    model, _ = tiny
    layers = decoder_layers(model)
    ran = []
    handles = [layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, layer in enumerate(layers, 1)]
    try:
        ids = torch.tensor(ids_of(embedded_tokenizer, planted(1, 0)))
        with torch.no_grad(), LayerTap(model, [1, 2], stop=True) as tap:
            states = tap.run(input_ids=ids)
        assert ran == [1, 2] and [s.shape for s in states] == [(1, ids.shape[1], 64)] * 2
        ran.clear()
        with torch.no_grad():
            full = model(input_ids=ids, output_hidden_states=True).hidden_states
        assert ran == [1, 2, 3, 4]
        torch.testing.assert_close(states[1], full[2])  # hidden_states[i] is layer i's output below the top
    finally:
        for handle in handles:
            handle.remove()


def test_mean_and_last_pool_only_the_masked_tokens():
    states = [torch.arange(24, dtype=torch.float32).view(2, 4, 3)]
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(pool(states, mask, "mean"), torch.tensor([[1.5, 2.5, 3.5], [16.5, 17.5, 18.5]]))
    torch.testing.assert_close(pool(states, mask, "last"), torch.tensor([[3.0, 4.0, 5.0], [21.0, 22.0, 23.0]]))
    both = pool([states[0], states[0] * 2], mask, "mean")  # layers concatenated in order
    assert both.shape == (2, 6)
    torch.testing.assert_close(both[:, 3:], 2 * both[:, :3])


def test_batched_features_equal_one_prompt_at_a_time(tiny, embedded_tokenizer):
    model, _ = tiny
    prompts = ids_of(embedded_tokenizer, planted(5, 1))
    together = prompt_features(model, prompts, [2, 4], "mean", batch_tokens=100_000)
    for index, prompt in enumerate(prompts):
        alone = prompt_features(model, [prompt], [2, 4], "mean")
        torch.testing.assert_close(together[index], alone[0], atol=1e-5, rtol=1e-4)
    last = prompt_features(model, prompts, [3], "last", batch_tokens=100_000)
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([prompts[0]]), output_hidden_states=True).hidden_states[3][0, -1]
    torch.testing.assert_close(last[0], expected, atol=1e-5, rtol=1e-4)


def test_training_batches_pool_the_same_prompt_states_as_evaluation(tiny, embedded_tokenizer):
    """The trainer pools the prompt part of prompt + answer sequences (right-padded, prompt_mask); evaluation
    pools the rendered prompt alone: the states agree, so a head trained on one is scored on the other."""
    model, _ = tiny
    records = planted(3, 2)
    samples = fit_samples(embedded_tokenizer, records, 4096)
    batch = PaddingCollator(embedded_tokenizer.pad_token_id)([SupervisedDataset(samples, "是")[i] for i in range(3)])
    assert batch["verdict_label"].tolist() == [1.0, 0.0, 1.0]
    with torch.no_grad(), LayerTap(model, [2, 4]) as tap:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        trained = pool([tap.states[2], tap.states[4]], batch["prompt_mask"], "mean")
    assert [prompt_ids(s) for s in samples] == ids_of(embedded_tokenizer, records)
    evaluated = prompt_features(model, ids_of(embedded_tokenizer, records), [2, 4], "mean")
    torch.testing.assert_close(trained, evaluated, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------ fit

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


# ----------------------------------------------------------------- save, load

def saved_head(folder, model) -> VerdictHead:
    head = VerdictHead([2, 4], "mean", model.config.hidden_size, model.config.num_hidden_layers, positive="是",
                       negative="否", spec="mean@0.5,1.0", fit={"C": 0.1})
    with torch.no_grad():
        for tensor in (head.mean, head.scale, head.weight):
            tensor.copy_(torch.rand_like(tensor) + 0.5)
        head.bias.fill_(-0.25)
    head.save(folder)
    return head


def test_save_and_load_round_trip_exactly(tiny, tmp_path):
    model, _ = tiny
    head = saved_head(tmp_path, model)
    loaded = load_head(tmp_path / HEAD_CONFIG_FILE)
    for name, tensor in head.state_tensors().items():
        assert torch.equal(loaded.state_tensors()[name], tensor), name
    assert (loaded.spec, loaded.layers, loaded.pooling, loaded.positive, loaded.fit) == \
        ("mean@0.5,1.0", (2, 4), "mean", "是", {"C": 0.1})
    loaded.check_fits(model.config)


def test_a_head_for_another_model_or_a_corrupt_file_is_one_clear_error(tiny, tmp_path, embedded_tokenizer):
    from transformers import AutoConfig

    model, _ = tiny
    saved_head(tmp_path, model)
    other = AutoConfig.from_pretrained(build_tiny_model(tmp_path / "wide", embedded_tokenizer, hidden=96))
    with pytest.raises(InputError, match="hidden size 64 and 4 layers, this model has hidden size 96"):
        load_head(tmp_path).check_fits(other)
    weights = tmp_path / HEAD_WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(InputError) as caught:
        load_head(tmp_path)
    assert str(weights) in str(caught.value) and "corrupt" in str(caught.value)
    (tmp_path / HEAD_CONFIG_FILE).write_text('{"schema": "defect-judge/verdict-head/v1", "layers": [2, 9]}')
    with pytest.raises(InputError, match="field 'pooling'|field 'layers'"):
        load_head(tmp_path)
    with pytest.raises(InputError, match="not a verdict head"):
        load_head(tmp_path / "wide")
