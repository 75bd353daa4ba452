"""defect_judge/train/lora.py on a real tiny model (4 decoder layers) and real peft adapters: which transformer
layers train (every one, the top N, or that fraction of them), the linear modules all-linear adapts, LoRA adapters
on all of them or on named modules, full fine-tuning of the top layers only (autograd never below them), and the
parameter counts (also of ZeRO-3's partitioned parameters). Through train_lora.py's training_model:
tests/scripts/test_train_lora.py."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from defect_judge.train.lora import (ALL_LINEAR, freeze_below, layer_linear_names, parameter_counts, top_layers,
                                     with_lora_adapters)
from helpers import assert_input_error, build_tiny_model

LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]  # a Llama layer's
LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "activation_checkpointing": False}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def four_layers_dir(tmp_path_factory, embedded_tokenizer):
    return build_tiny_model(tmp_path_factory.mktemp("lora") / "tiny-4", embedded_tokenizer, layers=4)


@pytest.fixture
def model(four_layers_dir):
    """A fresh copy of the 4-layer tiny model (peft and freeze_below change the model they are given)."""
    return AutoModelForCausalLM.from_pretrained(four_layers_dir, dtype=torch.float32)


def trainable(model) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]


def adapted(model) -> set[tuple[int, str]]:
    """(layer, module) of every LoRA adapter in the model."""
    found = set()
    for name, _ in model.named_parameters():
        match = re.search(r"\.layers\.(\d+)\.\w+\.(\w+)\.lora_A\.", name)
        if match:
            found.add((int(match[1]), match[2]))
    return found


# ------------------------------------------------------------------ which layers

@pytest.mark.parametrize("fraction,depth,layers", [(0.5, 30, list(range(15, 30))), (0.5, 2, [1]), (0.1, 4, [3]),
                                                   (0.99, 4, [0, 1, 2, 3])])
def test_trainable_layers_below_one_are_a_fraction_of_the_depth(fraction, depth, layers):
    model = SimpleNamespace(config=LlamaConfig(num_hidden_layers=depth))  # all top_layers reads of a model
    assert top_layers(model, fraction) == layers


def test_a_count_of_layers_is_the_top_ones_and_none_means_every_layer(model):
    assert top_layers(model, 0) is None and top_layers(model, -1) is None
    assert top_layers(model, 1) == [3] and top_layers(model, 3) == [1, 2, 3]
    assert top_layers(model, 4) == [0, 1, 2, 3] and top_layers(model, 2.0) == [2, 3]
    assert top_layers(model, 0.01) == [3]  # a fraction is at least one layer
    assert_input_error(lambda: top_layers(model, 5), "--trainable_layers 5", "the model has only 4 layers")
    assert_input_error(lambda: top_layers(model, 2.5), "--trainable_layers 2.5", "a whole number of layers")


def test_the_linear_modules_of_the_layers_leave_out_the_output_layer(model):
    assert isinstance(model.lm_head, torch.nn.Linear)
    assert layer_linear_names(model) == LINEAR


# ------------------------------------------------------------------ LoRA adapters

def test_all_linear_adapts_every_linear_module_of_every_layer_and_only_the_adapters_train(model):
    before = parameter_counts(model)
    assert before[0] == before[1]  # a loaded model trains everything
    wrapped = with_lora_adapters(model, target_modules=ALL_LINEAR, trainable_layers=0, **LORA)
    assert adapted(wrapped) == {(layer, name) for layer in range(4) for name in LINEAR}
    assert trainable(wrapped) and all(".lora_A." in n or ".lora_B." in n for n in trainable(wrapped))
    assert not [n for n, _ in wrapped.named_parameters() if "lm_head.lora" in n or "embed_tokens.lora" in n]
    # each adapter of a linear layer in -> out: A (rank x in) and B (out x rank)
    expected = sum(4 * (module.in_features + module.out_features) for name, module in model.named_modules()
                   if name.endswith(tuple(f".{n}.base_layer" for n in LINEAR)))
    assert parameter_counts(wrapped) == (expected, before[1] + expected)


def test_named_modules_in_the_top_half(model):
    wrapped = with_lora_adapters(model, target_modules=" q_proj, v_proj,", trainable_layers=0.5, **LORA)
    assert adapted(wrapped) == {(layer, name) for layer in (2, 3) for name in ("q_proj", "v_proj")}
    assert all(".layers.2." in n or ".layers.3." in n for n in trainable(wrapped))


def test_all_linear_in_the_top_layer_only(model):
    wrapped = with_lora_adapters(model, target_modules=ALL_LINEAR, trainable_layers=1, **LORA)
    assert adapted(wrapped) == {(3, name) for name in LINEAR}


def test_rank_alpha_and_dropout_reach_every_adapter(model):
    wrapped = with_lora_adapters(model, target_modules="q_proj", trainable_layers=0, rank=2, alpha=6.0, dropout=0.25,
                                 activation_checkpointing=False)
    q_proj = wrapped.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.lora_A["default"].weight.shape == (2, q_proj.in_features)
    assert q_proj.lora_B["default"].weight.shape == (q_proj.out_features, 2)
    assert q_proj.scaling["default"] == 3.0  # alpha / rank
    assert q_proj.lora_dropout["default"].p == 0.25


@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_checkpointing_makes_the_embeddings_output_require_grad(four_layers_dir, checkpointing):
    """Checkpointed layers recompute from their input, which must require grad for the adapters to get one."""
    base = AutoModelForCausalLM.from_pretrained(four_layers_dir, dtype=torch.float32)
    wrapped = with_lora_adapters(base, target_modules=ALL_LINEAR, trainable_layers=0,
                                 **(LORA | {"activation_checkpointing": checkpointing}))
    assert wrapped.get_input_embeddings()(torch.tensor([[1, 2, 3]])).requires_grad is checkpointing


@pytest.mark.parametrize("targets,layers,words", [
    ("nope_proj", 0, "Target modules {'nope_proj'} not found"),
    ("nope_proj", 1, "not found"),
])
def test_modules_the_model_lacks_are_one_line_naming_the_flag(model, targets, layers, words):
    assert_input_error(lambda: with_lora_adapters(model, target_modules=targets, trainable_layers=layers, **LORA),
                       f"--lora_target_modules {targets!r}: ", words)


def test_too_many_trainable_layers_are_refused_before_peft_touches_the_model(model):
    assert_input_error(lambda: with_lora_adapters(model, target_modules=ALL_LINEAR, trainable_layers=9, **LORA),
                       "--trainable_layers 9: the model has only 4 layers")
    assert not hasattr(model, "peft_config") and layer_linear_names(model) == LINEAR


# ------------------------------------------------------------------ full fine-tuning of the top layers

def test_full_fine_tuning_of_the_top_layers_never_goes_below_them(model):
    """freeze_below([2, 3]): layers 2 and 3 and the final norm train; the embeddings (tied to the output layer) and
    layers 0 and 1 are frozen, their outputs carry no graph, and the backward pass gives them no gradient."""
    freeze_below(model, [2, 3])
    assert {n.split(".")[2] if ".layers." in n else n for n in trainable(model)} == {"2", "3", "model.norm.weight"}
    assert not model.get_input_embeddings().weight.requires_grad and model.lm_head.weight is \
        model.get_input_embeddings().weight
    counts = parameter_counts(model)
    assert counts[0] == sum(p.numel() for n, p in model.named_parameters() if n in trainable(model)) and \
        counts[1] == sum(p.numel() for p in model.parameters())
    outputs = {}
    for index, layer in enumerate(model.model.layers):
        layer.register_forward_hook(lambda module, args, out, index=index: outputs.__setitem__(
            index, out[0] if isinstance(out, tuple) else out))
    ids = torch.tensor([[5, 17, 99, 3, 42, 8]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert [outputs[i].requires_grad for i in range(4)] == [False, False, True, True]
    for name, param in model.named_parameters():
        if ".layers.0." in name or ".layers.1." in name or "embed" in name:
            assert param.grad is None, name
    assert all(param.grad is not None and param.grad.abs().sum() > 0 for name, param in model.named_parameters()
               if ".layers.3.self_attn.q_proj" in name or name == "model.norm.weight")


def test_freezing_again_moves_the_boundary(model):
    freeze_below(model, [1, 2, 3])
    freeze_below(model, [3])
    assert trainable(model) and all(".layers.3." in n or n == "model.norm.weight" for n in trainable(model))


def test_zero3_partitions_count_their_full_size(model):
    """Under ZeRO-3 a rank holds an empty tensor for each parameter, its full size in ``ds_numel`` (as DeepSpeed
    partitions it): the counts are the model's, not the rank's share."""
    freeze_below(model, [3])
    counts = parameter_counts(model)
    for param in model.parameters():
        param.ds_numel = param.numel()
        param.data = torch.empty(0)
    assert sum(p.numel() for p in model.parameters()) == 0
    assert parameter_counts(model) == counts and 0 < counts[0] < counts[1]
