"""The judge card: what a trained model needs to judge new code without a test file, recorded with it.

An evaluation reads the judgement vocabulary off its test set; new code has no reference answers, so training
writes down what the model was taught, under ``"judge"`` in ``best_checkpoint.json`` (and in every
``verdict_head.json`` it saves, so a checkpoint or a linear-probe run carries it too)::

    "judge": {"judgements": ["否", "是"],   the words an answer may give
              "positive": "是",             the one that means "defective" (P(defective) is its probability)
              "negative": "否",
              "subtypes": ["内存泄漏", ...], the subtypes of the training split
              "max_length": 1024,           training's max_length: a longer prompt is cut (chat.cut_event_to_fit)
              "dev_threshold": {...}}       the verdict head's threshold chosen on dev at the best checkpoint
                                            (highest balanced accuracy), or null

``judge_card`` finds it for a resolved model; a folder written before the card existed still loads, with a
warning naming what was inferred (the head's two judgements, the dev file training was chosen on), and a base
model takes its vocabulary from ``--judgements``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from defect_judge.data.labels import judgement_vocabulary, two_classes
from defect_judge.data.schema import read_records
from defect_judge.errors import InputError
from defect_judge.fileio import read_json_object
from defect_judge.model.run_folder import BEST_CHECKPOINT_FILE

log = logging.getLogger(__name__)

CARD_KEY = "judge"


@dataclass(frozen=True)
class JudgeCard:
    judgements: tuple[str, ...]
    positive: str | None                # None: not a two-judgement vocabulary (nothing means "defective")
    negative: str | None
    subtypes: tuple[str, ...] = ()      # empty: not known
    max_length: int | None = None       # None: not known (the model's context is the limit)
    dev_threshold: dict | None = None
    inferred: tuple[str, ...] = ()      # what was not recorded, and where it came from instead

    def to_json(self) -> dict:
        return {"judgements": list(self.judgements), "positive": self.positive, "negative": self.negative,
                "subtypes": list(self.subtypes), "max_length": self.max_length, "dev_threshold": self.dev_threshold}


def card_from_training(judgements: Sequence[str | None], subtypes: Sequence[str | None], max_length: int,
                       dev_threshold: dict | None = None) -> JudgeCard:
    """The card of a training run: its training split's judgements (with their known partners; None: a sample
    without one) and subtypes."""
    vocabulary = judgement_vocabulary(judgements)
    classes = two_classes(vocabulary)
    return JudgeCard(tuple(vocabulary), *(classes or (None, None)), tuple(sorted({s for s in subtypes if s})),
                     int(max_length), dev_threshold)


def card_from_json(data: object, *, path: Path) -> JudgeCard:
    """A recorded card; a malformed one is one line naming the file and field."""
    field = CARD_KEY
    if not isinstance(data, dict):
        raise InputError("must be an object", path=path, field=field)
    judgements = data.get("judgements")
    if not isinstance(judgements, list) or not judgements or not all(isinstance(j, str) and j for j in judgements):
        raise InputError("must be a non-empty list of judgement words", path=path, field=f"{field}.judgements")
    positive, negative = data.get("positive"), data.get("negative")
    if positive is not None and (positive not in judgements or negative not in judgements or positive == negative):
        raise InputError(f"positive/negative ({positive}/{negative}) must be two of the judgements "
                         f"{'/'.join(judgements)}", path=path, field=f"{field}.positive")
    subtypes = data.get("subtypes") or []
    if not isinstance(subtypes, list) or not all(isinstance(s, str) for s in subtypes):
        raise InputError("must be a list of subtype names", path=path, field=f"{field}.subtypes")
    max_length = data.get("max_length")
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1):
        raise InputError("must be a positive number of tokens", path=path, field=f"{field}.max_length")
    threshold = data.get("dev_threshold")
    if threshold is not None and not (isinstance(threshold, dict) and isinstance(threshold.get("threshold"), float)):
        raise InputError("must be null or an object with a number 'threshold'", path=path,
                         field=f"{field}.dev_threshold")
    return JudgeCard(tuple(judgements), positive, negative, tuple(subtypes), max_length, threshold)


def _recorded(path: Path) -> tuple[JudgeCard, Path] | None:
    if not path.is_file():
        return None
    data = read_json_object(path)
    return (card_from_json(data[CARD_KEY], path=path), path) if data.get(CARD_KEY) is not None else None


def recorded_card(weights_path: Path, run_folder: Path | None,
                  head_config: Path | None) -> tuple[JudgeCard, Path] | None:
    """The card recorded with a model, and the file it was read from: the training run's best_checkpoint.json
    (``run_folder``: the OUTPUT_DIR given, or the run a checkpoint folder lies in), else its head's
    ``head_config`` (verdict_head.json). A checkpoint that is not the run's best gets no dev threshold: it was
    chosen for another."""
    if run_folder is not None:
        found = _recorded(run_folder / BEST_CHECKPOINT_FILE)
        if found is not None:
            card, path = found
            best = read_json_object(path).get("best_checkpoint")
            chosen = [run_folder.resolve(), (run_folder / str(best)).resolve()]
            if weights_path.resolve() not in chosen:
                card = replace(card, dev_threshold=None)
            return card, path
    if head_config is not None:
        return _recorded(head_config)
    return None


def _inferred_vocabulary(run_folder: Path | None, head_config: Path | None) -> tuple[list[str], str] | None:
    """An older folder's judgements: its head's two, else those of the dev file its training was chosen on."""
    if head_config is not None and head_config.is_file():
        head = read_json_object(head_config)
        if isinstance(head.get("positive"), str) and isinstance(head.get("negative"), str):
            return [head["positive"], head["negative"]], f"the verdict head's judgements ({head_config})"
    if run_folder is not None and (run_folder / BEST_CHECKPOINT_FILE).is_file():
        dev = read_json_object(run_folder / BEST_CHECKPOINT_FILE).get("eval_data")
        if dev and Path(dev).is_file():
            return ([r.judgement for r in read_records(dev) if r.judgement is not None],
                    f"the judgements of the dev split training chose on ({dev})")
    return None


def judge_card(weights_path: Path, *, run_folder: Path | None = None, head_config: Path | None = None,
               judgements: Sequence[str] = (), flag: str = "--judgements") -> JudgeCard:
    """The card of a model: recorded, else (an older folder) inferred with a warning, else from ``judgements``
    (the flag a base model needs). A flag that contradicts the recorded vocabulary is refused."""
    given = judgement_vocabulary(j.strip() for j in judgements if j.strip())
    found = recorded_card(weights_path, run_folder, head_config)
    if found is not None:
        card, path = found
        if given and set(given) != set(card.judgements):
            raise InputError(f"the model was trained to answer {'/'.join(card.judgements)} (recorded in {path}), "
                             f"{flag} says {'/'.join(given)}: drop {flag}", field=flag.lstrip("-"))
        return card
    source = f"{flag} {' '.join(given)}" if given else None
    if not given:
        inferred = _inferred_vocabulary(run_folder, head_config)
        if inferred is None:
            raise InputError(f"no judgement vocabulary is recorded with this model (a base model, or a folder "
                             f"written before training recorded one): pass {flag} with the two words it answers, "
                             f"e.g. {flag} 是 否", path=weights_path, field=flag.lstrip("-"))
        given, source = judgement_vocabulary(inferred[0]), inferred[1]
        log.warning("%s records no judge card (judgements, subtypes, max_length): inferred the judgements %s from "
                    "%s; subtypes and training's max_length are not known", weights_path, "/".join(given), source)
    classes = two_classes(given)
    return JudgeCard(tuple(given), *(classes or (None, None)), inferred=(f"judgements from {source}",))


def describe(card: JudgeCard) -> str:
    """The card in one line, for the log."""
    parts = [f"judgements {'/'.join(card.judgements)} (defective: {card.positive or 'none'})"]
    if card.subtypes:
        parts.append(f"trained on {len(card.subtypes)} subtype(s): {', '.join(card.subtypes)}")
    if card.max_length:
        parts.append(f"max_length {card.max_length}")
    if card.dev_threshold:
        parts.append(f"dev threshold {card.dev_threshold['threshold']:.4g}")
    return "; ".join(parts)
