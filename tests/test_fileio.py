"""defect_judge/fileio.py on real files: an atomic write leaves the old file or the complete new one (a failed
write, a real one over the file-size limit included, leaves no temp file and names the file), the JSON and JSONL
writers' format, an output folder that is a file, read_json_object's one-line errors, a file's sha256 and whether
two paths name one folder."""
from __future__ import annotations

import errno
import json
import os
import resource
import signal
import stat

import pytest

from defect_judge.errors import InputError
from defect_judge.fileio import (atomic_open, check_output_dir, file_sha256, read_json_object, same_folder,
                                 write_json_atomic, write_jsonl_atomic, write_text_atomic)
from helpers import assert_input_error


def leftovers(folder) -> list[str]:
    """The temp files an atomic write left in ``folder`` (``.{name}.*.tmp``)."""
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


# ------------------------------------------------------------------ atomic writes

def test_an_atomic_write_replaces_the_file_whole_and_makes_its_folder(tmp_path):
    path = tmp_path / "new" / "deeper" / "out.txt"
    write_text_atomic(path, "first\n")
    assert path.read_text(encoding="utf-8") == "first\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp's 0600 would hide it from the group
    with atomic_open(path) as handle:
        handle.write("sec")
        assert path.read_text(encoding="utf-8") == "first\n"  # the old file until the new one is complete
        handle.write("ond\n")
    assert path.read_text(encoding="utf-8") == "second\n" and leftovers(path.parent) == []
    with atomic_open(tmp_path / "bytes.bin", "wb") as handle:
        handle.write(b"\x00\xff")
    assert (tmp_path / "bytes.bin").read_bytes() == b"\x00\xff"


def test_an_error_while_writing_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "split.jsonl"
    path.write_text("the old split\n", encoding="utf-8")
    with pytest.raises(ValueError, match="a row that cannot be written"):
        with atomic_open(path) as handle:
            handle.write("half a new split\n")
            raise ValueError("a row that cannot be written")
    assert path.read_text(encoding="utf-8") == "the old split\n" and leftovers(tmp_path) == []
    # A generator that fails half-way through the rows: the same.
    def rows():
        yield {"id": 1}
        raise RuntimeError("the source broke")
    with pytest.raises(RuntimeError, match="the source broke"):
        write_jsonl_atomic(path, rows())
    assert path.read_text(encoding="utf-8") == "the old split\n" and leftovers(tmp_path) == []


def test_a_write_that_fails_on_the_file_system_names_the_file(tmp_path):
    """A real failed write (EFBIG past the process's file-size limit) names no file; atomic_open says which one it
    was writing, and leaves the old file."""
    path = tmp_path / "results.json"
    path.write_text("{}", encoding="utf-8")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel's signal ends the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError) as raised:
            write_text_atomic(path, "x" * 100_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert raised.value.errno == errno.EFBIG and raised.value.filename == str(path)
    assert path.read_text(encoding="utf-8") == "{}" and leftovers(tmp_path) == []


def test_json_and_jsonl_writers_keep_chinese_as_characters(tmp_path):
    document = {"subtype": "空指针解引用", "scores": [0.5, 1], "nested": {"ok": True}}
    write_json_atomic(tmp_path / "doc.json", document)
    text = (tmp_path / "doc.json").read_text(encoding="utf-8")
    assert "空指针解引用" in text and text.endswith("}\n") and '\n  "scores": [' in text  # indent 2, one final newline
    assert json.loads(text) == document
    rows = ({"id": f"样本{i}", "n": i} for i in range(3))  # any iterable, a generator included
    assert write_jsonl_atomic(tmp_path / "rows.jsonl", rows) == 3
    lines = (tmp_path / "rows.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines == ['{"id": "样本0", "n": 0}', '{"id": "样本1", "n": 1}', '{"id": "样本2", "n": 2}']
    assert write_jsonl_atomic(tmp_path / "none.jsonl", []) == 0 and (tmp_path / "none.jsonl").read_bytes() == b""


def test_an_output_folder_that_is_a_file_is_one_line_naming_it_and_the_flag(tmp_path):
    a_file = tmp_path / "results"
    a_file.write_text("not a folder", encoding="utf-8")
    assert_input_error(lambda: check_output_dir(a_file), str(a_file), "--output_dir is a file, not a folder")
    assert_input_error(lambda: check_output_dir(str(a_file), "--plots_dir"), "--plots_dir is a file")
    assert check_output_dir(str(tmp_path / "missing")) == tmp_path / "missing"  # made later, by its writer
    assert check_output_dir(tmp_path) == tmp_path
    assert not (tmp_path / "missing").exists()


# ------------------------------------------------------------------ reading JSON

def test_read_json_object_names_its_messages(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('"a string"')
    with pytest.raises(InputError, match="not a results object"):
        read_json_object(path, not_object="not a results object")
    with pytest.raises(InputError, match="results file not found"):
        read_json_object(tmp_path / "missing.json", missing="results file not found")


@pytest.mark.parametrize("content, fragments", [
    (b'{\n  "a": 1,\n  "b": \n}\n', ["x.json:4", "invalid JSON: Expecting value"]),
    ('{"judgement": "是"}'.encode("gbk"), ["x.json", "not UTF-8 text"]),
    (b"[1, 2]", ["x.json", "must be a JSON object"]),
    (b"", ["x.json:1", "invalid JSON"]),
])
def test_read_json_object_refuses_in_one_line_naming_the_file(tmp_path, content, fragments):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    assert_input_error(lambda: read_json_object(path), str(tmp_path), *fragments)
    assert_input_error(lambda: read_json_object(tmp_path / "gone.json"), "gone.json", "file not found")


def test_read_json_object_returns_the_object(tmp_path):
    path = tmp_path / "card.json"
    path.write_text('{"judgements": ["是", "否"], "max_length": 1024}', encoding="utf-8")
    assert read_json_object(path) == {"judgements": ["是", "否"], "max_length": 1024}


# ------------------------------------------------------------------ hashes and folders

def test_file_sha256_over_several_blocks(tmp_path):
    empty, abc, big = tmp_path / "empty", tmp_path / "abc", tmp_path / "big"
    empty.write_bytes(b"")
    abc.write_bytes(b"abc")
    big.write_bytes(b"\x01" * ((1 << 20) * 2 + 3))  # two 1 MiB blocks and a tail
    assert file_sha256(empty) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert file_sha256(str(abc)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    small = tmp_path / "same-bytes-short"
    small.write_bytes(b"\x01" * ((1 << 20) * 2 + 2))
    assert len(file_sha256(big)) == 64 and file_sha256(big) != file_sha256(small)
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "missing")


def test_same_folder_through_links_relative_parts_and_missing_folders(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "run", target_is_directory=True)
    monkeypatch.chdir(tmp_path / "other")
    assert same_folder(tmp_path / "run", tmp_path / "link")
    assert same_folder("../run", str(tmp_path / "other" / ".." / "run"))
    assert not same_folder(tmp_path / "run", tmp_path / "other")
    # A folder that is gone (or not made yet) is compared by what the paths resolve to.
    assert same_folder(tmp_path / "gone", "../gone")
    assert not same_folder(tmp_path / "gone", tmp_path / "run")
