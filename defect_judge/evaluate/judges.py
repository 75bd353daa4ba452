"""Asking a model to judge records: the prompts (cut to fit by training's rule), and one judge per mechanism
(``verdicts.py``) that turns a batch of prompts into plain verdicts.

``eval/model_evaluation.py`` (both modes, with or without a verdict head), ``judge/judge_code.py`` (new code,
no reference) and ``eval/bench_eval.py`` call these, so the benchmark times what they run and the two scripts
give one model's verdict on one prompt alike. A ``Verdict`` is the judgement, P(defective) and the answer; the
evaluation wraps it with the reference into a sample row of ``evaluation_results.json`` (``result_row``;
the schema is ``results.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from defect_judge.data.labels import positive_judgement
from defect_judge.data.schema import Record
from defect_judge.errors import InputError
from defect_judge.evaluate.verdicts import GENERATED, HEAD, SCORED, source_for
from defect_judge.model import inference
from defect_judge.model.chat import EventCut, cut_event_to_fit, render_prompt
from defect_judge.model.verdict_head import head_probabilities
from defect_judge.templates import JUDGEMENT_PREFIX, answer_prefix, parse_answer


@dataclass(frozen=True)
class Prompt:
    """One record ready for the model: its prompt rendered as training renders it (its event cut to fit when it
    was too long), and its token ids."""
    record: Record
    text: str
    ids: list[int]
    cut_chars: int = 0  # characters cut from the end of the event (0: the whole prompt)


def fitted_prompt(tokenizer, record: Record, max_tokens: int | None = None) -> Prompt:
    """The record's prompt; with ``max_tokens``, its event cut by training's rule (``chat.cut_event_to_fit``) to
    the longest prefix that keeps the prompt within it."""
    def encode(messages: list[dict]) -> tuple[str, list[int]]:
        text = render_prompt(tokenizer, messages)
        return text, inference.encode_prompt(tokenizer, text)

    if max_tokens is None:
        text, ids = encode(record.prompt_messages)
        return Prompt(record, text, ids)
    try:
        (text, ids), _, cut = cut_event_to_fit(record.prompt_messages, encode, lambda e: len(e[1]), max_tokens)
    except EventCut as error:
        raise InputError(f"its prompt does not fit in {max_tokens} tokens even with its event (the code) removed: "
                         f"{len(error.shortest[1])} tokens of task, output format and template", sample=record.id,
                         field="text") from None
    except ValueError as error:
        raise InputError(f"its prompt is longer than the {max_tokens} tokens the model takes, and it cannot be cut "
                         f"({error})", sample=record.id, field="text") from None
    return Prompt(record, text, ids, cut)


def prompts_longest_first(tokenizer, records: Sequence[Record], max_tokens: int | None = None) -> list[Prompt]:
    """The records' prompts (``fitted_prompt``), longest first: batches then hold similar lengths (little padding),
    and an out-of-memory error shows in the first batch rather than at the end."""
    prompts = [fitted_prompt(tokenizer, record, max_tokens) for record in records]
    return sorted(prompts, key=lambda prompt: -len(prompt.ids))


def answer_tokens(tokenizer, vocabulary: Sequence[str]) -> int:
    """Tokens the longest scored answer (``判断:{judgement}``) takes after a prompt: what score mode needs beside it."""
    return max(len(inference.encode_prompt(tokenizer, JUDGEMENT_PREFIX + judgement)) for judgement in vocabulary) + 1


# ----------------------------------------------------------------- verdicts

@dataclass(frozen=True)
class Verdict:
    """A model's verdict on one prompt: the judgement (None: its answer gave none), where it came from, the
    probability of each judgement where there is one (score mode, or the head's two) and the answer it wrote
    (generate mode). ``details`` are the mechanism's own fields (log-probabilities; beside a head, what the model
    alone scores)."""
    prediction: str | None
    source: str
    p_defective: float | None = None
    probabilities: dict[str, float] | None = None
    response: str | None = None
    generated_tokens: int | None = None
    stopped: bool | None = None
    details: dict = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        """The reason after ``原因：`` of the written answer (None in score mode, or when it wrote none)."""
        return parse_answer(self.response).reason if self.response is not None else None

    def fields(self) -> dict:
        """The verdict's fields of a results row, in the schema's order."""
        row: dict = {}
        if self.probabilities is not None:
            row["probabilities"] = self.probabilities
        row |= self.details
        if self.response is not None:
            row |= {"response": self.response, "generated_tokens": self.generated_tokens, "stopped": self.stopped}
        return row


def result_row(record: Record, verdict: Verdict, cut_chars: int = 0) -> dict:
    """A sample row of the results: the record's id, subtype and reference, the prediction and whether it is right,
    the verdict's fields, and how much of the event was cut to fit (only when some was)."""
    row = {"id": record.id, "subtype": record.subtype, "reference": record.judgement,
           "prediction": verdict.prediction, "correct": verdict.prediction == record.judgement,
           "verdict_source": verdict.source, **verdict.fields()}
    return row | ({"event_cut_chars": cut_chars} if cut_chars else {})


def result_rows(batch: Sequence[Prompt], verdicts: Sequence[Verdict]) -> list[dict]:
    """The evaluation's sample rows of a batch: each verdict beside its record's reference."""
    return [result_row(prompt.record, verdict, prompt.cut_chars) for prompt, verdict in zip(batch, verdicts)]


def generated_verdicts(model, tokenizer, batch: Sequence[Prompt], vocabulary: Sequence[str], *, max_new_tokens: int,
                       stop_ids: Sequence[int]) -> list[Verdict]:
    """Generate mode: greedy answers decoded together; the judgement parsed from each (None: invalid format)."""
    answers = inference.generate_batch(model, tokenizer, [prompt.ids for prompt in batch],
                                       max_new_tokens=max_new_tokens, stop_ids=stop_ids)
    return [Verdict(parse_answer(answer["response"], vocabulary).judgement, GENERATED, **answer) for answer in answers]


def scored_candidates(model, tokenizer, batch: Sequence[Prompt], vocabulary: Sequence[str]) -> list[dict]:
    """Each prompt's most probable judgement, and every candidate's probability and log-probability."""
    candidates = [inference.candidate_sequences(tokenizer, prompt.text, vocabulary) for prompt in batch]
    logprobs = inference.score_batch(model, candidates, pad_id=tokenizer.pad_token_id)
    return [{"prediction": vocabulary[max(range(len(vocabulary)), key=lambda i: values[i])],
             "probabilities": dict(zip(vocabulary, inference.probabilities(values))),
             "logprobs": dict(zip(vocabulary, values))} for values in logprobs]


def scored_verdicts(model, tokenizer, batch: Sequence[Prompt], vocabulary: Sequence[str]) -> list[Verdict]:
    """Score mode: the log-probability of every candidate judgement; the most probable is the prediction."""
    positive, _ = positive_judgement(list(vocabulary))
    return [Verdict(scored["prediction"], SCORED, scored["probabilities"].get(positive), scored["probabilities"],
                    details={"logprobs": scored["logprobs"]})
            for scored in scored_candidates(model, tokenizer, batch, vocabulary)]


def head_verdicts(model, tokenizer, batch: Sequence[Prompt], vocabulary: Sequence[str], head, *, mode: str,
                  threshold: float = 0.5, max_new_tokens: int = 256, stop_ids: Sequence[int] = (),
                  model_answer: bool = True) -> list[Verdict]:
    """The verdict head decides: P(defective) from the prompt's hidden states (one pass that stops at the head's
    highest layer), defective when at or above ``threshold``. Score mode with ``model_answer`` also keeps what
    the model alone would answer (its scored candidates: one more pass, through every layer). Generate mode
    fixes the answer's start, ``判断:{verdict}\\n\\n原因：``, and the model writes the reason after it, so every
    answer keeps the document's format."""
    probabilities = head_probabilities(model, head, [prompt.ids for prompt in batch])
    decided = head.verdicts(probabilities, threshold)
    pairs = [{head.positive: p, head.negative: 1 - p} for p in probabilities]
    if mode == "score":
        alone = scored_candidates(model, tokenizer, batch, vocabulary) if model_answer else [None] * len(batch)
        return [Verdict(verdict, HEAD, p, pair, details={} if scored is None else {
                    "model_prediction": scored["prediction"], "model_probabilities": scored["probabilities"]})
                for p, verdict, pair, scored in zip(probabilities, decided, pairs, alone)]
    prefixes = [answer_prefix(verdict) for verdict in decided]
    forced = [inference.encode_prompt(tokenizer, prompt.text + prefix) for prompt, prefix in zip(batch, prefixes)]
    answers = inference.generate_batch(model, tokenizer, forced, max_new_tokens=max_new_tokens, stop_ids=stop_ids)
    verdicts = []
    for p, pair, prefix, answer in zip(probabilities, pairs, prefixes, answers):
        response = prefix + answer["response"]
        verdicts.append(Verdict(parse_answer(response, vocabulary).judgement, HEAD, p, pair,
                                **answer | {"response": response}))
    return verdicts


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
    model_answer: bool = True      # score mode with a head: also score what the model alone answers

    @property
    def source(self) -> str:
        return source_for(self.mode, head=self.head is not None)

    def verdicts(self, batch: Sequence[Prompt]) -> list[Verdict]:
        if self.source == HEAD:
            return head_verdicts(self.model, self.tokenizer, batch, self.vocabulary, self.head, mode=self.mode,
                                 threshold=self.threshold, max_new_tokens=self.max_new_tokens,
                                 stop_ids=self.stop_ids, model_answer=self.model_answer)
        if self.source == GENERATED:
            return generated_verdicts(self.model, self.tokenizer, batch, self.vocabulary,
                                      max_new_tokens=self.max_new_tokens, stop_ids=self.stop_ids)
        return scored_verdicts(self.model, self.tokenizer, batch, self.vocabulary)
