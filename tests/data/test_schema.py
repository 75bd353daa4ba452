"""defect_judge/data/schema.py called directly: a raw sample checked field by field (a question without its output,
the optional pair_id, labels stripped or refused) and made a chat record; the samples of a raw file with their
index and line; chat records checked line by line (ids, roles, a question's lone user turn) and read from JSONL;
one warning for the labels whose whitespace was stripped. Every refusal is one line naming file, line or sample, and
field. (The converter's own refusals of whole files: tests/scripts/test_convert_and_split.py.)"""
from __future__ import annotations

import json
import logging

import pytest

from defect_judge.data.schema import (RawSample, Record, clean_label, raw_objects, raw_to_record, read_data_text,
                                      read_records, report_stripped, sample_id, validate_raw_sample, validate_record)
from defect_judge.templates import format_assistant, format_user
from helpers import OUTPUT_FORMAT, TASK, assert_input_error, make_records, write_records

EVENT = "int f(int *p) {\n    return *p;\n}"


def raw(subtype="空指针解引用", judgement="是", **top) -> dict:
    sample = {"instruction": [{"subtype": subtype}],
              "input": {"task": TASK, "event": EVENT, "output_format": OUTPUT_FORMAT},
              "output": {"judgement": judgement, "reason": "参数 p 未判空即解引用。"}}
    return sample | top


def check(obj, **kwargs) -> RawSample:
    return validate_raw_sample(obj, path="raw/a.json", sample=3, **kwargs)


# ------------------------------------------------------------------ raw samples

def test_a_raw_sample_becomes_the_documents_chat_record():
    sample = check(raw(pair_id="twin-1"))
    assert sample == RawSample("空指针解引用", TASK, EVENT, OUTPUT_FORMAT, "是", "参数 p 未判空即解引用。", "twin-1")
    record = raw_to_record(sample, sample_id("sub/a.json", 3))
    assert record.id == "sub/a.json#3" and record.pair_id == "twin-1" and record.subtype == "空指针解引用"
    assert record.user == format_user(TASK, EVENT, OUTPUT_FORMAT)
    assert record.assistant == format_assistant("是", "参数 p 未判空即解引用。") and record.judgement == "是"
    assert record.prompt_messages == [{"role": "user", "content": record.user}]
    assert list(record.to_json()) == ["id", "subtype", "pair_id", "text"]
    assert "pair_id" not in raw_to_record(check(raw()), "a.json#0").to_json()
    copies = record.messages
    copies[0]["content"] = "changed"
    assert record.user != "changed"  # the record hands out copies of its turns


def test_a_question_may_come_without_its_output():
    question = raw()
    del question["output"]
    assert_input_error(lambda: check(question), "raw/a.json", "sample 3", "field 'output'", "required field is missing")
    sample = check(question, require_output=False)
    assert sample.judgement is None and sample.reason is None
    record = raw_to_record(sample, "q.json#0")
    assert [m["role"] for m in record.text] == ["user"] and record.assistant is None and record.judgement is None
    # an output that is there is checked all the same
    half = raw() | {"output": {"judgement": "是"}}
    assert_input_error(lambda: check(half, require_output=False), "field 'output.reason'", "missing")


@pytest.mark.parametrize("obj, field, words", [
    (["not", "an", "object"], None, "a sample must be a JSON object, got list"),
    (raw() | {"instruction": ["空指针"]}, "instruction[0]", "must be an object"),
    (raw() | {"instruction": [{"subtype": 3}]}, "instruction[0].subtype", "must be a string, got int"),
    (raw() | {"input": {"task": TASK, "event": EVENT, "output_format": None}}, "input.output_format",
     "must be a string, got NoneType"),
    (raw() | {"output": ["是"]}, "output", "must be an object, got list"),
    (raw(pair_id=""), "pair_id", "must be a non-empty string, got ''"),
    (raw(pair_id=7), "pair_id", "must be a non-empty string, got 7"),
    (raw(judgement="是\x00"), "output.judgement", "without control characters, got U+0000 inside '是\\x00'"),
])
def test_a_bad_raw_sample_is_one_line_naming_file_sample_line_and_field(obj, field, words):
    message = assert_input_error(lambda: validate_raw_sample(obj, path="raw/a.jsonl", sample=3, line=7),
                                 "raw/a.jsonl:7", "sample 3", words)
    assert (f"field '{field}'" in message) == (field is not None), message


def test_labels_lose_their_surrounding_whitespace_and_say_which():
    padded = check(raw(subtype=" 空指针解引用\n", judgement="是 "))
    assert padded.subtype == "空指针解引用" and padded.judgement == "是"
    assert padded.stripped == ("instruction[0].subtype", "output.judgement")
    assert padded == check(raw())  # one class, one subtype: what was stripped is reported, not compared
    assert check(raw(pair_id=None)).pair_id is None and check(raw()).stripped == ()
    assert check(raw(judgement=" 是")).stripped == ("output.judgement",)
    assert clean_label("\t内存泄漏 ", field="subtype", where={}) == "内存泄漏"
    assert_input_error(lambda: clean_label("内存\t泄漏", field="subtype", where={"path": "t.jsonl", "line": 2}),
                       "t.jsonl:2", "field 'subtype'", "U+0009")


def test_stripped_labels_are_said_once_for_a_whole_file(caplog):
    samples = [check(raw(subtype="A ")), check(raw(subtype="A\n", judgement=" 否")), check(raw(subtype="A"))]
    with caplog.at_level(logging.WARNING, logger="defect_judge.data.schema"):
        assert report_stripped(samples, "raw/") == 3
        assert report_stripped([check(raw())], "clean/") == 0
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and notes[0].startswith("raw/: stripped the whitespace around ")
    assert "instruction[0].subtype of 2 sample(s), output.judgement of 1 sample(s)" in notes[0]


# ------------------------------------------------------------------ raw files

def test_the_samples_of_a_raw_file_with_their_index_and_line(tmp_path):
    lines = tmp_path / "part.JSONL"  # the suffix in any case
    lines.write_text("\n".join([json.dumps(raw()), "", "   ", json.dumps(raw(judgement="否")), "[1]"]) + "\n",
                     encoding="utf-8")
    assert [(index, line, obj) for index, line, obj in raw_objects(lines)] == [
        (0, 1, raw()), (1, 4, raw(judgement="否")), (2, 5, [1])]  # blank lines skipped; a bad sample is checked later
    one = tmp_path / "one.json"
    one.write_bytes(b"\xef\xbb\xbf" + json.dumps(raw(), ensure_ascii=False).encode("utf-8"))  # a BOM is fine
    assert list(raw_objects(one)) == [(0, None, raw())]
    many = tmp_path / "many.json"
    many.write_text(json.dumps([raw(), raw(judgement="否")]), encoding="utf-8")
    assert [(i, line) for i, line, _ in raw_objects(many)] == [(0, None), (1, None)]


@pytest.mark.parametrize("name, content, fragments", [
    ("lines.jsonl", b'{"instruction": []}\n\n{"instruction": \n', ["lines.jsonl:3", "invalid JSON", "(column"]),
    ("pretty.json", b'[\n  {"a": 1},\n  {"a": 2,}\n]', ["pretty.json:3", "invalid JSON"]),
    ("gbk.json", '{"judgement": "是"}'.encode("gbk"), ["gbk.json", "not UTF-8 text", "at byte 15", "iconv"]),
    ("null.json", b"null", ["null.json", "the top level must be a sample object or a list of them, got NoneType"]),
])
def test_a_bad_raw_file_is_one_line_naming_the_file_and_line(tmp_path, name, content, fragments):
    path = tmp_path / name
    path.write_bytes(content)
    assert_input_error(lambda: list(raw_objects(path)), str(tmp_path), *fragments)


def test_a_data_file_is_utf8_text_that_is_not_empty(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes("\ufeff[]".encode("utf-8"))
    assert read_data_text(path) == "[]"
    path.write_bytes(b" \n\t\n")
    assert_input_error(lambda: read_data_text(path), str(path), "empty file")


# ------------------------------------------------------------------ chat records

def record_row(**changes) -> dict:
    return make_records(1)[0] | changes


def test_a_chat_record_is_read_as_written():
    row = record_row(pair_id="p1")
    record = validate_record(row, path="d/test.jsonl", line=4)
    assert record.to_json() == row and record.line == 4 and record.stripped == ()
    assert record == Record(row["id"], row["subtype"], tuple(row["text"]), "p1")  # the line is not compared
    # The document's original format carries no id: the file and line stand in; a number is taken as text.
    assert validate_record({k: v for k, v in row.items() if k != "id"}, path="d/test.jsonl", line=4).id == "test.jsonl:4"
    assert validate_record(row | {"id": 17}, path="d/test.jsonl", line=4).id == "17"


def test_roles_and_a_questions_lone_user_turn():
    user, assistant = record_row()["text"]
    system = {"role": "system", "content": "你是代码审查专家。"}
    with_system = validate_record(record_row(text=[system, user, assistant]), path="t.jsonl", line=1)
    assert with_system.prompt_messages == [system, user] and with_system.judgement == "是"
    question = record_row(text=[system, user])
    assert_input_error(lambda: validate_record(question, path="t.jsonl", line=2), "t.jsonl:2", "field 'text'",
                       "has no assistant turn (the reference answer)")
    assert validate_record(question, path="t.jsonl", line=2, require_assistant=False).assistant is None


@pytest.mark.parametrize("changes, field, words", [
    ({"id": ""}, "id", "must be a non-empty string"),
    ({"id": True}, "id", "must be a non-empty string"),
    ({"id": ["a"]}, "id", "must be a non-empty string"),
    ({"subtype": None}, "subtype", "required non-empty string"),
    ({"subtype": "  "}, "subtype", "must be a non-empty string"),
    ({"subtype": "A\x7f"}, "subtype", "U+007F"),
    ({"text": []}, "text", "must be a non-empty list of {role, content} messages"),
    ({"text": "判断:是"}, "text", "must be a non-empty list"),
    ({"text": [{"role": "user", "content": "q"}, {"role": "assistant"}]}, "text[1]",
     "must be an object with string 'role' and 'content'"),
    ({"text": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}, "text",
     "roles must be [system,] user, assistant in that order, got ['assistant', 'user']"),
    ({"text": [{"role": "user", "content": "q"}] * 2}, "text", "got ['user', 'user']"),
])
def test_a_bad_chat_record_is_one_line_naming_file_line_and_field(changes, field, words):
    assert_input_error(lambda: validate_record(record_row(**changes), path="d/test.jsonl", line=9),
                       "d/test.jsonl:9", f"field '{field}'", words)
    assert_input_error(lambda: validate_record([record_row()], path="d/test.jsonl", line=9),
                       "d/test.jsonl:9", "a record must be a JSON object, got list")


def test_a_bad_pair_id_names_the_sample_too():
    assert_input_error(lambda: validate_record(record_row(id="x#1", pair_id=["p"]), path="t.jsonl", line=2),
                       "t.jsonl:2", "sample x#1", "field 'pair_id'", "must be a non-empty string, got ['p']")


def test_a_padded_judgement_is_counted_as_stripped():
    row = record_row(subtype="内存泄漏 ")
    row["text"][-1]["content"] = row["text"][-1]["content"].replace("判断:是", "判断: 是 ")
    record = validate_record(row, path="t.jsonl", line=1)
    assert record.subtype == "内存泄漏" and record.judgement == "是"
    assert record.stripped == ("subtype", "judgement")
    plain = record_row()
    plain["text"][-1]["content"] = plain["text"][-1]["content"].replace("判断:是", "判断:是\n")  # a line break ends it
    assert validate_record(plain, path="t.jsonl", line=1).stripped == ()


# ------------------------------------------------------------------ chat JSONL files

def test_a_chat_file_is_read_with_the_line_of_each_record(tmp_path):
    rows = make_records(3)
    path = tmp_path / "test.jsonl"
    path.write_text("\ufeff" + json.dumps(rows[0], ensure_ascii=False) + "\n\n"
                    + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[1:]), encoding="utf-8")
    records = read_records(path)
    assert [r.to_json() for r in records] == rows and [r.line for r in records] == [1, 3, 4]


@pytest.mark.parametrize("write, fragments", [
    (lambda path: None, ["file not found"]),
    (lambda path: path.write_text("\n  \n", encoding="utf-8"), ["no records: the file is empty"]),
    (lambda path: path.write_bytes(json.dumps(make_records(1)[0], ensure_ascii=False).encode("gbk") + b"\n"),
     ["not UTF-8 text"]),
    (lambda path: path.write_text(json.dumps(make_records(1)[0]) + "\n{oops\n", encoding="utf-8"),
     ["test.jsonl:2", "invalid JSON"]),
    (lambda path: write_records(path, make_records(2) + make_records(1)),
     ["test.jsonl:3", "field 'id'", "duplicate id 'sample_000.json#0' (first on line 1)"]),
])
def test_a_bad_chat_file_is_one_line_naming_it(tmp_path, write, fragments):
    path = tmp_path / "test.jsonl"
    write(path)
    assert_input_error(lambda: read_records(path), str(path), *fragments)
