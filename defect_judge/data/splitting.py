"""The train/dev/test split: stratified by subtype × judgement, and leak-free.

Samples that share an event text or a ``pair_id`` (twins) form one group, and a
group always lands on one side. Deterministic for a seed, whatever the input
order. ``dataset/convert_and_split.py`` is the script around it.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict

from defect_judge.data.schema import Record
from defect_judge.templates import event_char_span

SPLITS = ("train", "dev", "test")


def test_quota(counts: dict[str, int], ratio: float, min_rest: int = 1) -> dict[str, int]:
    """Test samples per judgement inside one subtype.

    The subtype's total is round(n * ratio), at least 1; it is shared among
    judgements by largest remainder, then every judgement with two or more
    samples gets at least one test and one training sample, so the test part
    holds both judgements wherever the subtype has both. Finally the test part
    shrinks (never below one sample) until ``min_rest`` samples stay behind:
    with a dev split to carve from the rest, a subtype of three samples keeps two.
    """
    total = sum(counts.values())
    target = max(1, round(total * ratio))
    exact = {j: c * target / total for j, c in counts.items()}
    quota = {j: int(x) for j, x in exact.items()}
    for j in sorted(exact, key=lambda j: (quota[j] - exact[j], j))[: target - sum(quota.values())]:
        quota[j] += 1
    for j, c in counts.items():
        if c >= 2:
            quota[j] = min(max(quota[j], 1), c - 1)
    while total - sum(quota.values()) < min_rest and sum(quota.values()) > 1:
        largest = max(sorted(quota), key=lambda j: quota[j])
        quota[largest] -= 1
    return quota


def split_samples(records: list[Record], judgements: dict[str, str], ratio: float,
                  seed: int | str, min_rest: int = 1) -> tuple[list[Record], list[Record]]:
    """Stratified by subtype and judgement; samples sharing an event text or a pair_id stay on one side.

    ``judgements`` maps record id to its judgement. Deterministic for a seed:
    groups are shuffled per stratum with a generator seeded by (seed, stratum).
    ``min_rest``: see ``test_quota``.
    """
    groups = linked_groups(records)
    by_stratum: dict[tuple[str, str], list[list[Record]]] = defaultdict(list)
    for group in groups:
        first = group[0]
        by_stratum[(first.subtype, judgements[first.id])].append(group)
    per_subtype: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        per_subtype[record.subtype][judgements[record.id]] += 1
    quotas = {subtype: test_quota(dict(counts), ratio, min_rest) for subtype, counts in per_subtype.items()}

    test_ids: set[str] = set()
    taken: Counter = Counter()  # test samples per stratum, including those carried in by a shared event
    for stratum in sorted(by_stratum):
        subtype, judgement = stratum
        stratum_groups = by_stratum[stratum]
        random.Random(f"{seed}|{subtype}|{judgement}").shuffle(stratum_groups)
        for group in stratum_groups:
            if taken[stratum] >= quotas[subtype][judgement]:
                break
            for record in group:
                test_ids.add(record.id)
                taken[(record.subtype, judgements[record.id])] += 1
    # A group shared by several strata counts towards its first one only, so a
    # subtype can end with no test sample: give it one of its groups.
    for subtype in sorted(per_subtype):
        if not any(r.subtype == subtype and r.id in test_ids for r in records):
            candidates = sorted((g for g in groups if any(r.subtype == subtype for r in g)),
                                key=lambda g: (len(g), g[0].id))
            test_ids.update(r.id for r in candidates[0])
    train = [r for r in records if r.id not in test_ids]
    test = [r for r in records if r.id in test_ids]
    return train, test


def split_three_ways(records: list[Record], judgements: dict[str, str], test_ratio: float, dev_ratio: float,
                     seed: int) -> tuple[list[Record], list[Record], list[Record]]:
    """(train, dev, test): test as the two-way split makes it, then dev carved from the rest.

    Dev gets ``dev_ratio`` of each subtype's samples (a share of all samples), stratified and
    leak-free the same way. A subtype of three or more samples has one in test, one in dev and
    one in train (for that, a very small subtype may give test one sample fewer than the two-way
    split would); a smaller one gives dev nothing. Dev takes only from a subtype left with two or
    more groups after test: its last group (a twin pair is one) stays in train.
    """
    rest, test = split_samples(records, judgements, test_ratio, seed, min_rest=2 if dev_ratio > 0 else 1)
    if dev_ratio <= 0:
        return rest, [], test
    rest_groups = linked_groups(rest)
    # Counted in groups, not samples: a subtype left with one twin pair has two samples, and dev would take
    # both, leaving training none of that subtype.
    groups_of = Counter(subtype for group in rest_groups for subtype in {r.subtype for r in group})
    # Whole groups only: a group that also holds a subtype too small to give dev a sample stays in train.
    eligible = [r for group in rest_groups if all(groups_of[r.subtype] >= 2 for r in group) for r in group]
    _, dev = split_samples(eligible, judgements, dev_ratio / (1 - test_ratio), f"{seed}|dev") if eligible else ([], [])
    dev_ids = {r.id for r in dev}
    return [r for r in rest if r.id not in dev_ids], dev, test


def linked_groups(records: list[Record]) -> list[list[Record]]:
    """Samples that must share a side of the split: the same event text, or the same pair_id, transitively.
    Each group is sorted by id, the groups by their first id, whatever the input order."""
    parent = {r.id: r.id for r in records}

    def root(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[tuple[str, str], str] = {}
    for record in sorted(records, key=lambda r: r.id):
        for key in (("event", _event_of(record)), ("pair", record.pair_id)):
            if key[1] is None:
                continue
            if key in first_of:
                parent[root(record.id)] = root(first_of[key])
            else:
                first_of[key] = record.id
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.id):
        groups[root(record.id)].append(record)
    return sorted(groups.values(), key=lambda g: g[0].id)


def _event_of(record: Record) -> str:
    start, end = event_char_span(record.user)
    return record.user[start:end]


def split_stats(splits: dict[str, list[Record]], judgements: dict[str, str], ratios: dict[str, float],
                seed: int) -> dict:
    """Counts per subtype × split × judgement; ``splits`` maps train/dev/test (dev may be absent) to records."""
    names = [name for name in SPLITS if name in splits]
    vocabulary = sorted({judgements[r.id] for records in splits.values() for r in records})
    subtypes: dict[str, dict] = {}
    for split in names:
        for record in splits[split]:
            entry = subtypes.setdefault(record.subtype, {"total": 0, **{n: 0 for n in names},
                                                         "judgements": {j: {n: 0 for n in names} for j in vocabulary}})
            entry["total"] += 1
            entry[split] += 1
            entry["judgements"][judgements[record.id]][split] += 1
    ordered = dict(sorted(subtypes.items(), key=lambda kv: (-kv[1]["total"], kv[0])))
    return {**{f"{name}_ratio": value for name, value in ratios.items()}, "seed": seed, "splits": names,
            "total": sum(len(records) for records in splits.values()),
            **{name: len(splits[name]) for name in names}, "judgements": vocabulary, "subtypes": ordered}


def spread_subset(records: list[Record], limit: int) -> list[Record]:
    """At most ``limit`` records (``--limit``), spread over the subtypes and judgements: whole twin pairs
    taken round-robin across subtype x judgement strata, each stratum in file order; the result in file
    order. A pair that would overshoot the limit is left out, not cut in two."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.pair_id if record.pair_id is not None else f"id:{record.id}", []).append(record)
    strata: dict[tuple, list[list[Record]]] = defaultdict(list)
    for group in groups.values():
        strata[(group[0].subtype, tuple(sorted({str(r.judgement) for r in group})))].append(group)
    queues = list(strata.values())
    chosen: set[str] = set()
    while queues and len(chosen) < limit:
        for queue in queues:
            group = queue.pop(0)
            if len(chosen) + len(group) <= limit:
                chosen.update(r.id for r in group)
        queues = [queue for queue in queues if queue]
    return [r for r in records if r.id in chosen]
