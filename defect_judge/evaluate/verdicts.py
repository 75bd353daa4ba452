"""Where a verdict comes from: the one list of mechanisms that produce a judgement, and what each is called in
results, training metrics and charts.

    generated  parsed from the model's greedy answer (判断:{judgement} …), the document's way
    scored     the more probable of the candidate answers 判断:{judgement} (log-probability; no generation)
    head       the verdict head's P(defective) over the model's hidden states (verdict_head.py); in
               generate mode the model then writes the reason after 判断:{the head's verdict}

``judges.py`` implements one judge per mechanism; ``results.py`` records each sample's source and the
headline one; charts and tables label a model by it. A new mechanism is a new entry here and a new judge
there.
"""
from __future__ import annotations

from dataclasses import dataclass

GENERATED = "generated"
SCORED = "scored"
HEAD = "head"
TFIDF = "classical"  # eval/baseline.py: a classifier outside the model (scored, but not by an LLM)


@dataclass(frozen=True)
class Mechanism:
    source: str
    description: str
    label_suffix: str        # appended to a model's name in charts and tables


MECHANISMS = {m.source: m for m in (
    Mechanism(GENERATED, "parsed from the model's generated answer", ""),
    Mechanism(SCORED, "the more probable candidate answer (log-probability)", ""),
    Mechanism(HEAD, "the verdict head over the model's hidden states", " + head"),
    Mechanism(TFIDF, "a classifier outside the model", ""),
)}


def source_for(mode: str, *, head: bool) -> str:
    """The mechanism an evaluation in ``mode`` (generate / score) uses, with or without a verdict head."""
    if head:
        return HEAD
    return GENERATED if mode == "generate" else SCORED


def source_of_results(results: dict) -> str:
    """The headline mechanism of an ``evaluation_results.json``; files written before it was recorded
    (schema v1/v2) are read by their mode."""
    if results.get("verdict_source") in MECHANISMS:
        return results["verdict_source"]
    if results.get("model_kind") == "classical_baseline":
        return TFIDF
    return GENERATED if results.get("mode") == "generate" else SCORED


def display_label(label: str, source: str) -> str:
    """A model's display name with its mechanism's suffix (``SmolLM2 + demo + head``), not doubled."""
    suffix = MECHANISMS[source].label_suffix if source in MECHANISMS else ""
    return label if not suffix or label.endswith(suffix) else label + suffix
