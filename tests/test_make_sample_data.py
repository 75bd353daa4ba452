"""dataset/make_sample_data.py: deterministic twin pairs in the document's raw format."""
from __future__ import annotations

import difflib
import json
from collections import defaultdict
from pathlib import Path

from defect_judge import load_script


gen = load_script("dataset/make_sample_data.py")


def read_all(folder: Path) -> list[dict]:
    samples = []
    for path in sorted(folder.rglob("*.json*")):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            samples += [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            loaded = json.loads(text)
            samples += loaded if isinstance(loaded, list) else [loaded]
    return samples


def test_twins_share_a_pair_id_one_defective_one_clean_differing_in_a_few_lines(tmp_path):
    assert gen.main(["--output_dir", str(tmp_path), "--samples_per_subtype", "8", "--seed", "3"]) == 0
    samples = read_all(tmp_path)
    assert len(samples) == 8 * len(gen.SUBTYPES)
    pairs = defaultdict(list)
    for sample in samples:
        pairs[sample["pair_id"]].append(sample)
    assert len(pairs) == 4 * len(gen.SUBTYPES)
    changed = []
    for members in pairs.values():
        assert sorted(m["output"]["judgement"] for m in members) == ["否", "是"]
        assert len({m["instruction"][0]["subtype"] for m in members}) == 1
        defective, clean = sorted(members, key=lambda m: m["output"]["judgement"] != "是")
        a, b = defective["input"]["event"].splitlines(), clean["input"]["event"].splitlines()
        opcodes = difflib.SequenceMatcher(None, a, b).get_opcodes()
        changed.append(sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in opcodes if tag != "equal"))
    assert 1 <= sorted(changed)[len(changed) // 2] <= 6  # twins: the median pair differs in a few lines


def test_same_seed_same_bytes_and_an_odd_count_adds_one_unpaired_defect(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        gen.main(["--output_dir", str(folder), "--samples_per_subtype", "3", "--seed", "11"])
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files and all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    for subtype in gen.SUBTYPES:
        mine = [s for s in read_all(first) if s["instruction"][0]["subtype"] == subtype.name]
        unpaired = [s for s in mine if "pair_id" not in s]
        assert len(mine) == 3 and len(unpaired) == 1 and unpaired[0]["output"]["judgement"] == "是"
    assert not any(gen._FORBIDDEN_RE.search(s["input"]["event"] + s["output"]["reason"]) for s in read_all(first))
