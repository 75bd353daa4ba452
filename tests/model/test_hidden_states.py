"""defect_judge/model/hidden_states.py on a tiny real model: the forward pass that stops at the highest layer
read, pooling over the prompt's tokens only, batched features against one prompt at a time, and the training
path's features against the evaluation path's."""
from __future__ import annotations

import pytest
import torch

from defect_judge.model.hidden_states import LayerTap, decoder_layers, pool, prompt_features
from defect_judge.train.samples import PaddingCollator, SupervisedDataset, fit_samples, prompt_ids
from helpers import four_layer_model, ids_of, planted


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, embedded_tokenizer):
    return four_layer_model(tmp_path_factory.mktemp("tiny-4"), embedded_tokenizer)


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
