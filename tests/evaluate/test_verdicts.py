"""defect_judge/evaluate/verdicts.py: the one list of mechanisms that produce a verdict, which one an evaluation
uses, which one a results file was decided by (old files by their mode), and a model's label in charts."""
from __future__ import annotations

import json

import pytest

from defect_judge.evaluate.results import SCHEMA_V1, load_results, results_document
from defect_judge.evaluate.results_table import format_results_table
from defect_judge.evaluate.verdicts import (GENERATED, HEAD, MECHANISMS, SCORED, TFIDF, display_label, source_for,
                                            source_of_results)

SAMPLES = [{"id": "a", "subtype": "空指针解引用", "reference": "是", "prediction": "是", "correct": True,
            "probabilities": {"是": 0.8, "否": 0.2}},
           {"id": "b", "subtype": "空指针解引用", "reference": "否", "prediction": "是", "correct": False,
            "probabilities": {"是": 0.6, "否": 0.4}}]


def test_every_mechanism_is_listed_once_under_its_own_name():
    assert set(MECHANISMS) == {GENERATED, SCORED, HEAD, TFIDF} == {"generated", "scored", "head", "classical"}
    assert all(mechanism.source == name for name, mechanism in MECHANISMS.items())
    descriptions = [mechanism.description for mechanism in MECHANISMS.values()]
    assert all(descriptions) and len(set(descriptions)) == len(descriptions)
    # only the head changes a model's name in charts: the others are the model itself answering (or no model)
    assert {name: m.label_suffix for name, m in MECHANISMS.items() if m.label_suffix} == {HEAD: " + head"}


@pytest.mark.parametrize("mode, head, expected", [
    ("generate", False, GENERATED), ("score", False, SCORED), ("generate", True, HEAD), ("score", True, HEAD)])
def test_the_head_decides_whenever_there_is_one_else_the_mode(mode, head, expected):
    assert source_for(mode, head=head) == expected


@pytest.mark.parametrize("results, expected", [
    ({"verdict_source": HEAD, "mode": "generate"}, HEAD),  # recorded: it wins over the mode
    ({"verdict_source": GENERATED, "mode": "score"}, GENERATED),
    ({"verdict_source": "oracle", "mode": "generate"}, GENERATED),  # not a mechanism: read by the mode
    ({"verdict_source": None, "mode": "score"}, SCORED),
    ({"mode": "generate"}, GENERATED),  # schema v1/v2: not recorded
    ({"mode": "score"}, SCORED),
    ({"mode": "score", "model_kind": "classical_baseline"}, TFIDF),  # eval/baseline.py's files
])
def test_the_source_of_a_results_file(results, expected):
    assert source_of_results(results) == expected


def test_results_written_and_read_back_carry_their_source(tmp_path):
    """results.py records the mechanism (the head's with a verdict head, else the mode's, the baseline's for its
    kind) and reads an old file that has none by its mode; the printed table names it with its description."""
    def written(**kwargs) -> dict:
        document = results_document(model_path="m", test_dataset_path="test.jsonl", settings={},
                                    judgements=["否", "是"], samples=SAMPLES, **kwargs)
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        return load_results(path)

    assert written(model_kind="base_model", mode="score")["verdict_source"] == SCORED
    assert written(model_kind="base_model", mode="generate")["verdict_source"] == GENERATED
    assert written(model_kind="classical_baseline", mode="score")["verdict_source"] == TFIDF
    head = {"spec": "mean@0.5", "layers": [1], "pooling": "mean", "path": "/runs/probe"}  # HeadChoice.to_json's
    with_head = written(model_kind="base_model", mode="generate", verdict_head=head)
    assert with_head["verdict_source"] == HEAD
    assert f"verdicts: head ({MECHANISMS[HEAD].description}): mean@0.5" in format_results_table(with_head)

    old = {"schema": SCHEMA_V1, "model_path": "m", "mode": "generate", "overall": {}, "per_subtype": {},
           "per_judgement": {}, "samples": [{k: v for k, v in s.items() if k != "probabilities"} for s in SAMPLES]}
    (tmp_path / "v1.json").write_text(json.dumps(old, ensure_ascii=False), encoding="utf-8")
    assert load_results(tmp_path / "v1.json")["verdict_source"] == GENERATED


@pytest.mark.parametrize("label, source, expected", [
    ("SmolLM2 + demo", HEAD, "SmolLM2 + demo + head"),
    ("SmolLM2 + demo + head", HEAD, "SmolLM2 + demo + head"),  # not doubled
    ("SmolLM2 + demo", SCORED, "SmolLM2 + demo"),
    ("SmolLM2 + demo", GENERATED, "SmolLM2 + demo"),
    ("TF-IDF", TFIDF, "TF-IDF"),
    ("SmolLM2", "oracle", "SmolLM2"),  # not a mechanism: no suffix, no KeyError
])
def test_a_models_display_label_carries_its_mechanisms_suffix(label, source, expected):
    assert display_label(label, source) == expected
