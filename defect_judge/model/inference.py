"""Inference for evaluation: batched greedy generation, and scoring candidate judgements by
log-probability. Which model a path names, and loading it, is ``paths.py``.

``eval/model_evaluation.py`` and ``eval/bench_eval.py`` both run through here,
so the benchmark measures exactly what the evaluation does.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

from defect_judge.errors import InputError
from defect_judge.templates import JUDGEMENT_PREFIX

log = logging.getLogger(__name__)

# End-of-turn markers of common chat templates; used as extra stop tokens when the
# template writes one and the tokenizer has it as a single token.
END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
# Prefill groups: at most this share of padding, and this many (padded) tokens per forward pass. A GPU
# wants big passes (bounded by activation memory); on a CPU, activations that outgrow the caches make
# every elementwise op memory-bound, and ~2k tokens a pass measured fastest.
PREFILL_MAX_WASTE = 0.1
PREFILL_MAX_TOKENS = 16384
PREFILL_MAX_TOKENS_CPU = 2048
# The tokens every prompt of a batch starts with (system prompt, chat markup, the task's opening words) run
# once per batch instead of once per sample when there are at least this many (0: never).
SHARED_PREFIX_MIN_TOKENS = 16


# -------------------------------------------------------------------- prompts

def encode_prompt(tokenizer, prompt_text: str) -> list[int]:
    """Token ids of a rendered prompt; the template already holds any special tokens."""
    return list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])


def stop_token_ids(tokenizer, model) -> list[int]:
    """End-of-turn ids: the tokenizer's eos, the generation config's, and the template's end-of-turn marker."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        ids += value if isinstance(value, list) else [value] if value is not None else []
    template = getattr(tokenizer, "chat_template", None) or ""
    for marker in END_OF_TURN_MARKERS:
        if marker in template:
            token = tokenizer.convert_tokens_to_ids(marker)
            if isinstance(token, int) and token != tokenizer.unk_token_id:
                ids.append(token)
    return sorted(set(ids))


def _left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device):
    import torch

    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            input_ids[row, width - len(sequence):] = torch.tensor(sequence, dtype=torch.long)
            mask[row, width - len(sequence):] = 1
    return input_ids.to(device), mask.to(device)


def _positions(mask):
    """Position ids that skip left padding, as ``generate`` computes them."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


# ------------------------------------------------------------------ generate

def greedy_config(model, *, max_new_tokens: int, stop_ids: Sequence[int], pad_id: int):
    """Plain greedy decoding: the model's sampling settings and repetition penalty are switched off."""
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0,
                            no_repeat_ngram_size=0, temperature=1.0, top_k=50, top_p=1.0,
                            eos_token_id=list(stop_ids), pad_token_id=pad_id,
                            bos_token_id=getattr(model.generation_config, "bos_token_id", None))


def cut_at_stop(tokens: list[int], stop_ids: Sequence[int]) -> tuple[list[int], bool]:
    """The generated tokens up to and with the first stop token, and whether there was one (else the answer was
    cut by max_new_tokens)."""
    for index, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[:index + 1], True
    return tokens, False


def decoded_answer(tokenizer, tokens: Sequence[int], stopped: bool) -> str:
    """The answer's text. An answer cut by max_new_tokens may end inside a character (a byte-level token holds
    part of a CJK character's bytes), which decodes to U+FFFD: those trailing replacement characters are no
    text of the answer and are dropped; the answer stays marked as cut (``stopped`` false)."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return text if stopped else text.rstrip("\ufffd")


def prefill_groups(lengths: Sequence[int], *, max_waste: float | None = None,
                   max_tokens: int | None = None) -> list[range]:
    """Split length-sorted prompts into runs that prefill together with little padding.

    Prefill is compute-bound, so every padding token costs as much as a real
    one; a run grows while its padded size stays within ``max_waste`` of its
    real tokens and within ``max_tokens`` (which bounds activation memory).
    """
    max_waste = PREFILL_MAX_WASTE if max_waste is None else max_waste
    max_tokens = PREFILL_MAX_TOKENS if max_tokens is None else max_tokens
    groups, start = [], 0
    while start < len(lengths):
        end, longest, real = start + 1, lengths[start], lengths[start]
        while end < len(lengths):
            longest_next, real_next = max(longest, lengths[end]), real + lengths[end]
            padded = longest_next * (end + 1 - start)
            if padded > (1 + max_waste) * real_next or padded > max_tokens:
                break
            longest, real, end = longest_next, real_next, end + 1
        groups.append(range(start, end))
        start = end
    return groups


def _token_budget(device) -> int:
    return PREFILL_MAX_TOKENS_CPU if str(device).startswith("cpu") else PREFILL_MAX_TOKENS


def _plain_dynamic_cache(cache) -> bool:
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)


def common_prefix_length(sequences: Sequence[Sequence[int]], *, keep: int) -> int:
    """How many leading tokens all ``sequences`` share, leaving each ``keep`` tokens of its own.

    0 when that is fewer than ``SHARED_PREFIX_MIN_TOKENS`` (the extra forward
    pass would cost more than it saves) or there is only one sequence.
    """
    if len(sequences) < 2:
        return 0
    length = shared_length(sequences, keep=keep)
    return length if SHARED_PREFIX_MIN_TOKENS and length >= SHARED_PREFIX_MIN_TOKENS else 0


def shared_length(sequences: Sequence[Sequence[int]], *, keep: int = 0) -> int:
    """How many leading tokens all ``sequences`` share, leaving each at least ``keep`` tokens of its own."""
    first, limit = sequences[0], min(len(s) for s in sequences) - keep
    length = 0
    while length < limit and all(s[length] == first[length] for s in sequences):
        length += 1
    return length


class SharedPrefix:
    """The KV cache of a prefix all prompts of a batch share, computed once; empty when there is none.

    A group of prompts then runs only its own tokens, on a copy of this cache
    expanded to the group's rows; positions continue after the prefix, so the
    keys and values are the ones a full forward pass would compute.
    """

    def __init__(self, model, prefix: Sequence[int], device):
        import torch

        self.layers = []
        if prefix:
            output = model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True, logits_to_keep=1)
            if _plain_dynamic_cache(output.cache):
                self.layers = [(layer.keys, layer.values) for layer in output.cache.layers]
        self.length = len(prefix) if self.layers else 0

    def forward(self, model, input_ids, mask, **kwargs):
        """``model(...)`` on left-padded rows that follow the prefix; returns the output and the full 2-D mask."""
        import torch
        from transformers.cache_utils import DynamicCache

        positions = _positions(mask)
        if self.length:
            cache, rows = DynamicCache(), input_ids.shape[0]
            for index, (keys, values) in enumerate(self.layers):
                cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), index)
            kwargs["cache"] = cache
            mask = torch.cat([mask.new_ones((mask.shape[0], self.length)), mask], dim=1)
            positions = positions + self.length
        output = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, **kwargs)
        return output, mask


def prefill_passes(model, sequences: Sequence[Sequence[int]], device, **forward_kwargs):
    """The forward passes over ``sequences`` as the batched modes run them.

    The prefix they all share runs once (``SharedPrefix``), then each
    low-padding group its own tokens, left-padded. Yields ``(group, output,
    prefix_length)``; the output's cache, if any, starts with the prefix.
    """
    shared = SharedPrefix(model, sequences[0][:common_prefix_length(sequences, keep=1)], device)
    for group in prefill_groups([len(s) - shared.length for s in sequences], max_tokens=_token_budget(device)):
        input_ids, mask = _left_pad([sequences[i][shared.length:] for i in group], 0, device)
        output, _ = shared.forward(model, input_ids, mask, **forward_kwargs)
        yield group, output, shared.length


def _prefill_cache(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, device):
    """KV cache of every prompt but its last token, prefilled by ``prefill_passes``, left-padded into one batch.

    ``generate`` then runs the last prompt token and decodes the whole batch
    together: decoding is bound by reading the weights, so a big batch costs
    little more per step than one sample. The cache is preallocated (static)
    because growing it by concatenation copies all of it at every step, which
    costs more than the model itself at batch 32. None when the model's cache
    layers are not plain full-attention ones (``generate`` then prefills itself).
    """
    from transformers.cache_utils import StaticCache, StaticLayer

    width = max(len(p) for p in prompts) - 1
    cache = StaticCache(config=model.config, max_cache_len=width + 1 + max_new_tokens)
    if not all(type(layer) is StaticLayer for layer in cache.layers):
        return None
    for group, output, prefix in prefill_passes(model, [p[:-1] for p in prompts], device, use_cache=True,
                                                 logits_to_keep=1):
        if not _plain_dynamic_cache(output.cache) or len(output.cache.layers) != len(cache.layers):
            return None
        for static, layer in zip(cache.layers, output.cache.layers):
            if not static.is_initialized:
                _, heads, _, dim = layer.keys.shape
                static.lazy_initialization(layer.keys.new_empty((len(prompts), heads, 0, dim)),
                                           layer.values.new_empty((len(prompts), heads, 0, layer.values.shape[-1])))
            # The group's own tokens, left-padded, end at ``width``; each row's copy of the shared prefix goes
            # right before its own first token (after the group copy, which put padding there for short rows).
            own = layer.keys.shape[2] - prefix
            static.keys[group.start:group.stop, :, width - own:width] = layer.keys[:, :, prefix:]
            static.values[group.start:group.stop, :, width - own:width] = layer.values[:, :, prefix:]
            for row in (group if prefix else ()):
                start = width - (len(prompts[row]) - 1)
                static.keys[row, :, start:start + prefix] = layer.keys[0, :, :prefix]
                static.values[row, :, start:start + prefix] = layer.values[0, :, :prefix]
    for static in cache.layers:
        static.cumulative_length.fill_(width)
    return cache


def generate_batch(model, tokenizer, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                   stop_ids: Sequence[int]) -> list[dict]:
    """Greedy answers for a batch of length-sorted prompt ids, decoded together with left padding.

    Returns per prompt ``response`` (``decoded_answer``: without special tokens, nor a cut character),
    ``generated_tokens`` (including the stop token) and ``stopped`` (ended at
    end-of-turn rather than at ``max_new_tokens``).
    """
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    device = next(model.parameters()).device
    input_ids, mask = _left_pad(prompts, pad_id, device)
    config = greedy_config(model, max_new_tokens=max_new_tokens, stop_ids=stop_ids, pad_id=pad_id)
    with torch.inference_mode():
        cache = None
        if len(prompts) > 1 and min(len(p) for p in prompts) > 1:
            cache = _prefill_cache(model, prompts, max_new_tokens, device)
        extra = {"cache": cache} if cache is not None else {}
        output = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config, **extra)
    answers = []
    for row in output[:, input_ids.shape[1]:].tolist():
        tokens, stopped = cut_at_stop(row, stop_ids)
        answers.append({"response": decoded_answer(tokenizer, tokens, stopped),
                        "generated_tokens": len(tokens), "stopped": stopped})
    return answers


# --------------------------------------------------------------------- score

@dataclass(frozen=True)
class Candidate:
    """``prompt + 判断:{judgement}`` as one token sequence; tokens [start, len) are the continuation."""
    judgement: str
    input_ids: tuple[int, ...]
    start: int


def candidate_sequences(tokenizer, prompt_text: str, judgements: Sequence[str]) -> list[Candidate]:
    """Tokenize prompt and continuation together (so merges match training) and find the continuation by offsets."""
    candidates = []
    for judgement in judgements:
        text = prompt_text + JUDGEMENT_PREFIX + judgement
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        start = next((i for i, (_, end) in enumerate(offsets) if end > len(prompt_text)), len(ids))
        if start == 0 or start == len(ids):
            raise InputError(f"the continuation {JUDGEMENT_PREFIX}{judgement} does not tokenize after the prompt")
        candidates.append(Candidate(judgement, tuple(ids), start))
    return candidates


def _shared_prefix(candidates: Sequence[Candidate]) -> int:
    """Tokens all candidates share, leaving each at least one token of its own to feed or predict."""
    ids = [c.input_ids for c in candidates]
    shared = shared_length(ids)
    if shared == 0:
        raise ValueError("candidate sequences share no prompt token")
    return min(shared, min(len(i) for i in ids) - 1)


def score_batch(model, batch: Sequence[Sequence[Candidate]], *, pad_id: int) -> list[list[float]]:
    """Total log-probability of each candidate continuation, for a batch of length-sorted samples.

    The prompt (and whatever the candidates share, e.g. ``判断:``) runs once per
    sample in a left-padded forward pass (one per low-padding group, see
    ``prefill_groups``), after the prefix all samples share, which runs once
    per batch (``SharedPrefix``); logits are computed only at the positions that predict
    continuation tokens (a boolean ``logits_to_keep``), never for the whole
    sequence × vocabulary. Candidates that go on for more than one token after
    the shared part get a second, small pass over their remaining tokens on a
    copy of the shared part's KV cache.
    """
    import torch

    totals: list[list[float]] = []
    device = next(model.parameters()).device
    firsts = [candidates[0].input_ids for candidates in batch]
    # Only tokens before every logit the scores need may go into the prefix shared across samples.
    own = max(len(ids) - min(c.start for c in candidates) + 1 for ids, candidates in zip(firsts, batch))
    with torch.inference_mode():
        prefix = SharedPrefix(model, firsts[0][:common_prefix_length(firsts, keep=own)], device)
    for group in prefill_groups([len(ids) - prefix.length for ids in firsts], max_tokens=_token_budget(device)):
        totals += _score_group(model, [batch[i] for i in group], pad_id=pad_id, prefix=prefix)
    return totals


def _score_group(model, batch: Sequence[Sequence[Candidate]], *, pad_id: int,
                 prefix: SharedPrefix) -> list[list[float]]:
    import torch

    device = next(model.parameters()).device
    shared = [_shared_prefix(candidates) for candidates in batch]
    # Logits needed from the shared pass: positions p predicting token p+1 of some continuation, p < shared.
    low = [max(min(c.start for c in candidates) - 1, 0) for candidates in batch]
    input_ids, mask = _left_pad([c[0].input_ids[prefix.length:p] for c, p in zip(batch, shared)], pad_id, device)
    width = input_ids.shape[1]
    keep = torch.zeros_like(mask, dtype=torch.bool)
    for row, (p, lo) in enumerate(zip(shared, low)):
        if lo < p:
            keep[row, width - p + lo:] = True
    tails = [[c.input_ids[p:len(c.input_ids) - 1] for c in candidates] for candidates, p in zip(batch, shared)]
    need_tail_pass = any(tail for rows in tails for tail in rows)
    with torch.inference_mode():
        output, full_mask = prefix.forward(model, input_ids, mask, use_cache=need_tail_pass, logits_to_keep=keep)
        shared_logprobs = torch.log_softmax(output.logits.float(), dim=-1)
        tail_logprobs = None
        if need_tail_pass:
            tail_logprobs, tail_starts = _tail_pass(model, output.cache, full_mask, shared, tails, pad_id, device)
    totals, cursor = [], 0
    for row, (candidates, p, lo) in enumerate(zip(batch, shared, low)):
        # Row ``cursor + (q - lo)`` of shared_logprobs is position q of this sample.
        sample_totals = []
        for index, candidate in enumerate(candidates):
            ids, total = candidate.input_ids, 0.0
            for t in range(candidate.start, len(ids)):
                if t - 1 < p:
                    total += shared_logprobs[cursor + (t - 1 - lo), ids[t]].item()
                else:  # fed as token t - 1 - p of this candidate's tail
                    total += tail_logprobs[tail_starts[row * len(candidates) + index] + (t - 1 - p), ids[t]].item()
            sample_totals.append(total)
        totals.append(sample_totals)
        cursor += max(p - lo, 0)
    return totals


def _tail_pass(model, cache, shared_mask, shared: Sequence[int], tails, pad_id: int, device):
    """Feed each candidate's remaining tokens after the shared part, on a copy of its KV cache.

    Returns the log-probabilities (flattened, one row per fed token) and, per
    (sample, candidate), the index of its first row.
    """
    import torch

    k = len(tails[0])
    cache.batch_repeat_interleave(k)
    rows = [tail for sample in tails for tail in sample]
    length = max(len(tail) for tail in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    tail_mask = torch.zeros((len(rows), length), dtype=torch.long)
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    for index, tail in enumerate(rows):
        p = shared[index // k]
        positions[index] = torch.arange(p, p + length)
        if tail:
            input_ids[index, :len(tail)] = torch.tensor(tail, dtype=torch.long)
            tail_mask[index, :len(tail)] = 1
    # Right padding: a real token never attends to the pads after it.
    mask = torch.cat([shared_mask.repeat_interleave(k, dim=0), tail_mask.to(device)], dim=1)
    output = model(input_ids=input_ids.to(device), attention_mask=mask, position_ids=positions.to(device),
                   cache=cache, use_cache=True, logits_to_keep=tail_mask.to(device).bool())
    logprobs = torch.log_softmax(output.logits.float(), dim=-1)
    starts, cursor = [], 0
    for tail in rows:
        starts.append(cursor)
        cursor += len(tail)
    return logprobs, starts


def probabilities(logprobs: Sequence[float]) -> list[float]:
    """Softmax over the candidates' total log-probabilities."""
    top = max(logprobs)
    weights = [math.exp(value - top) for value in logprobs]
    total = sum(weights)
    return [w / total for w in weights]
