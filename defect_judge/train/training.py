"""Training pieces shared by ``instruct_fine_tuning/train_lora.py``, its tests and
its benchmark: samples → token ids and label masks (with truncation of the
event), padding, the key-token-weighted chunked loss, the Trainer that uses it
(with an optional verdict head trained beside the answer), and its callbacks
(the complete-checkpoint marker of ``checkpoints.py``, peak GPU memory).

Loss: every trained token (the assistant's answer and the end-of-turn token
after it) has weight 1, the tokens of the judgement value weight
``key_token_weight``; the loss is sum(w_i * ce_i) / sum(w_i) over all trained
tokens of the accumulated batch (all micro-batches, all ranks), so batch size,
gradient accumulation and the number of ranks do not change its value. With a
verdict head (``verdict_head.py``), ``head_loss_weight`` times the head's binary
cross-entropy, averaged over the accumulated batch's samples, is added.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import EvalLoopOutput

from defect_judge.model.chat import EncodedConversation, encode_conversation
from defect_judge.train.run_folder import mark_complete
from defect_judge.distributed import all_ranks
from defect_judge.errors import InputError
from defect_judge.data.schema import Record
from defect_judge.templates import event_char_span
from defect_judge.model.verdict_head import HEAD_CONFIG_FILE, HEAD_MODULE, LayerTap, VerdictHead, pool

log = logging.getLogger(__name__)

IGNORE_INDEX = -100            # label of a position that is not trained (PyTorch's default ignore_index)
TRUNCATION_MARK = "\n……"       # put where an event was cut, so the model can tell a cut event from a short one
# Metric name (after "eval_") of judgement accuracy with ties broken by eval_loss: see accuracy_then_loss().
ACCURACY_THEN_LOSS = "accuracy_then_loss"


# ------------------------------------------------------------------ samples

@dataclass(frozen=True)
class FittedSample:
    id: str
    encoded: EncodedConversation
    cut_chars: int              # characters cut from the event (0: not truncated)
    messages: tuple[dict, ...]  # the conversation as encoded (its event cut when truncated)
    pair_id: str | None = None  # twins (a defective sample and its fix) share one
    judgement: str | None = None  # the reference judgement (the verdict head's label)

    @property
    def truncated(self) -> bool:
        return self.cut_chars > 0


def _with_event(messages: list[dict], index: int, start: int, end: int, keep: int) -> list[dict]:
    content = messages[index]["content"]
    event = content[start:end]
    cut = content[:start] + event[:keep] + (TRUNCATION_MARK if keep < len(event) else "") + content[end:]
    return [dict(m, content=cut) if i == index else m for i, m in enumerate(messages)]


def fit_sample(tokenizer, record: Record, max_length: int, *, path: str | os.PathLike | None = None) -> FittedSample:
    """Encode a record; if it is longer than ``max_length`` tokens, cut the end of
    its event (never the task, the output format, the template or the answer)
    to the longest prefix that fits."""
    messages = record.messages
    where = {"path": path, "sample": record.id}
    try:
        encoded = encode_conversation(tokenizer, messages)
    except InputError as error:
        raise InputError(error.reason, field="text", **where) from None
    if len(encoded.input_ids) <= max_length:
        return FittedSample(record.id, encoded, 0, tuple(messages), record.pair_id, record.judgement)
    user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    try:
        start, end = event_char_span(messages[user]["content"])
    except ValueError as error:
        raise InputError(f"{len(encoded.input_ids)} tokens > max_length {max_length}, and the event cannot be cut: "
                         f"{error}", field=f"text[{user}].content", **where) from None
    shortest = encode_conversation(tokenizer, _with_event(messages, user, start, end, 0))
    if len(shortest.input_ids) > max_length:
        answer = sum(shortest.trained)
        raise InputError(f"does not fit in max_length {max_length} even with its event removed: the answer takes "
                         f"{answer} tokens and the rest of the conversation {len(shortest.input_ids) - answer}; "
                         f"raise --max_length", field="text", **where)
    # Binary search for the longest event prefix that fits; ``low`` always fits.
    low, high, best = 0, end - start, shortest
    while high - low > 1:
        middle = (low + high) // 2
        candidate = encode_conversation(tokenizer, _with_event(messages, user, start, end, middle))
        if len(candidate.input_ids) <= max_length:
            low, best = middle, candidate
        else:
            high = middle
    return FittedSample(record.id, best, (end - start) - low, tuple(_with_event(messages, user, start, end, low)),
                        record.pair_id, record.judgement)


def fit_samples(tokenizer, records: Sequence[Record], max_length: int, *, path=None,
                progress: bool = False) -> list[FittedSample]:
    return [fit_sample(tokenizer, r, max_length, path=path)
            for r in tqdm(records, desc=f"tokenizing {Path(path).name if path else 'samples'}", unit="sample",
                          disable=not progress, leave=False)]


def judgement_only(sample: FittedSample) -> FittedSample:
    """The sample trained on ``判断:{judgement}`` alone: the reason after it is dropped from the sequence.

    In a causal model nothing after the last trained token changes the loss, so cutting it is exact
    and saves its compute (about a third of a shipped sample). The model still learns to open its
    answer with the judgement, so generated answers stay parsable; it is not taught a reason.
    """
    encoded = sample.encoded
    if not any(encoded.key):
        return sample
    end = max(i for i, key in enumerate(encoded.key) if key) + 1
    cut = EncodedConversation(encoded.input_ids[:end], encoded.trained[:end], encoded.key[:end],
                              encoded.prompt_tokens)
    return dataclasses.replace(sample, encoded=cut)


def prompt_ids(sample: FittedSample) -> list[int]:
    """The sample's prompt as the model sees it (its event cut when truncated), up to the answer."""
    return list(sample.encoded.input_ids[:sample.encoded.prompt_tokens])


def verdict_label(sample: FittedSample, positive: str | None) -> int:
    """1 defective, 0 clean, -1 no label (no head, or no reference judgement)."""
    if positive is None or sample.judgement is None:
        return -1
    return int(sample.judgement == positive)


def sample_features(sample: FittedSample, positive: str | None = None) -> dict:
    """Token ids, labels and the key mask; the prompt's length and the verdict head's label (``positive``:
    the judgement that means defective, None without a head)."""
    encoded = sample.encoded
    labels = [t if trained else IGNORE_INDEX for t, trained in zip(encoded.input_ids, encoded.trained)]
    return {"input_ids": list(encoded.input_ids), "labels": labels, "key_mask": list(encoded.key),
            "prompt_length": encoded.prompt_tokens, "verdict_label": verdict_label(sample, positive)}


class SupervisedDataset(torch.utils.data.Dataset):
    """Fitted samples as ``input_ids`` / ``labels`` / ``key_mask`` lists (see ``sample_features``)."""

    def __init__(self, samples: Sequence[FittedSample], positive: str | None = None):
        self.samples = list(samples)
        self.features = [sample_features(s, positive) for s in self.samples]

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        return self.features[index]


class PairedDataset(torch.utils.data.Dataset):
    """Fitted samples grouped by ``pair_id``: one item is a pair of twins (or a lone sample), so the
    sampler shuffles pairs and both twins always land in the same micro-batch, on the same rank.
    ``per_device_train_batch_size`` then counts pairs."""

    def __init__(self, samples: Sequence[FittedSample], positive: str | None = None):
        groups: dict[object, list[dict]] = {}
        for index, sample in enumerate(samples):
            key = sample.pair_id if sample.pair_id is not None else ("unpaired", index)
            groups.setdefault(key, []).append(sample_features(sample, positive))
        self.groups = list(groups.values())
        self.pairs = sum(1 for group in self.groups if len(group) > 1)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> list[dict]:
        return self.groups[index]


@dataclass
class PaddingCollator:
    """Right-pads a batch to its longest sample; padding is never trained. Items of a
    ``PairedDataset`` (lists of samples) are flattened into the batch. ``prompt_mask`` marks each
    sample's prompt tokens (what a verdict head pools), ``verdict_label`` its label (-1: none)."""
    pad_token_id: int

    def __call__(self, features: list[dict | list[dict]]) -> dict[str, torch.Tensor]:
        features = [f for item in features for f in (item if isinstance(item, list) else [item])]
        width = max(len(f["input_ids"]) for f in features)
        batch = {name: torch.full((len(features), width), fill, dtype=dtype) for name, fill, dtype in (
            ("input_ids", self.pad_token_id, torch.long), ("attention_mask", 0, torch.long),
            ("labels", IGNORE_INDEX, torch.long), ("key_mask", False, torch.bool))}
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            batch["input_ids"][row, :n] = torch.tensor(feature["input_ids"])
            batch["attention_mask"][row, :n] = 1
            batch["labels"][row, :n] = torch.tensor(feature["labels"])
            batch["key_mask"][row, :n] = torch.tensor(feature["key_mask"], dtype=torch.bool)
        if all("prompt_length" in f for f in features):
            positions = torch.arange(width).expand(len(features), width)
            batch["prompt_mask"] = positions < torch.tensor([f["prompt_length"] for f in features]).unsqueeze(1)
            batch["verdict_label"] = torch.tensor([f["verdict_label"] for f in features], dtype=torch.float32)
        return batch


def length_stats(lengths: Sequence[int]) -> dict[str, int]:
    """min / median / p95 / max (nearest rank) of token lengths."""
    ordered = sorted(lengths)

    def rank(q: float) -> int:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"min": ordered[0], "median": rank(0.5), "p95": rank(0.95), "max": ordered[-1]}


def mark_trained_text(tokenizer, encoded: EncodedConversation) -> str:
    """The decoded sample with the trained tokens inside [[...]] and the key
    (judgement) tokens inside {{...}}: what the labels really say."""
    runs: list[tuple[tuple[bool, bool], list[int]]] = []
    for token, trained, key in zip(encoded.input_ids, encoded.trained, encoded.key):
        state = (trained, key)
        if runs and runs[-1][0] == state:
            runs[-1][1].append(token)
        else:
            runs.append((state, [token]))
    out, in_trained = [], False
    for (trained, key), tokens in runs:
        if trained and not in_trained:
            out.append("[[")
        if not trained and in_trained:
            out.append("]]")
        in_trained = trained
        text = tokenizer.decode(tokens, skip_special_tokens=False)
        out.append("{{" + text + "}}" if key else text)
    if in_trained:
        out.append("]]")
    return "".join(out)


# --------------------------------------------------------------------- loss

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


# ------------------------------------------------------------------ trainer

class WeightedLossTrainer(Trainer):
    """Trainer with the key-token-weighted chunked loss and a lean eval loop.

    The accumulated batch's weight sum travels as ``num_items_in_batch``,
    the same channel transformers uses for its token count: ``get_batch_samples``
    sums the weights of the micro-batches of one optimizer step and gathers
    them over ranks; ``compute_loss`` divides by it.

    With a ``verdict_head`` (a submodule of the model, so the optimizer, DeepSpeed and
    checkpoints see it): the same forward pass taps the head's layers, the head's binary
    cross-entropy over the accumulated batch's labelled samples is added with weight
    ``head_loss_weight``, the head gets its own learning rate (``head_learning_rate``),
    every saved model carries ``verdict_head.*`` (and not inside the model's own weights),
    and evaluation reports the head's accuracy, ROC-AUC and loss.
    """

    def __init__(self, *args, key_token_weight: float = 1.0, loss_chunk_size: int = 1024,
                 verdict_head: VerdictHead | None = None, head_loss_weight: float = 1.0,
                 head_learning_rate: float | None = None, **kwargs):
        self.verdict_head = verdict_head
        self.head_loss_weight = float(head_loss_weight)
        self.head_learning_rate = head_learning_rate
        super().__init__(*args, **kwargs)
        self.key_token_weight = float(key_token_weight)
        self.loss_chunk_size = int(loss_chunk_size)
        self.loss_is_scaled_for_ga = True  # our loss is already a mean over the whole accumulated batch
        self.lm_head = output_embeddings(self.model)
        self._head_items = None  # labelled samples of the current accumulated batch, all ranks
        self._head_log = torch.zeros(2, dtype=torch.float64)  # head BCE sum and samples since the last log

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        totals = torch.zeros(2, dtype=torch.float32)  # answer-token weights, head-labelled samples
        for batch in batches:
            totals[0] += batch_weight_sum(batch, self.key_token_weight).cpu()
            if "verdict_label" in batch:
                totals[1] += (batch["verdict_label"] >= 0).sum().cpu()
        totals = totals.to(device)
        if self.args.world_size > 1:
            totals = self.accelerator.gather(totals.reshape(1, 2)).sum(0)
        self._head_items = totals[1]
        return batches, totals[0]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        head = self.verdict_head
        with LayerTap(model, head.layers) if head is not None else contextlib.nullcontext() as tap:
            hidden = final_hidden_states(model, inputs)
        parts = weighted_token_loss(hidden, inputs["labels"], inputs["key_mask"], self.lm_head,
                                    self.key_token_weight, self.loss_chunk_size)
        head_sum, head_count = self._head_bce(tap, inputs) if head is not None else (None, None)
        if num_items_in_batch is None:  # a lone batch (e.g. a direct call): its own means
            loss = parts.weighted_sum / parts.weight_sum.clamp(min=1e-12)
            if head_sum is not None:
                loss = loss + self.head_loss_weight * head_sum / head_count.clamp(min=1.0)
            return loss
        loss = parts.weighted_sum / torch.as_tensor(num_items_in_batch, dtype=torch.float32,
                                                    device=parts.weighted_sum.device).clamp(min=1e-12)
        if head_sum is not None:
            items = self._head_items if self._head_items is not None else head_count
            loss = loss + self.head_loss_weight * head_sum / items.to(head_sum.device).clamp(min=1.0)
        if self.args.world_size > 1:
            # DeepSpeed/DDP average the ranks' gradients; the global sums are what the loss is normalised by.
            loss = loss * self.args.world_size
        return loss

    def _head_bce(self, tap: LayerTap, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's BCE summed over this micro-batch's labelled samples, and their number."""
        logits, labels = self._head_logits(tap, inputs)
        valid = labels >= 0
        total = F.binary_cross_entropy_with_logits(logits[valid], labels[valid], reduction="sum")
        count = valid.sum().float()
        self._head_log += torch.stack([total.detach().double().cpu(), count.detach().double().cpu()])
        return total, count

    def _head_logits(self, tap: LayerTap, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        head = self.verdict_head
        features = pool([tap.states[layer] for layer in head.layers], inputs["prompt_mask"], head.pooling)
        logits = head(features)  # the module itself: DeepSpeed ZeRO-3 gathers its weights in its hooks
        return logits, inputs["verdict_label"].to(logits.device)

    def log(self, logs: dict[str, float], start_time=None) -> None:
        if self.verdict_head is not None and "loss" in logs:  # a training log, on every rank at once
            totals = self._head_log.to(self.args.device)
            if self.args.world_size > 1:
                totals = self.accelerator.reduce(totals, reduction="sum")
            if totals[1] > 0:
                logs["head_loss"] = float(totals[0] / totals[1])
            self._head_log.zero_()
        super().log(logs, start_time)

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the verdict head in a group of its own (its learning rate, no weight
        decay); the scheduler then scales both groups alike."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if self.verdict_head is None:
            return optimizer
        head_ids = {id(p) for p in self.verdict_head.parameters()}
        head_params = [p for p in self.verdict_head.parameters() if p.requires_grad]
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in head_ids]
        optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
        lr = self.head_learning_rate if self.head_learning_rate is not None else self.args.learning_rate
        optimizer.add_param_group({"params": head_params, "lr": lr, "weight_decay": 0.0})
        return optimizer

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The model as the Trainer saves it, without the head's tensors, and the head beside it."""
        if self.verdict_head is None:
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if state_dict is None:
            state_dict = self.accelerator.unwrap_model(self.model).state_dict()
        marker = HEAD_MODULE + "."
        head_state = {key.split(marker, 1)[1]: value for key, value in state_dict.items()
                      if key.startswith(marker) or "." + marker in key}
        model_state = {key: value for key, value in state_dict.items()
                       if not (key.startswith(marker) or "." + marker in key)}
        super()._save(output_dir, state_dict=model_state)
        if self.args.should_save:
            self.verdict_head.save(output_dir, tensors=head_state or None)

    def _issue_warnings_after_load(self, load_result) -> None:
        if self.verdict_head is not None and getattr(load_result, "missing_keys", None):
            # the head is not in the model's weights file: _load_best_model reads it from its own
            load_result.missing_keys[:] = [k for k in load_result.missing_keys if HEAD_MODULE + "." not in k]
        super()._issue_warnings_after_load(load_result)

    def _load_best_model(self) -> None:
        super()._load_best_model()
        if self.verdict_head is not None:
            from defect_judge.model.verdict_head import load_head

            best = Path(self.state.best_model_checkpoint)
            if (best / HEAD_CONFIG_FILE).is_file():
                self.verdict_head.load_tensors(load_head(best).state_tensors())

    def _save_optimizer_and_scheduler(self, output_dir):
        engine = self.model_wrapped if self.is_deepspeed_enabled else None
        if engine is None or not hasattr(engine, "module_state_dict"):
            return super()._save_optimizer_and_scheduler(output_dir)
        # DeepSpeed drops frozen weights from its checkpoint by name from named_parameters(), which
        # lists a tied weight once (embed_tokens), so the frozen lm_head.weight would be saved:
        # a copy of the embedding matrix in every LoRA checkpoint. Drop every frozen name.
        original = engine.module_state_dict

        def module_state_dict(*args, exclude_frozen_parameters=False, **kwargs):
            state = original(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)
            if exclude_frozen_parameters:
                for name, param in engine.module.named_parameters(remove_duplicate=False):
                    if not param.requires_grad:
                        state.pop(name, None)
            return state

        engine.module_state_dict = module_state_dict
        try:
            super()._save_optimizer_and_scheduler(output_dir)
        finally:
            del engine.module_state_dict

    def _eval_loader(self, dataset):
        # Each rank takes every world_size-th sample: no sample is duplicated to even out the
        # shards (the default sampler does that), so the metrics are exact.
        indices = list(range(self.args.process_index, len(dataset), self.args.world_size))
        return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices),
                                           batch_size=self.args.per_device_eval_batch_size,
                                           collate_fn=self.data_collator, shuffle=False)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        dataset = self.eval_dataset
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        model.eval()
        head = self.verdict_head
        device = self.args.device
        totals = torch.zeros(4, dtype=torch.float64, device=device)  # weighted ce, weights, correct, judged
        head_scores: list[tuple[float, float]] = []  # (logit, label) of this rank's labelled samples
        loader = self._eval_loader(dataset)
        with torch.no_grad():
            for batch in tqdm(loader, desc="evaluating", unit="batch", leave=False,
                              disable=self.args.disable_tqdm or not self.is_world_process_zero()):
                batch = self._prepare_inputs(batch)
                with LayerTap(model, head.layers) if head is not None else contextlib.nullcontext() as tap:
                    hidden = final_hidden_states(model, batch)
                parts = weighted_token_loss(hidden, batch["labels"], batch["key_mask"], self.lm_head,
                                            self.key_token_weight, self.loss_chunk_size, with_predictions=True)
                totals += torch.stack([parts.weighted_sum.double(), parts.weight_sum.double(),
                                       parts.judgement_correct.sum().double(),
                                       parts.has_judgement.sum().double()]).to(device)
                if head is not None:
                    logits, labels = self._head_logits(tap, batch)
                    head_scores += [(l, y) for l, y in zip(logits.tolist(), labels.tolist()) if y >= 0]
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        weighted, weights, correct, judged = totals.tolist()
        loss, accuracy = weighted / max(weights, 1e-12), correct / judged if judged else 0.0
        metrics = {f"{metric_key_prefix}_loss": loss, f"{metric_key_prefix}_judgement_accuracy": accuracy,
                   f"{metric_key_prefix}_{ACCURACY_THEN_LOSS}": accuracy_then_loss(accuracy, loss, int(judged))}
        if head is not None:
            head_metrics = head_eval_metrics([row for part in all_ranks(head_scores) for row in part])
            metrics |= {f"{metric_key_prefix}_{name}": value for name, value in head_metrics.items()
                        if value is not None}
            if head_metrics["head_accuracy"] is not None:
                # The head is the judge: select on its accuracy; ties go to the lower loss training minimises
                # (the answer's + the weighted head's), so a frozen head still picks the best answer writer.
                total = loss + self.head_loss_weight * head_metrics["head_loss"]
                metrics[f"{metric_key_prefix}_{ACCURACY_THEN_LOSS}"] = accuracy_then_loss(
                    head_metrics["head_accuracy"], total, head_metrics["head_samples"])
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=len(dataset))


def head_eval_metrics(scores: Sequence[tuple[float, float]]) -> dict:
    """The verdict head's accuracy (P(defective) >= 0.5), ROC-AUC (None with one class), mean BCE and
    sample count over (logit, label) pairs."""
    from sklearn.metrics import roc_auc_score

    if not scores:
        return {"head_accuracy": None, "head_roc_auc": None, "head_loss": None, "head_samples": 0}
    logits = torch.tensor([s[0] for s in scores], dtype=torch.float64)
    labels = torch.tensor([s[1] for s in scores], dtype=torch.float64)
    both = 0 < labels.sum() < len(labels)
    return {"head_accuracy": float(((logits >= 0) == (labels > 0.5)).double().mean()),
            "head_roc_auc": float(roc_auc_score(labels.numpy(), logits.numpy())) if both else None,
            "head_loss": float(F.binary_cross_entropy_with_logits(logits, labels)),
            "head_samples": len(scores)}


def accuracy_then_loss(accuracy: float, loss: float, samples: int) -> float:
    """One number that orders evaluations as (accuracy, then lower loss) do.

    Accuracies over ``samples`` samples differ by at least 1/samples; the loss
    enters as a term in [0, 1/(samples+1)), so it only ever breaks ties. The
    Trainer's best-model choice and early stopping compare single numbers.
    """
    return accuracy - (loss / (1.0 + loss)) / (samples + 1)


class CheckpointCompleteCallback(TrainerCallback):
    """Marks a checkpoint complete once every rank has written its part.

    Trainer writes ``checkpoint-N`` in place, file by file; a run killed
    mid-save leaves a folder that looks like a checkpoint. The marker,
    written last, is what ``find_resume_checkpoint`` trusts.
    """

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                mark_complete(folder, state.global_step, args.world_size)


class PeakGpuMemoryCallback(TrainerCallback):
    """Adds ``torch.cuda.max_memory_allocated()`` (this process's peak since it started, loading included) to
    the final training log entry, so ``trainer_state.json`` holds it as ``train_peak_gpu_memory_bytes``.

    transformers' own memory metrics (``--skip_memory_metrics false``) poll the process's RSS in a busy
    thread, which would slow the very steps being measured; this reads one counter once.
    """

    def on_train_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available() and state.log_history and "train_runtime" in state.log_history[-1]:
            state.log_history[-1]["train_peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
            log.info("peak GPU memory allocated: %.2f GiB", torch.cuda.max_memory_allocated() / 2 ** 30)


# ------------------------------------------------------------------- memory

M_MMAP_THRESHOLD = -3            # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 4 << 20   # activation-sized blocks (a 2,048 x 576 float32 tensor is 4.5 MiB) and up


def limit_heap_fragmentation(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Give every allocation of ``threshold`` bytes or more its own mmap (glibc only).

    glibc raises its mmap threshold each time a large block is freed, so soon
    activation-sized tensors come from the heap, and the holes left between
    the tensors autograd keeps make a CPU training process hold far more than
    it uses: at 2,048 tokens on the embedded model, peak RSS 5.5 GiB instead of
    3.7. A fixed threshold returns each freed block to the system at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):  # not glibc
        return False
