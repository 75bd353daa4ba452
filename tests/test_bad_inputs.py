"""The bad-input corpus (tests/data/bad_inputs/) through the real scripts, as a user runs them:
each bad case exits non-zero with one clear message naming the file (and line/sample/field),
shows no traceback and leaves no output file behind; each valid edge case runs to the end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO_ROOT, run_script

CORPUS = REPO_ROOT / "tests" / "data" / "bad_inputs"
RAW_CASES = json.loads((CORPUS / "raw" / "manifest.json").read_text(encoding="utf-8"))
JSONL_CASES = json.loads((CORPUS / "jsonl" / "manifest.json").read_text(encoding="utf-8"))
CONVERT = REPO_ROOT / "dataset" / "convert_and_split.py"


def assert_clean_failure(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def convert(tmp_path: Path, input_dir: Path):
    out = tmp_path / "out"
    return run_script(CONVERT, "--input_dir", input_dir, "--converted_file", out / "converted.jsonl",
                      "--train_file", out / "train.jsonl", "--test_file", out / "test.jsonl"), out


def test_corpus_has_at_least_15_bad_cases():
    bad = [name for name, case in RAW_CASES.items() if not case["valid"]] + list(JSONL_CASES)
    assert len(bad) >= 15


@pytest.mark.parametrize("name", sorted(RAW_CASES))
def test_raw_case(tmp_path, name):
    case = RAW_CASES[name]
    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(CORPUS / "raw" / name, folder / name)
    result, out = convert(tmp_path, folder)
    if case["valid"]:
        assert result.returncode == 0, result.stderr
        assert (out / "train.jsonl").is_file() and (out / "test.jsonl").is_file()
        return
    assert_clean_failure(result, str(folder / name), *case["expect"])
    assert not out.exists() or not any(out.iterdir()), "no output may be written"


def test_folder_with_no_samples(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a sample", encoding="utf-8")
    result, out = convert(tmp_path, folder)
    assert_clean_failure(result, str(folder), "no *.json or *.jsonl files")


def test_failed_conversion_keeps_the_previous_good_split(tmp_path):
    """A bad input after a good run leaves the earlier train/test files untouched."""
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(CORPUS / "raw" / "list_of_samples.json", good / "a.json")
    result, out = convert(tmp_path, good)
    assert result.returncode == 0, result.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    shutil.copy(CORPUS / "raw" / "missing_output_reason.json", good / "b.json")
    result, _ = convert(tmp_path, good)
    assert result.returncode == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
