"""The training loss: key-token-weighted cross-entropy over the trained tokens, computed from the model's final
hidden states ``chunk_size`` tokens at a time.

Every trained token (the assistant's answer and the end-of-turn token after it) has weight 1, the tokens of the
judgement value weight ``key_token_weight``; the loss is sum(w_i * ce_i) / sum(w_i) over all trained tokens of
the accumulated batch (all micro-batches, all ranks), so batch size, gradient accumulation and the number of
ranks do not change its value (``trainer.py`` divides by the accumulated batch's weight sum).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from defect_judge.train.samples import IGNORE_INDEX


def token_weights(labels: torch.Tensor, key_mask: torch.Tensor, key_token_weight: float) -> torch.Tensor:
    """Weight of each next-token prediction [batch, seq-1]: 0 untrained, 1 trained, ``key_token_weight`` key."""
    trained = labels[:, 1:] != IGNORE_INDEX
    weights = torch.where(key_mask[:, 1:], float(key_token_weight), 1.0)
    return weights * trained


def batch_weight_sum(batch: dict, key_token_weight: float) -> torch.Tensor:
    return token_weights(batch["labels"], batch["key_mask"], key_token_weight).sum(dtype=torch.float32)


def _chunk_cross_entropy(lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(lm_head(hidden).float(), targets, reduction="none")


@dataclass
class TokenLoss:
    weighted_sum: torch.Tensor         # sum(w_i * ce_i) over trained tokens
    weight_sum: torch.Tensor           # sum(w_i)
    judgement_correct: torch.Tensor | None = None  # [batch] bool: every key token argmax-correct
    has_judgement: torch.Tensor | None = None      # [batch] bool: the sample has key tokens


def weighted_token_loss(hidden: torch.Tensor, labels: torch.Tensor, key_mask: torch.Tensor,
                        lm_head: torch.nn.Module, key_token_weight: float, chunk_size: int = 1024,
                        with_predictions: bool = False) -> TokenLoss:
    """Key-token-weighted cross-entropy from the final hidden states.

    Logits are computed only at trained positions and ``chunk_size`` tokens at a
    time; with gradients on, each chunk is recomputed in the backward pass
    (activation checkpointing), so at most one chunk's float32 logits exist at
    once instead of the full [tokens x vocab] tensor.
    """
    targets = labels[:, 1:]
    trained = targets != IGNORE_INDEX
    weights = token_weights(labels, key_mask, key_token_weight)[trained]
    selected = hidden[:, :-1][trained]
    targets = targets[trained]
    n = targets.numel()
    chunk_size = max(1, int(chunk_size))
    recompute = torch.is_grad_enabled() and hidden.requires_grad and n > chunk_size
    losses, correct = [], []
    for start in range(0, n, chunk_size):
        h, y = selected[start:start + chunk_size], targets[start:start + chunk_size]
        if with_predictions:
            logits = lm_head(h).float()
            losses.append(F.cross_entropy(logits, y, reduction="none"))
            correct.append(logits.argmax(dim=-1) == y)
            del logits
        elif recompute:
            losses.append(checkpoint(_chunk_cross_entropy, lm_head, h, y, use_reentrant=False))
        else:
            losses.append(_chunk_cross_entropy(lm_head, h, y))
    ce = torch.cat(losses) if losses else hidden.new_zeros(0, dtype=torch.float32)
    result = TokenLoss((ce * weights).sum(), weights.sum(dtype=torch.float32))
    if with_predictions:
        batch = labels.shape[0]
        rows = trained.nonzero(as_tuple=True)[0]
        key = key_mask[:, 1:][trained]
        is_correct = torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool, device=labels.device)
        key_rows = rows[key]
        zeros = torch.zeros(batch, device=labels.device)
        wrong = zeros.index_add(0, key_rows, (~is_correct[key]).float())
        seen = zeros.index_add(0, key_rows, torch.ones_like(key_rows, dtype=torch.float))
        result.has_judgement = seen > 0
        result.judgement_correct = result.has_judgement & (wrong == 0)
    return result


def final_hidden_states(model, batch: dict) -> torch.Tensor:
    """The last hidden states (after the final norm) of a causal LM, PEFT-wrapped
    or DeepSpeed-wrapped, with the model's own lm_head run on one position only."""
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    use_cache=False, output_hidden_states=True, logits_to_keep=1)
    return outputs.hidden_states[-1]


def output_embeddings(model) -> torch.nn.Module:
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (lm_head)")
    return head
