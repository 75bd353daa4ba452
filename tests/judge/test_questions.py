"""defect_judge/judge/questions.py on real files: the question a SARIF finding asks (the function around its defect
site, its subtype, in the training format, one prompt for two findings in one function) or why it asks none (every
reason, each finding kept in log order), every function of source files for each subtype asked, and samples
without an answer (chat records or raw samples) as questions; bad input refused in one line naming file and field."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from defect_judge.data.subtypes import find_subtype
from defect_judge.judge.questions import (Question, SourceCache, Unjudged, display_path, input_questions,
                                          sarif_questions, source_questions)
from defect_judge.judge.rules import RuleMap
from helpers import input_refusal, make_records, sarif_schema_validator, write_records

ITEMS_C = """\
#include <stdlib.h>

static int counter = 0;

int first_id(int *ids)
{
    int *p = NULL;
    if (ids[0] > 3)
        p = ids;
    return *p + counter;
}

int ratio(int total)
{
    int parts = 0;
    return total / parts;
}
"""
ACCOUNT_JAVA = """\
public class Account {
    private int[] slots;
    public int at(int i) {
        return slots[i];
    }
}
"""
FIRST_ID, RATIO, AT = (5, 11), (13, 17), (3, 5)  # the functions' lines
NULL, ZERO, LEAK, OVERFLOW = (find_subtype(key) for key in ("null_pointer_dereference", "division_by_zero",
                                                              "memory_leak", "buffer_overflow"))
RULE_MAP = RuleMap({"myLeak": "memory_leak", "uninitvar": None})


def code(text: str, lines: tuple[int, int]) -> str:
    return "\n".join(text.splitlines()[lines[0] - 1:lines[1]])


def prompt(task: str, event: str, positive: str = "是", negative: str = "否") -> str:
    """The user turn of the training format, written out (docs/judge.md, "The question")."""
    return f"任务：{task}\n\n事件：\n{event}\n\n输出格式：\n判断:{positive}/{negative}\n\n原因：<简要说明>"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """root/ with C and Java sources, a binary .c, a header without a function, a Latin-1 .c, notes.txt, a
    Makefile; secret.c beside root, outside it."""
    top = tmp_path_factory.mktemp("questions")
    root = top / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "items.c").write_text(ITEMS_C, encoding="utf-8")
    (root / "src" / "Account.java").write_text(ACCOUNT_JAVA, encoding="utf-8")
    (root / "src" / "blob.c").write_bytes(b"\x00\x01int f(void) { return 0; }\n")
    (root / "src" / "decls.h").write_text("int ratio(int total);\n", encoding="utf-8")
    (root / "src" / "latin.c").write_bytes(b"int g(void)\n{\n    return 1; /* caf\xe9 */\n}\n")
    (root / "notes.txt").write_text("int f(void) { return 0; }\n", encoding="utf-8")
    (root / "Makefile").write_text("all:\n\tcc src/items.c\n", encoding="utf-8")
    (top / "secret.c").write_text(ITEMS_C, encoding="utf-8")
    return root


def result(rule_id: str, *sites: tuple[str, int | None]) -> dict:
    """A SARIF result whose locations are ``sites`` (uri, startLine; the defect site last)."""
    locations = [{"physicalLocation": {"artifactLocation": {"uri": uri},
                                       **({"region": {"startLine": line}} if line is not None else {})}}
                 for uri, line in sites]
    return {"ruleId": rule_id, "message": {"text": f"{rule_id} here"}, "locations": locations}


# (result, what it asks) for run 0, in log order: a question's (function lines, subtype, subtype_from), or the
# reason no question is asked.
RUN0 = [
    (result("nullPointer", ("src/items.c", 7), ("src/items.c", 10)), (FIRST_ID, NULL, "CWE-476")),
    (result("nullPointerRedundantCheck", ("src/items.c", 9)), (FIRST_ID, NULL, "rule table: nullPointerRedundantCheck")),
    (result("zerodiv", ("src/items.c", 16)), (RATIO, ZERO, "CWE-369")),
    (result("myLeak", ("src/items.c", 10)), (FIRST_ID, LEAK, "rule map")),
    (result("knownConditionTrueFalse", ("src/items.c", 8)), "no subtype: rule knownConditionTrueFalse, no CWE"),
    (result("syntaxError", ("src/items.c", 1)), "not analysed (syntaxError)"),
    (result("uninitvar", ("src/items.c", 10)), "rule map: rule uninitvar is never judged"),
    (result("nullPointer", ("../secret.c", 10)), "outside the source root"),
    (result("nullPointer", ("src/missing.c", 2)), "file not found"),
    (result("nullPointer", ("notes.txt", 1)), "not C, C++ or Java (by its extension, .txt)"),
    (result("nullPointer", ("Makefile", 1)), "not C, C++ or Java (by its extension, none)"),
    (result("nullPointer", ("src/items.c", None)), "no line"),
    (result("nullPointer", ("src/blob.c", 1)), "binary file"),
    (result("nullPointer", ("src/items.c", 3)), "no enclosing function"),
    (result("nullPointer"), "no location"),
    (result("nullPointer", ("https://example.com/src/items.c", 10)), "not a local file"),
]


@pytest.fixture(scope="module")
def log() -> dict:
    """Two runs: cppcheck-like (rules with CWE tags in the driver) and a Java linter tagging its results."""
    java = result("indexCheck", ("src/Account.java", 4)) | {"properties": {"tags": ["external/cwe/cwe-125"]}}
    return {"version": "2.1.0", "runs": [
        {"tool": {"driver": {"name": "cppcheck", "rules": [
            {"id": "nullPointer", "properties": {"tags": ["external/cwe/cwe-476"]}},
            {"id": "zerodiv", "properties": {"tags": ["CWE-369"]}}]}},
         "results": [r for r, _ in RUN0]},
        {"tool": {"driver": {"name": "javalint"}}, "results": [java]}]}


@pytest.fixture(scope="module")
def asked(log, tree) -> tuple[list[Question], list[Unjudged]]:
    return sarif_questions(log, tree, RULE_MAP, "是", "否")


def test_the_hand_written_log_is_valid_sarif(log):
    errors = [error.message for error in sarif_schema_validator().iter_errors(log)]
    assert not errors, errors[:3]


def test_every_finding_is_a_question_or_unjudged_in_log_order(asked):
    questions, unjudged = asked
    expected_questions = [(0, i) for i, (_, want) in enumerate(RUN0) if isinstance(want, tuple)] + [(1, 0)]
    assert [q.finding for q in questions] == expected_questions
    assert [(u.finding, u.reason) for u in unjudged] == \
        [((0, i), want) for i, (_, want) in enumerate(RUN0) if isinstance(want, str)]
    assert len(questions) + len(unjudged) == len(RUN0) + 1  # nothing dropped


def test_a_question_is_the_enclosing_function_and_the_subtype_of_its_finding(asked):
    by_finding = {q.finding: q for q in asked[0]}
    for index, (sarif_result, want) in enumerate(RUN0):
        if not isinstance(want, tuple):
            continue
        lines, subtype, how = want
        question = by_finding[(0, index)]
        site = sarif_result["locations"][-1]["physicalLocation"]
        assert question.id == f"run0/result{index}" and question.rule_id == sarif_result["ruleId"]
        assert (question.file, question.start_line, question.end_line) == \
            (site["artifactLocation"]["uri"], *lines)
        assert question.function == {FIRST_ID: "first_id", RATIO: "ratio"}[lines]
        assert (question.subtype, question.subtype_from) == (subtype.name, how)
    java = by_finding[(1, 0)]
    assert (java.id, java.function, java.start_line, java.end_line, java.subtype, java.subtype_from) == \
        ("run1/result0", "at", *AT, "缓冲区溢出", "CWE-125")


def test_a_question_reads_like_a_training_sample(asked):
    by_finding = {q.finding: q for q in asked[0]}
    null, java = by_finding[(0, 0)], by_finding[(1, 0)]
    assert null.record.text == ({"role": "user", "content": prompt("请判断下面的C函数是否存在空指针解引用缺陷。",
                                                                    code(ITEMS_C, FIRST_ID))},)
    assert null.record.assistant is None and null.record.id == null.id and null.record.subtype == "空指针解引用"
    assert java.record.user == prompt("请判断下面的Java方法是否存在缓冲区溢出缺陷。", code(ACCOUNT_JAVA, AT))


def test_the_output_format_is_in_the_models_own_words(log, tree):
    questions, _ = sarif_questions(log, tree, RULE_MAP, "有缺陷", "无缺陷")
    assert questions[0].record.user == prompt("请判断下面的C函数是否存在空指针解引用缺陷。", code(ITEMS_C, FIRST_ID),
                                              "有缺陷", "无缺陷")


def test_two_findings_in_one_function_ask_one_prompt(asked):
    by_finding = {q.finding: q for q in asked[0]}
    keys = {index: by_finding[(0, index)].prompt_key for index in (0, 1, 2, 3)}
    assert keys[0] == keys[1]            # two null-pointer findings in first_id: one prompt
    assert len({keys[0], keys[2], keys[3]}) == 3  # another function; the same function, another subtype
    assert len(keys[0]) == 32 and int(keys[0], 16) >= 0


def test_an_unjudged_finding_keeps_its_rule_file_and_line(asked):
    unjudged = {u.finding: u for u in asked[1]}
    assert unjudged[(0, 7)] == Unjudged((0, 7), "outside the source root", "nullPointer", "../secret.c", 10)
    assert unjudged[(0, 4)] == Unjudged((0, 4), "no subtype: rule knownConditionTrueFalse, no CWE",
                                        "knownConditionTrueFalse", "src/items.c", 8)
    assert unjudged[(0, 14)] == Unjudged((0, 14), "no location", "nullPointer", None, None)


def test_without_a_rule_map_the_shipped_rules_decide(log, tree):
    questions, unjudged = sarif_questions(log, tree, None, "是", "否")
    reasons = {u.finding: u.reason for u in unjudged}
    assert reasons[(0, 3)] == "no subtype: rule myLeak, no CWE"
    uninit = next(q for q in questions if q.finding == (0, 6))
    assert (uninit.subtype, uninit.subtype_from) == ("未初始化变量", "rule table: uninitvar")


# ---------------------------------------------------------------- the cache

def test_a_file_is_read_once_and_a_non_utf8_one_said_once(tree, tmp_path, caplog):
    latin = tmp_path / "latin.c"
    latin.write_bytes((tree / "src" / "latin.c").read_bytes())
    cache = SourceCache()
    with caplog.at_level(logging.WARNING, logger="defect_judge.judge.questions"):
        assert not cache.read(tree / "src" / "items.c", "c").replaced  # UTF-8: nothing to say
        first = cache.read(latin, "c")
        latin.unlink()  # read again, it would fail: the cache answers
        assert cache.read(latin, "c") is first
    assert first.replaced and "\ufffd" in first.text
    assert [r.getMessage() for r in caplog.records] == \
        [f"{latin} is not UTF-8: read with replacement characters (U+FFFD) where its bytes are not"]


def test_a_binary_file_is_remembered_as_none(tree, tmp_path):
    blob = tmp_path / "blob.c"
    blob.write_bytes((tree / "src" / "blob.c").read_bytes())
    cache = SourceCache()
    assert cache.read(blob, "c") is None
    blob.unlink()
    assert cache.read(blob, "c") is None


# ------------------------------------------------------------------ sources

def test_every_function_for_every_subtype_in_file_and_line_order(tree, caplog):
    with caplog.at_level(logging.WARNING, logger="defect_judge.judge.questions"):
        questions, skipped = source_questions([tree / "src"], [NULL, ZERO], "是", "否", root=tree)
    assert [q.id for q in questions] == [
        f"{name}:{line}:{function}#{subtype.key}"
        for name, line, function in (("src/Account.java", 3, "at"), ("src/items.c", 5, "first_id"),
                                     ("src/items.c", 13, "ratio"), ("src/latin.c", 1, "g"))
        for subtype in (NULL, ZERO)]
    assert skipped == ["src/blob.c (binary file)", "src/decls.h (no function)"]
    assert "skipped 2 file(s): src/blob.c (binary file), src/decls.h (no function)" in caplog.text
    ratio_zero = questions[5]
    assert (ratio_zero.file, ratio_zero.function, ratio_zero.start_line, ratio_zero.end_line) == \
        ("src/items.c", "ratio", *RATIO)
    assert ratio_zero.subtype == "除零" and ratio_zero.finding is None and ratio_zero.rule_id is None
    assert ratio_zero.record.user == prompt("请判断下面的C函数是否存在除零缺陷。", code(ITEMS_C, RATIO))
    assert questions[0].record.user.startswith("任务：请判断下面的Java方法是否存在空指针解引用缺陷。")


def test_files_are_named_relative_to_the_root_when_inside_it(tree, monkeypatch):
    monkeypatch.chdir(tree)
    items = tree / "src" / "items.c"
    assert display_path(items, tree) == "src/items.c"
    assert display_path(items, tree / "src") == "items.c"
    assert display_path(Path("src/items.c"), tree) == "src/items.c"  # relative to the working folder
    assert display_path(items, tree.parent / "elsewhere") == items.as_posix()
    assert display_path(Path("src/items.c"), None) == "src/items.c"
    questions, _ = source_questions(["src/items.c"], [NULL], "是", "否")
    assert [q.id for q in questions] == ["src/items.c:5:first_id#null_pointer_dereference",
                                         "src/items.c:13:ratio#null_pointer_dereference"]


def test_files_without_a_function_ask_nothing(tree):
    questions, skipped = source_questions([tree / "src" / "decls.h", tree / "src" / "blob.c"], [NULL], "是", "否",
                                          root=tree)
    assert questions == [] and skipped == ["src/blob.c (binary file)", "src/decls.h (no function)"]


# -------------------------------------------------------------------- input

def raw_sample(event: str, output: bool = False) -> dict:
    sample = {"instruction": [{"subtype": "除零"}],
              "input": {"task": "请判断下面的代码是否存在除零缺陷。", "event": event, "output_format": "判断:是/否"}}
    return sample | ({"output": {"judgement": "是", "reason": "除数为零。"}} if output else {})


def test_chat_records_without_answers_are_questions(tmp_path):
    rows = make_records(3)
    rows[1]["pair_id"] = "twins-1"
    for row in rows:
        row["text"] = row["text"][:-1]
    path = write_records(tmp_path / "new.jsonl", rows)
    questions = input_questions(path)
    assert [(q.id, q.subtype, q.file) for q in questions] == [(r["id"], r["subtype"], path.as_posix()) for r in rows]
    assert [list(q.record.text) for q in questions] == [r["text"] for r in rows]
    assert questions[1].record.pair_id == "twins-1" and questions[0].record.pair_id is None
    assert all(q.function is None and q.finding is None for q in questions)


def test_an_answer_given_is_not_read(tmp_path, caplog):
    rows = make_records(2)
    path = write_records(tmp_path / "labelled.jsonl", rows)
    with caplog.at_level(logging.INFO, logger="defect_judge.judge.questions"):
        questions = input_questions(path)
    assert [q.record.assistant for q in questions] == [None, None]
    assert [q.record.user for q in questions] == [r["text"][0]["content"] for r in rows]
    assert "2 of 2 samples carry an answer: the judge ignores it" in caplog.text


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_raw_samples_are_questions(tmp_path, suffix):
    samples = [raw_sample("int f(int a) { return a / 0; }"), raw_sample("int g(void) { return 1; }", output=True)]
    path = tmp_path / f"new{suffix}"
    text = json.dumps(samples, ensure_ascii=False) if suffix == ".json" else \
        "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
    path.write_text(text, encoding="utf-8")
    questions = input_questions(path)
    assert [(q.id, q.subtype) for q in questions] == [(f"new{suffix}#0", "除零"), (f"new{suffix}#1", "除零")]
    assert questions[0].record.text == ({"role": "user", "content": "任务：请判断下面的代码是否存在除零缺陷。\n\n"
                                         "事件：\nint f(int a) { return a / 0; }\n\n输出格式：\n判断:是/否"},)
    assert questions[1].record.assistant is None


def test_refusals_name_the_file_and_field(tmp_path):
    missing = tmp_path / "missing.jsonl"
    input_refusal(lambda: input_questions(missing), str(missing), "field 'input'", "input file not found")
    input_refusal(lambda: input_questions(tmp_path), str(tmp_path), "field 'input'", "not a file")
    notes = tmp_path / "new.txt"
    notes.write_text("{}", encoding="utf-8")
    input_refusal(lambda: input_questions(notes), str(notes), "field 'input'", "must be a .json or .jsonl file")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    input_refusal(lambda: input_questions(empty), str(empty), "empty file")
    no_event = tmp_path / "no_event.json"
    sample = raw_sample("x")
    del sample["input"]["event"]
    no_event.write_text(json.dumps([raw_sample("y"), sample], ensure_ascii=False), encoding="utf-8")
    input_refusal(lambda: input_questions(no_event), str(no_event), "sample 1", "field 'input.event'")


def test_a_file_mixing_chat_records_and_raw_samples_is_refused(tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps(raw_sample("int f(void);"), ensure_ascii=False) + "\n"
                     + json.dumps(make_records(1)[0], ensure_ascii=False) + "\n", encoding="utf-8")
    input_refusal(lambda: input_questions(mixed), f"{mixed}:2", "sample 1", "field 'instruction'")


def test_a_bad_chat_record_names_its_line(tmp_path):
    rows = make_records(2)
    rows[1]["text"] = [{"role": "assistant", "content": "判断:是"}, *rows[1]["text"][:1]]
    path = write_records(tmp_path / "bad.jsonl", rows)
    input_refusal(lambda: input_questions(path), f"{path}:2", "field 'text'", "roles must be")
