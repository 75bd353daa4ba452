"""dataset/make_sample_data.py: deterministic twin pairs in the document's raw format."""
from __future__ import annotations

import difflib
import hashlib
import json
from collections import defaultdict
from pathlib import Path

from defect_judge import REPO_ROOT, load_script


gen = load_script("dataset/make_sample_data.py")

# sha256 of every file the default settings write, i.e. of the shipped dataset/output/. A change here is a
# change of the shipped data: regenerate it (python dataset/make_sample_data.py) and update this table on purpose.
SHIPPED_SHA256 = {
    "buffer_overflow.json": "129ef8898b5486bea5b7310a8ea2d02779fe5e796c864e58832c14ddae15f5e6",
    "division_by_zero.json": "e0ccdf81871838f96810f93709157e8f6d67809db4498f341c4b91b164240452",
    "integer_overflow/0001.json": "761ff9a853ec5e2d0a8a55102834829a5b1749e3bed227d05cb42cdee0a1b2ca",
    "integer_overflow/0002.json": "679dbe1021535775cd4fc23630e231779fe7c6f6b652184986754b6ad5f51710",
    "integer_overflow/0003.json": "178f93bc111869ae8b3d12c230d2ab3e13f7765a69e128651c4b29c156ea835b",
    "integer_overflow/0004.json": "1abc7b89cb53e9f2c9cba13510e701fbc8895898ad7e9ff8bc768b93837e92f3",
    "integer_overflow/0005.json": "33ef96c0f6c71346c0a49e5c5898383300556e43e6f5490bc629e899bb2727fe",
    "integer_overflow/0006.json": "d59b79585a7db3b55b73a4b9686cf2e7b5f16be14d1fd39297e1bf393e5da824",
    "integer_overflow/0007.json": "298928828a7f9a164323c38b7d9757b728f6ab5b18680ef50d05b8ec06ff7714",
    "integer_overflow/0008.json": "fc1b9ef24758fd3409828d6d7a4f73eeeb0d3b56356b57285522eef7581d12a6",
    "integer_overflow/0009.json": "64f59f615925b5af687ff609739752eb4ae79fb1f735b264eac060726b0732e2",
    "integer_overflow/0010.json": "7c567dc981d3428ca1f126aade92a523d656903309bb8947a3857b3fa575640c",
    "integer_overflow/0011.json": "26929ea028e8941bf458315b092313aae4d1b1809e12c1f35789cc1ae3c1bac5",
    "integer_overflow/0012.json": "c8c34d12a367df76399b7c2d5c63611d81634d510242363d21d1e9f0424d019e",
    "integer_overflow/0013.json": "de404871da7e13cd43ebcfb7866cd96e9f72c8b58c4b69c2a43186222d3a1201",
    "integer_overflow/0014.json": "912ce4f036fa94396eb33e1bfceba969e1306c30703b53a120bad7427c1966eb",
    "integer_overflow/0015.json": "c03b4df73edb1ddf5ba4991aeaced629c6fb5ad56c74e511ef8331f8af4a1833",
    "integer_overflow/0016.json": "31c6f04b61b63f0e37ccbb8640f0e819c8082950a0318a3e072fc4888b25eee5",
    "integer_overflow/0017.json": "8fb8dcc270abd5ed40c262dbfe6c3fac86999de0a32de04f4c1c8e865193a109",
    "integer_overflow/0018.json": "52a22adae3612cbdba8628c23420ebd41588e59d9f5a8abbec5a8a53ee142e0f",
    "integer_overflow/0019.json": "627953a08b9c1378df24ddd5faf4df963c7402ab9541860d826e3b402a5a04bc",
    "integer_overflow/0020.json": "9cabbf2b5e3ff6acb51a550bc63c8b67b52073e30e26b2afa00b23c7565cea75",
    "integer_overflow/0021.json": "f46a3df538a7efe1713f28f39406a46ab9fc9ac994b0f71f566c508a1bee0d8d",
    "integer_overflow/0022.json": "560cabf623d273b1adbf15da4dae69737b176b0979ac432a7a0a075ba710cb71",
    "integer_overflow/0023.json": "6a6a4259cf4afc8300c43226b8772b894b505c4b44a48a897a69bc4c36631fb8",
    "integer_overflow/0024.json": "0f680b9809d4cca852cb55a4dfb7f54b400d9a773eff5d654829b49814afc020",
    "integer_overflow/0025.json": "fd3d71a683a399ca439f3785f7f75916da7f1e21bb5f30c77f1a99de8e1a1511",
    "integer_overflow/0026.json": "689f99c02603a3dc81ad99a0efc46186e0a844143c014ec61fa985ddb6c3ed8b",
    "integer_overflow/0027.json": "bc8d105b3ed3568f30269f82349402763c20ed13130e6037bdae886185724437",
    "integer_overflow/0028.json": "c0592c1cdddc2b772a10de2ae2dc49d2f71e3975c68952b8841548326a8a1ab7",
    "integer_overflow/0029.json": "8d7e31d17ef12a5c5f8f9183393f23facaf4e4b207cd0408d9adf84c4402140f",
    "integer_overflow/0030.json": "5b5d7351f2f657375b8ff577823da3cea69a6ea6854df779ed8560ee17299481",
    "integer_overflow/0031.json": "4cfe65af5d0985d0ff825ebc30a6a9c1c11de46154b046c6029da5750c9e8dd2",
    "integer_overflow/0032.json": "181e9751170bb0aa58f040d6201261109b82dd8c1dca3257110025820cbe5e19",
    "integer_overflow/0033.json": "bfb963dda3b747b90cb53d055b7840cbfd1d61e545f9b6fce68f17273546cdd9",
    "integer_overflow/0034.json": "018e6bccf95dbed6ef31c72157ec0fda8a89f8dc694c835c46f2e2e654400185",
    "integer_overflow/0035.json": "f7f927a82a8ec29693d455273650299256f04f4da5f26618950914caf9bff421",
    "integer_overflow/0036.json": "57cab7f2594ebb03ecaeb0af94ccfc54fa9d6f00ce9f498bf2385ebb35fda7c7",
    "integer_overflow/0037.json": "f5e1cf0c6d243f81db3ca1efd84566ad4fa70cfc592609a2513fa623b3fb4126",
    "integer_overflow/0038.json": "f09412aa24a7b039c4f1a45dd455a192cd2e74de125d0faf88f45ca18b75590a",
    "integer_overflow/0039.json": "3e98b0e49b4a7e93225af5273edcf337f454042ba8d702bacb800fe86661003d",
    "integer_overflow/0040.json": "3cf37c641ee59bfe24f2b773c0b1bc5acf7b22f13ffb5d67769393b3f1c295c8",
    "memory_leak.json": "c9ed25c7b96f70506a6d24e48746ea4c266692aa31230c596a3478e32c581694",
    "null_pointer_dereference.json": "915020ca9681071a23559c30848527645e9d3a3ea496a47ac3c4bb6bb6dc0f29",
    "resource_leak.jsonl": "a375cd73b9942e6c8aca614458c3f6bed1f4007de340a5cd3b01b2a6197bbe23",
    "uninitialized_variable.json": "0c88cd73c8c02de02e30269a669c5e06c7a77ef09cfabbb16daf9719f552bb3b",
    "use_after_free.json": "f0610927a8dc22353ae4801d5dd468a9bf32bc611ca612b292b49bdf0550d256",
}


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


def sha256_of_files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_default_run_reproduces_the_shipped_files_byte_for_byte(tmp_path):
    assert gen.main(["--output_dir", str(tmp_path)]) == 0
    assert sha256_of_files(tmp_path) == SHIPPED_SHA256
    assert sha256_of_files(REPO_ROOT / "dataset" / "output") == SHIPPED_SHA256
