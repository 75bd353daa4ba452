"""defect_judge/data/subtypes.py: the catalogue the sample generator writes and the judge of new code asks in,
found by name or key, by CWE, and a question's task in the generator's words."""
from __future__ import annotations

import json

import pytest

from defect_judge.data.subtypes import (SUBTYPES, TASK_PHRASES, find_subtype, find_subtypes, output_formats,
                                        question_task, subtype_for_cwe)
from defect_judge.errors import InputError
from helpers import REPO_ROOT


def test_a_subtype_is_found_by_its_name_or_its_key():
    assert find_subtype("空指针解引用") is find_subtype("null_pointer_dereference") is SUBTYPES[0]
    assert find_subtypes(["all"]) == list(SUBTYPES)
    assert [s.key for s in find_subtypes(["除零", "memory_leak", "除零"])] == ["memory_leak", "division_by_zero"]
    with pytest.raises(InputError) as caught:
        find_subtype("空指针")
    assert "unknown subtype '空指针'" in str(caught.value) and "null_pointer_dereference (空指针解引用)" in str(caught.value)


def test_every_cwe_names_one_subtype():
    cwes = [cwe for subtype in SUBTYPES for cwe in subtype.cwes]
    assert len(cwes) == len(set(cwes))
    assert subtype_for_cwe(476).key == "null_pointer_dereference" and subtype_for_cwe(787).key == "buffer_overflow"
    assert subtype_for_cwe(416).name == "释放后使用" and subtype_for_cwe(561) is None


def test_the_shipped_samples_are_written_in_the_catalogues_words():
    """Every shipped sample's subtype is a catalogue name, its file the subtype's key, its task one of the phrases
    and its output format one the catalogue makes: a question asked in them reads like a training sample."""
    phrases = {phrase.format(lang=lang, unit=unit, subtype=s.name) for phrase in TASK_PHRASES for s in SUBTYPES
               for lang in ("C", "Java") for unit in ("函数", "方法", "代码")}
    for subtype in SUBTYPES:
        files = list((REPO_ROOT / "dataset" / "output").glob(f"{subtype.key}*"))
        assert files, subtype.key
        path = files[0] if files[0].is_file() else next(files[0].iterdir())
        text = path.read_text(encoding="utf-8")
        samples = json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines()]
        samples = samples if isinstance(samples, list) else [samples]
        for sample in samples:
            assert sample["instruction"][0]["subtype"] == subtype.name
            assert sample["input"]["task"] in phrases
            assert sample["input"]["output_format"] in output_formats()


def test_a_question_uses_the_first_phrase_and_the_models_words():
    assert question_task("除零", "c") == "请判断下面的C函数是否存在除零缺陷。"
    assert question_task("除零", "java") == "请判断下面的Java方法是否存在除零缺陷。"
    assert output_formats("有缺陷", "无缺陷")[0] == "判断:有缺陷/无缺陷\n\n原因：<简要说明>"
