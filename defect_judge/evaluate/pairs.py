"""Twin pairs: PrimeVul's pair-wise outcomes (Ding et al., ICSE 2025, "Vulnerability Detection with
Code Language Models: How Far Are We?").

A pair is two test samples with the same ``pair_id``: one defective (the positive judgement, 是)
and its clean twin (否), versions of the same code. Each pair has one of four outcomes:

    P-C  both right: the defective one called defective, the clean one clean
    P-V  both called defective (the model sees a defect everywhere)
    P-B  both called clean (benign; the model misses the defect)
    P-R  both reversed: the defective one called clean and the clean one defective

A model that only reads the surface (names, length, the subtype) cannot tell twins apart and
lands in P-V or P-B; P-C is the share of pairs where it saw the one-line difference.

An invalid (unparsed) answer counts as wrong, as in accuracy: an invalid defective member counts
as called clean, an invalid clean member as called defective. So a pair with an invalid member is
never P-C, the four outcomes still add up to every pair, and ``with_invalid`` says how many pairs
had one. When every answer of every pair is invalid the outcomes say nothing about the model's
judgement (the rule alone would make them all P-R): they are null, and ``all_invalid`` is true.

Samples that are not half of such a pair are counted apart, never dropped silently: those without a
``pair_id``, and those whose ``pair_id`` group is not one defective and one clean sample (a lone
twin whose partner is in another split or cut by ``--limit``, or a group of three versions).
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from defect_judge.errors import InputError
from defect_judge.stats import mcnemar, wilson_interval

log = logging.getLogger(__name__)

OUTCOMES = ("P-C", "P-V", "P-B", "P-R")
OUTCOME_MEANINGS = {"P-C": "both right", "P-V": "both called defective", "P-B": "both called clean",
                    "P-R": "both reversed"}
INVALID_RULE = ("an invalid answer counts as wrong: an invalid defective member as called clean, an invalid "
                "clean member as called defective; such a pair is never P-C (with_invalid counts them)")


@dataclass(frozen=True)
class Pair:
    """One defective sample and its clean twin (sample rows of the results)."""
    pair_id: str
    defective: dict
    clean: dict

    @property
    def subtype(self) -> str:
        return self.defective["subtype"]

    @property
    def has_invalid(self) -> bool:
        return self.defective["prediction"] is None or self.clean["prediction"] is None


def called_defective(sample: dict, positive: str) -> bool:
    """Whether the answer calls the sample defective; an invalid answer is the wrong call."""
    if sample["prediction"] is None:
        return sample["reference"] != positive
    return sample["prediction"] == positive


def pair_outcome(pair: Pair, positive: str) -> str:
    """P-C, P-V, P-B or P-R of one pair."""
    defective_called = called_defective(pair.defective, positive)
    clean_called = called_defective(pair.clean, positive)
    if defective_called:
        return "P-V" if clean_called else "P-C"
    return "P-R" if clean_called else "P-B"


def has_pairs(samples: Iterable[dict]) -> bool:
    return any(s.get("pair_id") is not None for s in samples)


def collect_pairs(samples: Sequence[dict], positive: str, negative: str) -> tuple[list[Pair], dict]:
    """The twin pairs among ``samples`` (in order of first appearance), and the count of the rest."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for sample in samples:
        if sample.get("pair_id") is not None:
            groups[sample["pair_id"]].append(sample)
    pairs, incomplete = [], []
    for pair_id, members in groups.items():
        references = sorted(m["reference"] for m in members)
        if len(members) == 2 and references == sorted([positive, negative]):
            defective = next(m for m in members if m["reference"] == positive)
            clean = next(m for m in members if m["reference"] == negative)
            pairs.append(Pair(pair_id, defective, clean))
        else:
            incomplete.append(pair_id)
    without = sum(1 for s in samples if s.get("pair_id") is None)
    in_incomplete = sum(len(groups[p]) for p in incomplete)
    unpaired = {"samples": without + in_incomplete, "without_pair_id": without,
                "in_incomplete_groups": in_incomplete, "incomplete_groups": len(incomplete),
                "example_incomplete": incomplete[0] if incomplete else None}
    return pairs, unpaired


def all_invalid(pairs: Sequence[Pair]) -> bool:
    """Every answer of every pair is invalid: the outcomes would be the counting rule's, not the model's."""
    return bool(pairs) and all(p.defective["prediction"] is None and p.clean["prediction"] is None for p in pairs)


def outcome_summary(pairs: Sequence[Pair], positive: str) -> dict:
    """{pairs, with_invalid, all_invalid, P-C/P-V/P-B/P-R: {count, share, ci95 (Wilson)}}; with every answer
    invalid each outcome is {count: null, share: null, ci95: null}."""
    outcomes = [pair_outcome(p, positive) for p in pairs]
    total = len(pairs)
    failed = all_invalid(pairs)
    summary: dict = {"pairs": total, "with_invalid": sum(1 for p in pairs if p.has_invalid), "all_invalid": failed}
    for name in OUTCOMES:
        count = outcomes.count(name)
        low, high = wilson_interval(count, total)
        summary[name] = ({"count": None, "share": None, "ci95": None} if failed else
                         {"count": count, "share": count / total if total else 0.0, "ci95": [low, high]})
    return summary


def pair_results(samples: Sequence[dict], positive: str, negative: str) -> dict:
    """The ``pairs`` section of evaluation_results.json: outcomes overall and per subtype, the
    samples left unpaired, and each pair's outcome by pair_id."""
    pairs, unpaired = collect_pairs(samples, positive, negative)
    by_subtype: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        by_subtype[pair.subtype].append(pair)
    return {"positive": positive, "negative": negative, "invalid_rule": INVALID_RULE,
            "overall": outcome_summary(pairs, positive),
            "per_subtype": {name: outcome_summary(group, positive) for name, group in sorted(by_subtype.items())},
            "unpaired": unpaired,
            "outcomes": {pair.pair_id: None if all_invalid(pairs) else pair_outcome(pair, positive) for pair in pairs}}


def pair_problem(subtypes: Sequence[str], judgements: Sequence[str], defective: str | None) -> str | None:
    """Why samples sharing a pair_id cannot be versions of one piece of code, or None: they must share
    a subtype, not all have the same judgement, and hold at most one defective member."""
    if len(set(subtypes)) > 1:
        return f"its samples have different subtypes ({' / '.join(sorted(set(subtypes)))})"
    if len(judgements) > 1 and len(set(judgements)) == 1:
        return f"all {len(judgements)} samples have the same judgement ({judgements[0]})"
    if defective is not None and list(judgements).count(defective) > 1:
        return f"{list(judgements).count(defective)} samples are defective ({defective}); a pair has at most one"
    return None


def check_record_pairs(records: Sequence, path: str | os.PathLike, defective: str | None) -> None:
    """Check the pairs of chat records (``Record``: id, subtype, judgement, pair_id, line) as the converter
    checks raw samples: a bad pair stops with one line naming the file, line, sample and field; a lone
    twin is only counted (its partner may be in another split)."""
    groups: dict[str, list] = defaultdict(list)
    for record in records:
        if record.pair_id is not None:
            groups[record.pair_id].append(record)
    for pair_id, members in groups.items():
        problem = pair_problem([m.subtype for m in members], [m.judgement for m in members], defective)
        if problem:
            last = members[-1]
            ids = ", ".join(m.id for m in members)
            raise InputError(f"pair {pair_id!r} ({ids}): {problem}", path=path, line=last.line, sample=last.id,
                             field="pair_id")
    lone = [pair_id for pair_id, members in groups.items() if len(members) == 1]
    if lone:
        log.warning("%s: %d pair_id(s) with a single sample (its twin is elsewhere), e.g. %r: counted as unpaired",
                    path, len(lone), lone[0])


def pair_mcnemar(baseline: dict[str, str], other: dict[str, str]) -> dict:
    """McNemar's test over the twin pairs both evaluations hold (``pairs.outcomes`` of each): a pair is
    right when it is P-C. fixed: P-C for the other model only; broken: P-C for the baseline only."""
    shared = [pair_id for pair_id in baseline if pair_id in other]
    fixed = sum(1 for p in shared if baseline[p] != "P-C" and other[p] == "P-C")
    broken = sum(1 for p in shared if baseline[p] == "P-C" and other[p] != "P-C")
    p_value, method = mcnemar(fixed, broken)
    return {"pairs": len(shared), "fixed": fixed, "broken": broken, "p_value": p_value, "method": method}
