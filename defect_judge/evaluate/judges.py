"""Asking a model to judge test records: the prompts, and one judge per mechanism (``verdicts.py``) that
turns a batch of prompts into result rows.

``eval/model_evaluation.py`` (both modes, with or without a verdict head) and ``eval/bench_eval.py`` call
these, so the benchmark times exactly what the evaluation runs. A row is a sample of
``evaluation_results.json`` (the schema is ``results.py``); every row says which mechanism decided it
(``verdict_source``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from defect_judge.model import inference
from defect_judge.model.chat import render_prompt
from defect_judge.data.schema import Record
from defect_judge.templates import answer_prefix, parse_answer
from defect_judge.evaluate.verdicts import GENERATED, HEAD, SCORED, source_for


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


def result_row(record: Record, prediction: str | None, source: str, **fields) -> dict:
    """A sample row of the results: the record's id, subtype and reference, the prediction and whether it is right."""
    return {"id": record.id, "subtype": record.subtype, "reference": record.judgement,
            "prediction": prediction, "correct": prediction == record.judgement, "verdict_source": source, **fields}


def generate_rows(model, tokenizer, batch: Sequence[Prompt], vocabulary: Sequence[str], *, max_new_tokens: int,
                  stop_ids: Sequence[int]) -> list[dict]:
    """Generate mode: greedy answers decoded together; the judgement parsed from each (None: invalid format)."""
    answers = inference.generate_batch(model, tokenizer, [prompt.ids for prompt in batch],
                                       max_new_tokens=max_new_tokens, stop_ids=stop_ids)
    return [result_row(prompt.record, parse_answer(answer["response"], vocabulary).judgement, GENERATED, **answer)
            for prompt, answer in zip(batch, answers)]


def scored_candidates(model, tokenizer, batch: Sequence[Prompt], vocabulary: Sequence[str]) -> list[dict]:
    """Each prompt's most probable judgement, and every candidate's probability and log-probability."""
    candidates = [inference.candidate_sequences(tokenizer, prompt.text, vocabulary) for prompt in batch]
    logprobs = inference.score_batch(model, candidates, pad_id=tokenizer.pad_token_id)
    return [{"prediction": vocabulary[max(range(len(vocabulary)), key=lambda i: values[i])],
             "probabilities": dict(zip(vocabulary, inference.probabilities(values))),
             "logprobs": dict(zip(vocabulary, values))} for values in logprobs]


def score_rows(model, tokenizer, batch: Sequence[Prompt], vocabulary: Sequence[str]) -> list[dict]:
    """Score mode: the log-probability of every candidate judgement; the most probable is the prediction."""
    return [result_row(prompt.record, scored["prediction"], SCORED, probabilities=scored["probabilities"],
                 logprobs=scored["logprobs"])
            for prompt, scored in zip(batch, scored_candidates(model, tokenizer, batch, vocabulary))]


def head_rows(model, tokenizer, batch: Sequence[Prompt], vocabulary: Sequence[str], head, *, mode: str,
              threshold: float = 0.5, max_new_tokens: int = 256, stop_ids: Sequence[int] = ()) -> list[dict]:
    """The verdict head decides: P(defective) from the prompt's hidden states, defective when at or above
    ``threshold``. Score mode keeps what the model alone would answer (its scored candidates, one more
    forward pass). Generate mode fixes the answer's start, ``判断:{verdict}\\n\\n原因：``, and the model
    writes the reason after it, so every answer keeps the document's format."""
    from defect_judge.model.verdict_head import head_probabilities

    probabilities = head_probabilities(model, head, [prompt.ids for prompt in batch])
    verdicts = head.verdicts(probabilities, threshold)
    rows = []
    if mode == "score":
        alone = scored_candidates(model, tokenizer, batch, vocabulary)
        for prompt, p, verdict, scored in zip(batch, probabilities, verdicts, alone):
            rows.append(result_row(prompt.record, verdict, HEAD, probabilities={head.positive: p, head.negative: 1 - p},
                                   model_prediction=scored["prediction"],
                                   model_probabilities=scored["probabilities"]))
        return rows
    prefixes = [answer_prefix(verdict) for verdict in verdicts]
    forced = [inference.encode_prompt(tokenizer, prompt.text + prefix) for prompt, prefix in zip(batch, prefixes)]
    answers = inference.generate_batch(model, tokenizer, forced, max_new_tokens=max_new_tokens, stop_ids=stop_ids)
    for prompt, p, verdict, prefix, answer in zip(batch, probabilities, verdicts, prefixes, answers):
        response = prefix + answer["response"]
        parsed = parse_answer(response, vocabulary)
        rows.append(result_row(prompt.record, parsed.judgement, HEAD,
                               probabilities={head.positive: p, head.negative: 1 - p},
                               **answer | {"response": response}))
    return rows


@dataclass
class Judge:
    """A model ready to judge batches of prompts by one mechanism: the head's when there is one, else the
    mode's (``verdicts.source_for``)."""
    model: object
    tokenizer: object
    vocabulary: Sequence[str]
    mode: str                      # generate | score
    head: object = None            # a verdict_head.VerdictHead
    threshold: float = 0.5         # the head's decision threshold on P(defective)
    max_new_tokens: int = 256
    stop_ids: Sequence[int] = ()

    @property
    def source(self) -> str:
        return source_for(self.mode, head=self.head is not None)

    def rows(self, batch: Sequence[Prompt]) -> list[dict]:
        if self.source == HEAD:
            return head_rows(self.model, self.tokenizer, batch, self.vocabulary, self.head, mode=self.mode,
                             threshold=self.threshold, max_new_tokens=self.max_new_tokens, stop_ids=self.stop_ids)
        if self.source == GENERATED:
            return generate_rows(self.model, self.tokenizer, batch, self.vocabulary,
                                 max_new_tokens=self.max_new_tokens, stop_ids=self.stop_ids)
        return score_rows(self.model, self.tokenizer, batch, self.vocabulary)
