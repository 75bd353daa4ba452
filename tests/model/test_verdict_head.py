"""defect_judge/model/verdict_head.py on real components: the spec, save/load, and refusals of a head that does
not fit."""
from __future__ import annotations

import pytest
import torch

from defect_judge.errors import InputError
from defect_judge.model.head_files import HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE
from defect_judge.model.verdict_head import HeadSpec, VerdictHead, load_head
from helpers import build_tiny_model, four_layer_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, embedded_tokenizer):
    return four_layer_model(tmp_path_factory.mktemp("tiny-4"), embedded_tokenizer)


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


def test_the_head_drops_features_while_training_only(tiny, tmp_path):
    """``--verdict_head_dropout`` acts on the standardised features in training; in evaluation the head is the
    fitted formula, sigmoid(weight · (features - mean) / scale + bias), computed here by hand."""
    model, _ = tiny
    head = saved_head(tmp_path, model)
    head.dropout = 0.5
    features = torch.randn(64, head.dim)
    by_hand = ((features - head.mean) / head.scale) @ head.weight + head.bias
    head.eval()
    torch.testing.assert_close(head(features), by_hand.detach())
    torch.testing.assert_close(head.probabilities(features), torch.sigmoid(by_hand).detach())
    head.train()
    torch.manual_seed(0)
    dropped = head(features).detach()
    assert not torch.allclose(dropped, by_hand.detach())
    # inverted dropout keeps the expected logit: its mean over many draws comes back to the formula's
    draws = torch.stack([head(features).detach() for _ in range(2000)]).mean(0)
    torch.testing.assert_close(draws, by_hand.detach(), atol=0.25 * by_hand.abs().max().item(), rtol=0)


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
