"""Training samples: chat JSONL records become token ids, labels and a key-token mask (the event cut to fit
``max_length``), grouped into datasets (one sample, or a pair of twins, per item) and padded into batches.

Labels: the assistant's answer and the end-of-turn token after it are trained, everything else is
``IGNORE_INDEX``; the key tokens are those of the judgement value (``chat.py`` decides both). A verdict head's
label (1 defective, 0 clean, -1 none) and the prompt's length travel beside them.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from defect_judge.data.schema import Record, read_records
from defect_judge.errors import InputError
from defect_judge.model.chat import EncodedConversation, EventCut, cut_event_to_fit, encode_conversation
from defect_judge.templates import JUDGEMENT_PREFIX

log = logging.getLogger(__name__)

IGNORE_INDEX = -100            # label of a position that is not trained (PyTorch's default ignore_index)


@dataclass(frozen=True)
class FittedSample:
    id: str
    encoded: EncodedConversation
    cut_chars: int              # characters cut from the event (0: not truncated)
    messages: tuple[dict, ...]  # the conversation as encoded (its event cut when truncated)
    pair_id: str | None = None  # twins (a defective sample and its fix) share one
    judgement: str | None = None  # the reference judgement (the verdict head's label)
    subtype: str | None = None    # the record's defect subtype

    @property
    def truncated(self) -> bool:
        return self.cut_chars > 0


def fit_sample(tokenizer, record: Record, max_length: int, *, path: str | os.PathLike | None = None) -> FittedSample:
    """Encode a record; if it is longer than ``max_length`` tokens, cut the end of
    its event (never the task, the output format, the template or the answer)
    to the longest prefix that fits (``chat.cut_event_to_fit``, the rule inference cuts by too)."""
    where = {"path": path, "sample": record.id}

    def encode(messages: list[dict]) -> EncodedConversation:
        try:
            return encode_conversation(tokenizer, messages)
        except InputError as error:
            raise InputError(error.reason, field="text", **where) from None
        except ValueError as error:  # an answer that labels, but not in the trained format (判断：是, **判断**:是)
            raise InputError(f"{error}: training teaches the document's answer format, {JUDGEMENT_PREFIX}"
                             f"{{judgement}}; write the answer so", field=f"text[{len(messages) - 1}].content",
                             **where) from None

    try:
        encoded, messages, cut = cut_event_to_fit(record.messages, encode, lambda e: len(e.input_ids), max_length)
    except EventCut as error:
        answer = sum(error.shortest.trained)
        raise InputError(f"does not fit in max_length {max_length} even with its event removed: the answer takes "
                         f"{answer} tokens and the rest of the conversation {len(error.shortest.input_ids) - answer}; "
                         f"raise --max_length", field="text", **where) from None
    except ValueError as error:
        user = max(i for i, m in enumerate(record.messages) if m["role"] == "user")
        raise InputError(f"{len(encode(record.messages).input_ids)} tokens > max_length {max_length}, and the event "
                         f"cannot be cut: {error}", field=f"text[{user}].content", **where) from None
    return FittedSample(record.id, encoded, cut, tuple(messages), record.pair_id, record.judgement, record.subtype)


def fit_samples(tokenizer, records: Sequence[Record], max_length: int, *, path=None,
                progress: bool = False) -> list[FittedSample]:
    return [fit_sample(tokenizer, r, max_length, path=path)
            for r in tqdm(records, desc=f"tokenizing {Path(path).name if path else 'samples'}", unit="sample",
                          disable=not progress, leave=False)]


def fit_file(tokenizer, path: str | os.PathLike, max_length: int, *, train_on: str = "answer", max_samples: int = 0,
             seed: int = 0, progress: bool = False) -> list[FittedSample]:
    """A chat JSONL file's records as fitted samples: at most ``max_samples`` of them (0: all) drawn with
    ``seed`` and kept in file order; ``train_on`` judgement: each cut after its judgement (``judgement_only``)."""
    records = read_records(path)
    if 0 < max_samples < len(records):
        keep = random.Random(seed).sample(range(len(records)), max_samples)
        records = [records[i] for i in sorted(keep)]
    samples = fit_samples(tokenizer, records, max_length, path=path, progress=progress)
    return [judgement_only(s) for s in samples] if train_on == "judgement" else samples


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


def training_dataset(samples: Sequence[FittedSample], positive: str | None = None, *, pair_batches: bool = False,
                     main: bool = True) -> SupervisedDataset | PairedDataset:
    """The samples one by one, or with ``pair_batches`` grouped into twin pairs (``main``: this process logs)."""
    if not pair_batches:
        return SupervisedDataset(samples, positive)
    dataset = PairedDataset(samples, positive)
    if main:
        if dataset.pairs == 0:
            log.warning("--pair_batches: no two training records share a pair_id, so every sample is its own item")
        log.info("--pair_batches: %d twin pairs and %d unpaired samples; a micro-batch holds "
                 "per_device_train_batch_size of them", dataset.pairs, len(dataset) - dataset.pairs)
    return dataset


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


def log_length_stats(name: str, samples: Sequence[FittedSample], path: str | os.PathLike | None,
                     max_length: int) -> None:
    """One line on a split's samples: their token lengths, their trained tokens, how many had their event cut."""
    stats = length_stats([len(s.encoded.input_ids) for s in samples])
    answers = length_stats([sum(s.encoded.trained) for s in samples])
    truncated = sum(s.truncated for s in samples)
    log.info("%s: %d samples from %s; tokens min %d / median %d / p95 %d / max %d; trained (answer) tokens "
             "median %d; truncated to max_length %d (event cut): %d", name, len(samples), path, stats["min"],
             stats["median"], stats["p95"], stats["max"], answers["median"], max_length, truncated)


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
