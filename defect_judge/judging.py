"""Asking a model to judge test records: the prompts, and one result row per record.

``eval/model_evaluation.py`` (both modes) and ``eval/bench_eval.py`` call these,
so the benchmark times exactly what the evaluation runs. A row is a sample of
``evaluation_results.json`` (the schema is ``results.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from . import inference
from .chat import render_prompt
from .schema import Record
from .templates import parse_answer


@dataclass(frozen=True)
class Prompt:
    """One record ready for the model: its prompt rendered as training renders it, and its token ids."""
    record: Record
    text: str
    ids: list[int]


def prompts_longest_first(tokenizer, records: Sequence[Record]) -> list[Prompt]:
    """The records' prompts, longest first: batches then hold similar lengths (little padding), and an
    out-of-memory error shows in the first batch rather than at the end."""
    prompts = []
    for record in records:
        text = render_prompt(tokenizer, record.prompt_messages)
        prompts.append(Prompt(record, text, inference.encode_prompt(tokenizer, text)))
    return sorted(prompts, key=lambda prompt: -len(prompt.ids))


def _row(record: Record, prediction: str | None, **fields) -> dict:
    return {"id": record.id, "subtype": record.subtype, "reference": record.judgement,
            "prediction": prediction, "correct": prediction == record.judgement, **fields}


def generate_rows(model, tokenizer, batch: Sequence[Prompt], vocabulary: Sequence[str], *, max_new_tokens: int,
                  stop_ids: Sequence[int]) -> list[dict]:
    """Generate mode: greedy answers decoded together; the judgement parsed from each (None: invalid format)."""
    answers = inference.generate_batch(model, tokenizer, [prompt.ids for prompt in batch],
                                       max_new_tokens=max_new_tokens, stop_ids=stop_ids)
    return [_row(prompt.record, parse_answer(answer["response"], vocabulary).judgement, **answer)
            for prompt, answer in zip(batch, answers)]


def score_rows(model, tokenizer, batch: Sequence[Prompt], vocabulary: Sequence[str]) -> list[dict]:
    """Score mode: the log-probability of every candidate judgement; the most probable is the prediction."""
    candidates = [inference.candidate_sequences(tokenizer, prompt.text, vocabulary) for prompt in batch]
    logprobs = inference.score_batch(model, candidates, pad_id=tokenizer.pad_token_id)
    rows = []
    for prompt, values in zip(batch, logprobs):
        prediction = vocabulary[max(range(len(vocabulary)), key=lambda i: values[i])]
        rows.append(_row(prompt.record, prediction, probabilities=dict(zip(vocabulary, inference.probabilities(values))),
                         logprobs=dict(zip(vocabulary, values))))
    return rows
