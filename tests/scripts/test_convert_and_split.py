"""dataset/convert_and_split.py: conversion, validation errors, and the split files it writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from defect_judge import load_script
from defect_judge.errors import InputError
from defect_judge.data.schema import read_records
from defect_judge.templates import format_assistant, format_user
from helpers import CONVERT, REPO_ROOT, run_script

SCRIPT = CONVERT
cas = load_script("dataset/convert_and_split.py")


def raw(subtype="空指针解引用", event="int f(int *p) {\n    return *p;\n}", judgement="是", **overrides):
    sample = {"instruction": [{"subtype": subtype}],
              "input": {"task": f"请判断下面的C函数是否存在{subtype}缺陷。", "event": event,
                        "output_format": "判断:是/否\n\n原因：<简要说明>"},
              "output": {"judgement": judgement, "reason": "参数 p 未判空即解引用。"}}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = sample
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return sample


DELETE = object()


def balanced_corpus(folder: Path, subtypes=("空指针解引用", "内存泄漏", "除零"), per_judgement=5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s_index, subtype in enumerate(subtypes):
        samples = [raw(subtype, f"int f{s_index}_{j}_{i}(void) {{ return {i}; }}", j)
                   for j in ("是", "否") for i in range(per_judgement)]
        (folder / f"part{s_index}.json").write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    return folder


def convert(tmp_path: Path, input_dir: Path, *extra: str) -> dict:
    out = tmp_path / "out"
    argv = ["--input_dir", str(input_dir), "--converted_file", str(out / "converted.jsonl"),
            "--train_file", str(out / "train.jsonl"), "--test_file", str(out / "test.jsonl"), *extra]
    cas.main(argv)
    return {"converted": out / "converted.jsonl", "train": out / "train.jsonl", "test": out / "test.jsonl",
            "stats": out / "split_stats.json", "out": out}


# ---------------------------------------------------------------- conversion

def test_converts_with_the_documents_templates_and_stable_ids(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    sample = raw(event="  int g(void) {\n\treturn 0;\n}\n")  # whitespace must not be stripped
    (folder / "a.json").write_text(json.dumps(sample, ensure_ascii=False), encoding="utf-8")
    (folder / "sub").mkdir()
    (folder / "sub" / "b.jsonl").write_text(
        "\n".join(json.dumps(raw(event=f"x{i}", judgement="否"), ensure_ascii=False) for i in range(3)) + "\n",
        encoding="utf-8")
    files = convert(tmp_path, folder)
    lines = files["converted"].read_text(encoding="utf-8").splitlines()
    assert "空指针解引用" in lines[0]  # ensure_ascii=False
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == ["a.json#0", "sub/b.jsonl#0", "sub/b.jsonl#1", "sub/b.jsonl#2"]
    first = records[0]
    assert set(first) == {"id", "subtype", "text"}
    assert first["subtype"] == "空指针解引用"
    assert first["text"] == [
        {"role": "user", "content": format_user(sample["input"]["task"], sample["input"]["event"],
                                                sample["input"]["output_format"])},
        {"role": "assistant", "content": format_assistant("是", "参数 p 未判空即解引用。")},
    ]
    assert first["text"][0]["content"] == ("任务：请判断下面的C函数是否存在空指针解引用缺陷。\n\n事件：\n  int g(void) {\n\treturn 0;\n}\n"
                                           "\n\n输出格式：\n判断:是/否\n\n原因：<简要说明>")
    # same input, same output: ids and bytes are stable across runs
    before = {k: files[k].read_bytes() for k in ("converted", "train", "test")}
    convert(tmp_path, folder)
    assert before == {k: files[k].read_bytes() for k in ("converted", "train", "test")}


def test_bom_and_single_object_files_are_accepted(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "bom.json").write_bytes("\ufeff".encode() + json.dumps(raw(), ensure_ascii=False).encode("utf-8"))
    (folder / "list.json").write_text(json.dumps([raw(event="e1", judgement="否"), raw(event="e2")], ensure_ascii=False),
                                      encoding="utf-8")
    files = convert(tmp_path, folder)
    assert len(read_records(files["converted"])) == 3


# ---------------------------------------------------------- validation errors

BAD_SAMPLES = [
    ("instruction", DELETE, "instruction", "missing"),
    ("instruction", [], "instruction", "non-empty list"),
    ("instruction", "空指针", "instruction", "non-empty list"),
    ("instruction", [{}], "instruction[0].subtype", "missing"),
    ("instruction", [{"subtype": ""}], "instruction[0].subtype", "empty"),
    ("input", DELETE, "input", "missing"),
    ("input", "text", "input", "must be an object"),
    ("output", DELETE, "output", "missing"),
    ("input.task", DELETE, "input.task", "missing"),
    ("input.event", DELETE, "input.event", "missing"),
    ("input.output_format", DELETE, "input.output_format", "missing"),
    ("output.judgement", DELETE, "output.judgement", "missing"),
    ("output.reason", DELETE, "output.reason", "missing"),
    ("input.event", "   ", "input.event", "empty"),
    ("input.event", 42, "input.event", "must be a string, got int"),
    ("output.judgement", ["是"], "output.judgement", "must be a string, got list"),
    ("output.judgement", "是\n否", "output.judgement", "single line"),
]


@pytest.mark.parametrize("dotted,value,field,words", BAD_SAMPLES, ids=[f"{b[0]}-{b[3]}" for b in BAD_SAMPLES])
def test_bad_sample_names_file_sample_and_field(tmp_path, dotted, value, field, words):
    folder = tmp_path / "raw"
    folder.mkdir()
    samples = [raw(event="ok"), raw(event="bad", **{dotted: value})]
    path = folder / "data.json"
    path.write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        convert(tmp_path, folder)
    message = str(caught.value)
    assert str(path) in message and "sample 1" in message and f"field '{field}'" in message and words in message
    assert not (tmp_path / "out").exists()  # nothing written


BAD_FILES = [
    ("broken.json", b'{"instruction": [', "invalid JSON", ":1"),
    ("empty.json", b"", "empty file", None),
    ("blank.json", b"  \n", "empty file", None),
    ("number.json", b"42", "top level must be", None),
    ("string.json", b'"sample"', "top level must be", None),
    ("emptylist.json", b"[]", "no samples", None),
    ("gbk.json", json.dumps(raw(), ensure_ascii=False).encode("gbk"), "not UTF-8", None),
    ("lines.jsonl", (json.dumps(raw(), ensure_ascii=False) + "\n{oops\n").encode(), "invalid JSON", ":2"),
]


@pytest.mark.parametrize("name,content,words,line", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_names_the_file(tmp_path, name, content, words, line):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / name).write_bytes(content)
    with pytest.raises(InputError) as caught:
        convert(tmp_path, folder)
    assert str(folder / name) in str(caught.value) and words in str(caught.value)
    if line:
        assert f"{name}{line}" in str(caught.value)


def test_invalid_test_ratio_and_missing_folder(tmp_path):
    folder = balanced_corpus(tmp_path / "raw")
    for ratio in ("0", "1", "-0.1", "1.5"):
        with pytest.raises(InputError, match="test_ratio"):
            convert(tmp_path, folder, "--test_ratio", ratio)
    with pytest.raises(InputError, match="does not exist"):
        convert(tmp_path, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no \\*.json"):
        convert(tmp_path, tmp_path / "empty")


def test_conflicting_duplicates_are_an_error(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps([raw(event="same"), raw(event="same", judgement="否")],
                                              ensure_ascii=False), encoding="utf-8")
    with pytest.raises(InputError, match="conflicting duplicates: samples .*/a.json#0, .*/a.json#1"):
        convert(tmp_path, folder)


def test_skip_invalid_writes_rejects_with_reasons(tmp_path):
    folder = balanced_corpus(tmp_path / "raw")
    (folder / "bad.json").write_text(json.dumps([raw(event="fine one"), raw(**{"input.task": 3})]), encoding="utf-8")
    (folder / "gbk.json").write_bytes(json.dumps(raw(event="中文"), ensure_ascii=False).encode("gbk"))
    files = convert(tmp_path, folder, "--skip_invalid")
    rejects = [json.loads(l) for l in (files["out"] / "converted.rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {(Path(r["file"]).name, r["sample"], r["field"]) for r in rejects} == {("bad.json", 1, "input.task"),
                                                                                ("gbk.json", None, None)}
    assert json.loads(files["stats"].read_text(encoding="utf-8"))["rejected"] == 2
    assert len(read_records(files["converted"])) == 31


def test_script_exit_code_and_message_without_traceback(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "x.json").write_text(json.dumps(raw(**{"output.reason": DELETE})), encoding="utf-8")
    result = run_script(SCRIPT, "--input_dir", folder, "--converted_file", tmp_path / "c.jsonl",
                        "--train_file", tmp_path / "t.jsonl", "--test_file", tmp_path / "s.jsonl")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"convert_and_split.py: error: {folder / 'x.json'}, sample 0, field 'output.reason'" in result.stderr
    assert not list(tmp_path.glob("*.jsonl"))
    debug = run_script(SCRIPT, "--input_dir", folder, "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_help_lists_every_constant():
    result = run_script(SCRIPT, "--help", check=True)
    for name in ("--input_dir", "--converted_file", "--train_file", "--dev_file", "--test_file", "--test_ratio",
                 "--dev_ratio", "--seed", "--skip_invalid"):
        assert name in result.stdout


# ------------------------------------------------------ the split files (the algorithm: test_splitting.py)

def test_dev_split_files_stats_and_table(tmp_path, capsys):
    folder = balanced_corpus(tmp_path / "raw", per_judgement=10)
    files = convert(tmp_path, folder, "--dev_ratio", "0.2")
    dev_file = files["out"] / "dev.jsonl"  # beside train_file: --train_file was moved, --dev_file was not
    train, dev, test = (read_records(files["train"]), read_records(dev_file), read_records(files["test"]))
    assert (len(train), len(dev), len(test)) == (36, 12, 12)
    for subtype in ("空指针解引用", "内存泄漏", "除零"):
        assert {r.judgement for r in dev if r.subtype == subtype} == {"是", "否"}
    stats = json.loads(files["stats"].read_text(encoding="utf-8"))
    assert stats["splits"] == ["train", "dev", "test"] and stats["dev"] == 12 and stats["dev_ratio"] == 0.2
    assert stats["subtypes"]["除零"]["judgements"]["是"] == {"train": 6, "dev": 2, "test": 2}
    table = capsys.readouterr().out
    assert "dev" in table.splitlines()[0] and "36/12/12" not in table and "18/6/6" in table
    # an explicit --dev_file wins
    elsewhere = tmp_path / "elsewhere" / "my_dev.jsonl"
    convert(tmp_path, folder, "--dev_file", str(elsewhere))
    assert elsewhere.is_file()


def test_dev_ratio_zero_keeps_the_documents_two_files(tmp_path):
    folder = balanced_corpus(tmp_path / "raw")
    files = convert(tmp_path, folder)
    assert (files["out"] / "dev.jsonl").is_file()
    earlier_dev = (files["out"] / "dev.jsonl").read_bytes()
    files = convert(tmp_path, folder, "--dev_ratio", "0")
    # never deleted (the user did not ask to write it); the run warns that it is stale (test_split_refusals.py)
    assert (files["out"] / "dev.jsonl").read_bytes() == earlier_dev
    stats = json.loads(files["stats"].read_text(encoding="utf-8"))
    assert stats["splits"] == ["train", "test"] and "dev" not in stats
    assert len(read_records(files["train"])) + len(read_records(files["test"])) == 30


@pytest.mark.parametrize("ratios,words", [
    (("0.2", "-0.1"), "dev_ratio must be at least 0, got -0.1"),
    (("0.5", "0.5"), "--test_ratio 0.5 plus --dev_ratio 0.5 is 1, which leaves nothing to train on"),
    (("0.7", "0.4"), "--test_ratio 0.7 plus --dev_ratio 0.4 is 1.1, which leaves nothing to train on"),
])
def test_invalid_dev_ratio(tmp_path, ratios, words):
    folder = balanced_corpus(tmp_path / "raw")
    with pytest.raises(InputError) as caught:
        convert(tmp_path, folder, "--test_ratio", ratios[0], "--dev_ratio", ratios[1])
    assert words in str(caught.value)
    assert not (tmp_path / "out").exists()


def twin_corpus(folder: Path, pairs: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for k in range(pairs):
        for judgement, body in (("是", "return *p;"), ("否", "return p ? *p : 0;")):
            samples.append(raw(event=f"int f{k}(int *p) {{ {body} }}", judgement=judgement,
                               **{"pair_id": f"twin-{k}"}))
    (folder / "twins.json").write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    return folder


def test_pair_id_is_carried_into_the_chat_records(tmp_path):
    files = convert(tmp_path, twin_corpus(tmp_path / "raw"))
    rows = [json.loads(line) for line in files["converted"].read_text(encoding="utf-8").splitlines()]
    assert [r["pair_id"] for r in rows] == [f"twin-{k}" for k in range(6) for _ in range(2)]
    assert list(rows[0]) == ["id", "subtype", "pair_id", "text"]
    assert {r.pair_id for r in read_records(files["train"])} & {r.pair_id for r in read_records(files["test"])} == set()
    # raw data without pair_id: records without it, exactly as before
    plain = convert(tmp_path / "plain", balanced_corpus(tmp_path / "plain-raw"))
    assert all("pair_id" not in json.loads(line) for line in plain["converted"].read_text().splitlines())


@pytest.mark.parametrize("change,words", [
    ({1: {"instruction": [{"subtype": "内存泄漏"}]}}, "different subtypes (内存泄漏 / 空指针解引用)"),
    ({1: {"output": {"judgement": "是", "reason": "r"}}}, "the same judgement (是)"),
    ({2: {"pair_id": "twin-0", "output": {"judgement": "是", "reason": "r"}}}, "2 samples are defective (是)"),
    ({0: {"pair_id": 7}}, "field 'pair_id': must be a non-empty string, got 7"),
])
def test_bad_pairs_are_one_clear_error_naming_file_sample_and_field(tmp_path, change, words):
    folder = twin_corpus(tmp_path / "raw")  # enough left to split once --skip_invalid drops the bad pair
    samples = json.loads((folder / "twins.json").read_text(encoding="utf-8"))
    for index, fields in change.items():
        samples[index].update(fields)
    (folder / "twins.json").write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        convert(tmp_path, folder)
    message = str(caught.value)
    assert words in message and str(folder / "twins.json") in message and "sample" in message
    assert "pair_id" in message
    # --skip_invalid drops the whole pair and lists why
    if "non-empty string" not in words:
        files = convert(tmp_path, folder, "--skip_invalid", "true")
        rejects = files["converted"].with_name("converted.rejects.jsonl").read_text(encoding="utf-8")
        rejected = [json.loads(line) for line in rejects.splitlines()]
        assert {r["field"] for r in rejected} == {"pair_id"} and all("twin-0" in r["error"] for r in rejected)
        assert len(rejected) + len(read_records(files["converted"])) == len(samples)  # nothing silently dropped


def test_single_sample_subtype_goes_to_test_with_warning(tmp_path, caplog):
    folder = balanced_corpus(tmp_path / "raw")
    (folder / "lonely.json").write_text(json.dumps(raw("未初始化变量", event="int x; return x;")), encoding="utf-8")
    files = convert(tmp_path, folder)
    assert any(r.subtype == "未初始化变量" for r in read_records(files["test"]))
    assert "subtype '未初始化变量' has 1 sample(s), none in train (test 1): training has none of it" in caplog.text


# ----------------------------------------------------------- shipped data

def test_end_to_end_on_the_shipped_data(shipped_split, tmp_path):
    converted = read_records(shipped_split["converted_file"])
    train = read_records(shipped_split["train_file"])
    dev = read_records(shipped_split["dev_file"])
    test = read_records(shipped_split["test_file"])
    assert len(converted) >= 300 and len(train) + len(dev) + len(test) == len(converted)
    subtypes = {r.subtype for r in converted}
    assert len(subtypes) >= 6 and {r.subtype for r in test} == subtypes == {r.subtype for r in dev}
    for subtype in subtypes:
        assert {r.judgement for r in test if r.subtype == subtype} == {"是", "否"}
        assert {r.judgement for r in dev if r.subtype == subtype} == {"是", "否"}
    assert 0.15 <= len(test) / len(converted) <= 0.25 and 0.05 <= len(dev) / len(converted) <= 0.15
    stats = json.loads(shipped_split["stats"].read_text(encoding="utf-8"))
    assert stats["total"] == len(converted) and stats["test"] == len(test) and stats["dev"] == len(dev)
    assert set(stats["subtypes"]) == subtypes
    # the dev split comes out of the training share: the test split is the document's two-way one
    two_way = convert(tmp_path, REPO_ROOT / "dataset" / "output", "--dev_ratio", "0")
    assert [r.id for r in read_records(two_way["test"])] == [r.id for r in test]


def test_runs_from_its_own_folder_with_document_defaults(tmp_path):
    """`cd dataset && python convert_and_split.py` must find ./dataset/output relative to the repo root."""
    result = run_script("convert_and_split.py", "--converted_file", tmp_path / "c.jsonl", "--train_file",
                        tmp_path / "train.jsonl", "--test_file", tmp_path / "test.jsonl", cwd=REPO_ROOT / "dataset")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "split_stats.json").is_file()
