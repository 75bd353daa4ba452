"""dataset/convert_and_split.py, run as a user runs it, on splits it must refuse or warn about: an empty
train or dev split, ratios that sum to 1 with a default the user never typed, and --dev_ratio 0 beside a dev
file (issue "Tried as a new user would", items A-C)."""
from __future__ import annotations

import json
from pathlib import Path

from helpers import CONVERT, assert_clean_failure, run_script


def raw(subtype: str, event: str, judgement: str, pair_id: str | None = None) -> dict:
    sample = {"instruction": [{"subtype": subtype}],
              "input": {"task": f"请判断下面的C函数是否存在{subtype}缺陷。", "event": event,
                        "output_format": "判断:是/否\n\n原因：<简要说明>"},
              "output": {"judgement": judgement, "reason": "见代码。"}}
    return sample | ({"pair_id": pair_id} if pair_id else {})


def twin_pairs(subtype: str, pairs: int, tag: str = "") -> list[dict]:
    """``pairs`` twin pairs of one subtype: each a defective sample and its clean twin, sharing a pair_id."""
    return [raw(subtype, f"int f{tag}{k}(int *p) {{ {body} }}", judgement, f"{tag}twin-{k}")
            for k in range(pairs) for judgement, body in (("是", "return *p;"), ("否", "return p ? *p : 0;"))]


def distinct(subtype: str, per_judgement: int) -> list[dict]:
    return [raw(subtype, f"int {subtype}_{j}_{i}(void) {{ return {i}; }}", judgement)
            for j, judgement in enumerate(("是", "否")) for i in range(per_judgement)]


def write_raw(folder: Path, samples: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "samples.json").write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    return folder


def convert(out: Path, input_dir: Path, *extra: str):
    return run_script(CONVERT, "--input_dir", input_dir, "--converted_file", out / "converted.jsonl",
                      "--train_file", out / "train.jsonl", "--test_file", out / "test.jsonl", *extra)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


# ------------------------------------------------------------ A: empty splits

def test_a_split_that_leaves_dev_empty_is_refused_and_writes_nothing(tmp_path):
    """Two twin pairs of one subtype with --test_ratio 0.9: this used to write an empty train.jsonl and exit 0."""
    folder, out = write_raw(tmp_path / "raw", twin_pairs("空指针解引用", 2)), tmp_path / "out"
    assert convert(out, folder, "--dev_ratio", "0").returncode == 0  # an earlier good split
    before = snapshot(out)
    result = convert(out, folder, "--test_ratio", "0.9", "--dev_ratio", "0.05")
    assert_clean_failure(result, "--test_ratio 0.9 and --dev_ratio 0.05 leave the dev split empty",
                         "train 2, dev 0, test 2 of 4 samples", "--dev_ratio 0 for no dev split")
    assert snapshot(out) == before  # nothing written, nothing removed, nothing half-written


def test_a_split_that_leaves_train_empty_is_refused(tmp_path):
    folder = write_raw(tmp_path / "raw", [raw("除零", "int f(int a, int b) { return a / b; }", "是")])
    out = tmp_path / "out"
    result = convert(out, folder, "--dev_ratio", "0")
    assert_clean_failure(result, "--test_ratio 0.2 (the default) and --dev_ratio 0 leave the train split empty",
                         "train 0, test 1 of 1 samples", "add samples")
    assert not out.exists()
    both = convert(out, folder)
    assert_clean_failure(both, "leave the train and dev splits empty", "train 0, dev 0, test 1 of 1 samples")
    assert not out.exists()


def test_a_subtype_with_no_training_sample_is_warned_with_its_real_count(tmp_path):
    """One twin pair goes whole to test: the warning used to say "a single sample" of a subtype of two."""
    folder = write_raw(tmp_path / "raw", distinct("内存泄漏", 5) + twin_pairs("释放后使用", 1))
    result = convert(tmp_path / "out", folder, "--dev_ratio", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "subtype '释放后使用' has 2 sample(s), none in train (test 2): training has none of it" in result.stderr
    assert "single sample" not in result.stderr


def test_a_subtype_left_with_one_twin_pair_keeps_it_in_train(tmp_path):
    """Dev used to take a subtype's last pair after test, leaving training none of it; dev now skips it."""
    folder = write_raw(tmp_path / "raw", distinct("内存泄漏", 10) + twin_pairs("释放后使用", 2))
    result = convert(tmp_path / "out", folder, "--test_ratio", "0.2", "--dev_ratio", "0.1")
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((tmp_path / "out" / "split_stats.json").read_text(encoding="utf-8"))
    pairs = stats["subtypes"]["释放后使用"]
    assert (pairs["train"], pairs["dev"], pairs["test"]) == (2, 0, 2)
    assert "subtype '释放后使用' has 4 sample(s), none in dev" in result.stderr
    assert stats["subtypes"]["内存泄漏"]["dev"] >= 1


# ------------------------------------------------- B: the default dev_ratio

def test_b_ratios_summing_to_one_name_both_values_the_sum_and_the_default(tmp_path):
    folder, out = write_raw(tmp_path / "raw", distinct("内存泄漏", 10)), tmp_path / "out"
    result = convert(out, folder, "--test_ratio", "0.9")
    assert_clean_failure(result, "--test_ratio 0.9 plus --dev_ratio 0.1 (the default) is 1",
                         "the two must sum to less than 1")
    assert "field 'dev_ratio'" not in result.stderr  # the user never typed --dev_ratio
    both = convert(out, folder, "--test_ratio", "0.7", "--dev_ratio", "0.4")
    assert_clean_failure(both, "--test_ratio 0.7 plus --dev_ratio 0.4 is 1.1")
    assert "(the default)" not in both.stderr and not out.exists()
    assert "not scaled down" in run_script(CONVERT, "--help", check=True).stdout


# ------------------------------------------------------- C: --dev_ratio 0

def test_c_dev_ratio_0_with_an_explicit_dev_file_is_refused(tmp_path):
    folder, out = write_raw(tmp_path / "raw", distinct("内存泄漏", 10)), tmp_path / "out"
    dev = out / "my_dev.jsonl"
    assert convert(out, folder, "--dev_file", dev).returncode == 0
    before = snapshot(out)
    result = convert(out, folder, "--dev_ratio", "0", "--dev_file", dev)
    assert_clean_failure(result, f"--dev_ratio 0 writes no dev split, but --dev_file {dev} was given")
    assert snapshot(out) == before


def test_c_dev_ratio_0_leaves_an_earlier_dev_file_untouched_and_says_so(tmp_path):
    folder, out = write_raw(tmp_path / "raw", distinct("内存泄漏", 10)), tmp_path / "out"
    assert convert(out, folder).returncode == 0
    dev = (out / "dev.jsonl").read_bytes()
    assert dev
    result = convert(out, folder, "--dev_ratio", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "dev.jsonl").read_bytes() == dev
    assert f"--dev_ratio 0: {out / 'dev.jsonl'} is an earlier run's dev split, left as it is" in result.stderr
    assert json.loads((out / "split_stats.json").read_text(encoding="utf-8"))["splits"] == ["train", "test"]
    assert lines(out / "train.jsonl") + lines(out / "test.jsonl") == 20
