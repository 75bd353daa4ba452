"""Which weights fine-tuning trains: LoRA adapters (on every linear layer or on named modules, in every layer or
only the top ones) or, in full fine-tuning of the top layers only, those layers' own weights.

Training only the top N layers stops the backward pass below them: autograd never builds the graph through
the frozen layers, which is where the compute and activation memory go.
"""
from __future__ import annotations

import torch

from defect_judge.errors import InputError
from defect_judge.model.loading import quiet_library_deprecations

ALL_LINEAR = "all-linear"  # peft's name for every linear layer but the output layer


def top_layers(model, count: float) -> list[int] | None:
    """Indices of the top ``count`` transformer layers, or of that fraction of them when ``count`` is below 1
    (0.5: the top half; at least one layer); None: all of them."""
    total = model.config.num_hidden_layers
    if count <= 0:
        return None
    if count < 1:
        count = max(1, round(count * total))
    elif count != int(count):
        raise InputError(f"--trainable_layers {count:g}: a whole number of layers, or a fraction of them below 1")
    count = int(count)
    if count > total:
        raise InputError(f"--trainable_layers {count}: the model has only {total} layers")
    return list(range(total - count, total))


def layer_linear_names(model) -> list[str]:
    """The names of the linear modules inside the transformer layers (what peft's all-linear adapts)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and ".layers." in name})


def freeze_below(model, layers: list[int]) -> None:
    """Full fine-tuning of the top layers only: everything else (embeddings, the layers below, the tied
    output layer) is frozen, so autograd never goes below the lowest trained layer."""
    keep = tuple(f"layers.{i}." for i in layers)
    final_norm = model.get_decoder().norm if hasattr(model.get_decoder(), "norm") else None
    kept = {id(p) for p in final_norm.parameters()} if final_norm is not None else set()
    for name, param in model.named_parameters():
        param.requires_grad_(any(part in name for part in keep) or id(param) in kept)


def with_lora_adapters(model, *, rank: int, alpha: float, dropout: float, target_modules: str,
                       trainable_layers: float, activation_checkpointing: bool):
    """The model wrapped by peft with LoRA adapters on ``target_modules`` (``all-linear`` or comma-separated
    module names) of the top ``trainable_layers`` layers (``top_layers``; 0: every layer); only the adapters
    train."""
    from peft import LoraConfig, get_peft_model

    targets = target_modules if target_modules == ALL_LINEAR else [t.strip() for t in target_modules.split(",")
                                                                      if t.strip()]
    layers = top_layers(model, trainable_layers)
    if layers and targets == ALL_LINEAR:
        targets = layer_linear_names(model)  # peft takes a layer subset only with named modules
    config = LoraConfig(task_type="CAUSAL_LM", r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=targets, layers_to_transform=layers,
                        layers_pattern="layers" if layers else None)
    try:
        with quiet_library_deprecations():
            model = get_peft_model(model, config)
    except ValueError as error:
        raise InputError(f"--lora_target_modules {target_modules!r}: {error}") from None
    if activation_checkpointing:
        model.enable_input_require_grads()  # checkpointed layers need an input that requires grad
    return model


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, all) parameters of the model."""

    def numel(param) -> int:
        return getattr(param, "ds_numel", param.numel())  # ZeRO-3 partitions hold 0 elements locally

    return (sum(numel(p) for p in model.parameters() if p.requires_grad),
            sum(numel(p) for p in model.parameters()))
