"""The records' reference judgements as labels: which records are labelled, the judgement vocabulary an answer
may use, the judgement that means "defective", and the majority class.

Every script that scores, fits or benchmarks on chat records asks here: the evaluation, the benchmark, the
TF-IDF baseline, training's verdict head, the linear probe and the comparison plots.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Hashable, Iterable, Protocol, Sequence, TypeVar

from defect_judge.errors import InputError

log = logging.getLogger(__name__)


class Labelled(Protocol):
    """A chat record, or anything with its id, line and reference judgement (None: the answer has none)."""
    id: str
    judgement: str | None


R = TypeVar("R", bound=Labelled)

MISSING_JUDGEMENT = "the reference answer has no judgement (判断:…)"


def is_labelled(record: Labelled) -> bool:
    """A record is labelled when its reference answer holds a judgement (判断:…)."""
    return record.judgement is not None


def labelled_records(records: Sequence[R], path: str | os.PathLike, *, skip: bool = False,
                     skip_flag: str | None = None) -> tuple[list[R], list[R]]:
    """The labelled records and the unlabelled ones. An unlabelled record is bad data: refused in one line
    naming the file, line and sample (with ``skip_flag``, the flag that skips them), unless ``skip`` (then the
    skipped ones are counted in the log); no labelled record at all is refused either way."""
    unlabelled = [r for r in records if not is_labelled(r)]
    if len(unlabelled) == len(records):
        raise InputError("no reference answer holds a judgement (判断:…), so nothing can be scored", path=path)
    if unlabelled and not skip:
        first = unlabelled[0]
        more = f" (and {len(unlabelled) - 1} more)" if len(unlabelled) > 1 else ""
        hint = (f": fix the data, or pass {skip_flag} to skip such samples and count them in the results"
                if skip_flag else "")
        raise InputError(f"{MISSING_JUDGEMENT}{more}{hint}", path=path, line=getattr(first, "line", None),
                         sample=first.id, field="text")
    if unlabelled:
        log.warning("skipping %d sample(s) whose reference has no judgement (判断:…) (%s), e.g. %s", len(unlabelled),
                    skip_flag or "skipped", ", ".join(r.id for r in unlabelled[:3]))
    return [r for r in records if is_labelled(r)], unlabelled


def check_two_judgements(judged: Sequence[tuple[str, dict]]) -> None:
    """The toolkit judges two classes, defective and clean: a third judgement value is one line naming the sample
    that holds the rarest value (``judged``: each sample's judgement and where it is: path, line, sample, field)
    and the count of every value found."""
    counts = Counter(judgement for judgement, _ in judged)
    if len(counts) <= 2:
        return
    rarest = min(counts, key=lambda judgement: (counts[judgement], judgement))
    where = next(place for judgement, place in judged if judgement == rarest)
    found = ", ".join(f"{judgement} {n}" for judgement, n in counts.most_common())
    raise InputError(f"{len(counts)} judgement values ({found}), and the toolkit judges two, defective and clean: "
                     f"this sample's {rarest!r} is the rarest; write every sample with one of two values", **where)


def check_record_judgements(*splits: tuple[Sequence[Labelled], str | os.PathLike]) -> None:
    """``check_two_judgements`` over the references of chat records, (records, the file they were read from) for
    each file, all files together (unlabelled records aside)."""
    check_two_judgements([(r.judgement, {"path": path, "line": getattr(r, "line", None), "sample": r.id,
                                         "field": "text"})
                          for records, path in splits for r in records if r.judgement is not None])


# Two-word judgement vocabularies (the document's 是/否 first). When the references hold one word of
# a pair only (a one-class test set, or --limit), the other is still a well-formed answer: wrong, not invalid.
JUDGEMENT_PAIRS = (("是", "否"), ("有缺陷", "无缺陷"), ("存在缺陷", "不存在缺陷"), ("有", "无"), ("yes", "no"),
                   ("true", "false"))


def judgement_vocabulary(references: Iterable[str | None]) -> list[str]:
    """The judgements an answer may give: the references' values (an unlabelled None is no value), plus the
    partner of each one that belongs to a known pair; sorted."""
    vocabulary = {r for r in references if r is not None}
    for pair in JUDGEMENT_PAIRS:
        if vocabulary & set(pair):
            vocabulary |= set(pair)
    return sorted(vocabulary)


# Judgement words that mean "the defect is present": the positive class of ROC-AUC.
POSITIVE_JUDGEMENTS = ("是", "有", "有缺陷", "存在", "存在缺陷", "存在漏洞", "有漏洞", "yes", "true", "defective", "buggy")
POSITIVE_STARTS = ("有", "是", "存在", "yes", "true", "defect", "bug", "vulnerable")
NEGATIVE_STARTS = ("无", "否", "不", "没", "非", "no", "false", "clean", "safe")


def positive_judgement(judgements: Sequence[str]) -> tuple[str | None, str]:
    """The judgement that means "defect present" for ROC-AUC, and the rule that chose it.

    Only two-class vocabularies have one. An exact known word (是, 有缺陷, yes, ...)
    wins; else the one starting like a positive word and not like a negation
    (有…, 是…, 存在…, yes…); else the lexicographically first.
    """
    if len(judgements) != 2:
        return None, "not a two-class judgement set"
    lowered = {j: j.strip().lower() for j in judgements}
    exact = [j for j in judgements if lowered[j] in POSITIVE_JUDGEMENTS]
    if len(exact) == 1:
        return exact[0], "known positive word"
    starts = [j for j in judgements
              if lowered[j].startswith(POSITIVE_STARTS) and not lowered[j].startswith(NEGATIVE_STARTS)]
    if len(starts) == 1:
        return starts[0], "starts like a positive word"
    return sorted(judgements)[0], "lexicographically first (no rule matched)"


def two_classes(judgements: Sequence[str]) -> tuple[str, str] | None:
    """(defective, clean) judgements of a two-judgement vocabulary; None otherwise."""
    positive, _ = positive_judgement(judgements)
    if positive is None:
        return None
    return positive, next(j for j in judgements if j != positive)


def majority_class(references: Iterable[Hashable]) -> tuple[Hashable | None, float]:
    """The most common reference and its share: what always answering it scores. Ties go to the smallest
    value; (None, 0.0) without references."""
    counts = Counter(references)
    if not counts:
        return None, 0.0
    value, count = min(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return value, count / sum(counts.values())
