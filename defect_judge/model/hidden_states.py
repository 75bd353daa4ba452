"""The decoder layers' hidden states over a prompt, pooled: what the verdict head reads, computed by a forward
pass that stops after the highest layer read.

A layer is a 1-based decoder layer index (1 = the first decoder layer's output, depth = the last's, before the
final norm). ``LayerTap`` keeps chosen layers' outputs through forward hooks (and, with ``stop``, ends the pass
right after the highest of them: the layers above it never run); ``pool`` reduces each layer's states over the
prompt's tokens (``mean`` of every prompt token, or the ``last`` one) and concatenates the layers;
``pooled_prompt_features`` runs whole lists of prompts in low-padding length groups. The verdict head
(``verdict_head.py``), its training (``train/trainer.py``) and the linear probe (``train/linear_probe.py``)
all read the model through here.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

from defect_judge.errors import InputError
from defect_judge.model.inference import prefill_groups

POOLINGS = ("mean", "last")
# Features are computed in groups of similar length (little padding) of at most this many tokens.
FEATURE_BATCH_TOKENS_CPU = 4096
FEATURE_BATCH_TOKENS_GPU = 32768


def causal_lm(model) -> torch.nn.Module:
    """The causal LM inside a DeepSpeed engine, DDP or a peft wrapper."""
    while True:
        if isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model


def decoder_layers(model) -> torch.nn.ModuleList:
    decoder = causal_lm(model).get_decoder()
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise InputError(f"{type(decoder).__name__} has no list of decoder layers (.layers): the verdict head "
                         f"cannot read its hidden states")
    return layers


class _StopForward(Exception):
    """Raised by the last tap to end a forward pass whose upper layers no one reads."""


class LayerTap(contextlib.AbstractContextManager):
    """Keeps the outputs of chosen decoder layers (1-based) during a forward pass; with ``stop`` the pass
    ends right after the highest of them (use ``run``)."""

    def __init__(self, model, layers: Sequence[int], *, stop: bool = False):
        self.model, self.layers, self.stop = model, tuple(layers), stop
        self.states: dict[int, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> "LayerTap":
        modules = decoder_layers(self.model)
        top = max(self.layers)
        for layer in self.layers:
            self._handles.append(modules[layer - 1].register_forward_hook(self._hook(layer, top)))
        return self

    def _hook(self, layer: int, top: int):
        def hook(module, args, output):
            self.states[layer] = output[0] if isinstance(output, tuple) else output
            if self.stop and layer == top:
                raise _StopForward

        return hook

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return False

    def run(self, **forward_kwargs) -> list[torch.Tensor]:
        """The tapped layers' outputs, in layer order, of ``model(**forward_kwargs)``."""
        self.states.clear()
        try:
            self.model(**forward_kwargs)
        except _StopForward:
            pass
        return [self.states[layer] for layer in self.layers]


def pool(states: Sequence[torch.Tensor], mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[batch, len(states) * hidden] float32: each state [batch, seq, hidden] pooled over the positions
    where ``mask`` [batch, seq] is true (the prompt's tokens), then concatenated."""
    mask = mask.to(states[0].device).bool()
    if pooling == "mean":
        weights = mask.unsqueeze(-1).float()
        count = weights.sum(1).clamp(min=1.0)
        return torch.cat([(state.float() * weights).sum(1) / count for state in states], dim=-1)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask, positions, torch.full_like(positions, -1)).max(1).values.clamp(min=0)
        rows = torch.arange(mask.shape[0], device=mask.device)
        return torch.cat([state[rows, last].float() for state in states], dim=-1)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


@contextlib.contextmanager
def layers_up_to(model, top: int) -> Iterator[None]:
    """Inside it, ``model`` runs its first ``top`` decoder layers only (then its final norm and head, on the
    positions asked for): the cost floor of anything that reads layer ``top``'s states, with the model's own
    caching and batching (``eval/bench_eval.py``'s prefill to the head's layer)."""
    config = causal_lm(model).config
    config = getattr(config, "text_config", None) or config
    depth = config.num_hidden_layers
    config.num_hidden_layers = top
    try:
        yield
    finally:
        config.num_hidden_layers = depth


def _length_groups(lengths: Sequence[int], budget: int) -> Iterator[list[int]]:
    """Indices, longest first, in the low-padding groups evaluation prefills in (``inference.prefill_groups``),
    each of at most ``budget`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for run in prefill_groups([lengths[i] for i in order], max_tokens=budget):
        yield [order[i] for i in run]


def pooled_prompt_features(model, prompts: Sequence[Sequence[int]], layers: Sequence[int], poolings: Sequence[str],
                           *, batch_tokens: int | None = None, progress: bool = False,
                           desc: str = "features") -> dict[str, torch.Tensor]:
    """{pooling: [len(prompts), len(layers) * hidden] float32} (on the CPU, in the order of ``prompts``): each
    prompt's token ids run through the model up to its highest tapped layer, right-padded in length groups."""
    from tqdm.auto import tqdm

    device = next(causal_lm(model).parameters()).device
    budget = batch_tokens or (FEATURE_BATCH_TOKENS_GPU if device.type == "cuda" else FEATURE_BATCH_TOKENS_CPU)
    rows: dict[str, list] = {pooling: [None] * len(prompts) for pooling in poolings}
    with torch.inference_mode(), LayerTap(model, layers, stop=True) as tap, \
            tqdm(total=len(prompts), desc=desc, unit="sample", disable=not progress, leave=False) as bar:
        for group in _length_groups([len(p) for p in prompts], budget):
            width = max(len(prompts[i]) for i in group)
            input_ids = torch.zeros((len(group), width), dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, index in enumerate(group):
                input_ids[row, :len(prompts[index])] = torch.tensor(list(prompts[index]), dtype=torch.long)
                mask[row, :len(prompts[index])] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            states = tap.run(input_ids=input_ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
            for pooling in poolings:
                features = pool(states, mask, pooling).cpu()
                for row, index in enumerate(group):
                    rows[pooling][index] = features[row]
            bar.update(len(group))
    width = len(layers) * causal_lm(model).config.hidden_size
    return {pooling: torch.stack(found) if found else torch.zeros((0, width)) for pooling, found in rows.items()}


def prompt_features(model, prompts: Sequence[Sequence[int]], layers: Sequence[int], pooling: str,
                    **kwargs) -> torch.Tensor:
    """[len(prompts), len(layers) * hidden] float32: the head's input for each prompt (token ids)."""
    return pooled_prompt_features(model, prompts, layers, (pooling,), **kwargs)[pooling]
