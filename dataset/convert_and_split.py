#!/usr/bin/env python
"""数据转换和分割 — convert raw defect samples to chat JSONL and split train/dev/test.

Reads every raw sample under ``input_dir`` (``*.json`` files holding one sample
or a list of them, ``*.jsonl`` files with one sample a line; recursively),
checks it against the document's format, converts it to the chat format with
the document's templates, and writes:

  converted_file   every sample, one JSON object a line: {"id", "subtype", "text"}
  train_file       the training split
  dev_file         the validation split, carved from the training share: training
                   evaluates on it and chooses its best checkpoint by it, so the
                   test split stays unseen by every choice (dev_ratio 0: none written,
                   an earlier one left as it is; with --train_file moved and no
                   --dev_file: dev.jsonl beside it)
  test_file        the test split, stratified by subtype and judgement
  split_stats.json beside train_file: counts per subtype × split × judgement

A split that would leave train, or a requested dev split, empty is refused (exit 2, nothing written).

Examples:
  python dataset/convert_and_split.py
  python dataset/convert_and_split.py --test_ratio 0.25 --seed 7
  python dataset/convert_and_split.py --dev_ratio 0      # the document's two files only
  python dataset/convert_and_split.py --input_dir my_raw --skip_invalid true
"""
from __future__ import annotations

import logging
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from tqdm import tqdm

from defect_judge.cli import Settings, parse_settings
from defect_judge.errors import InputError, run_main
from defect_judge.fileio import write_json_atomic, write_jsonl_atomic
from defect_judge.text import display_width, pad_to
from defect_judge.evaluate.pairs import pair_problem
from defect_judge.data.labels import check_two_judgements, positive_judgement
from defect_judge.data.schema import (RawSample, Record, raw_objects, raw_to_record, report_stripped, sample_id,
                                      validate_raw_sample)
from defect_judge.data.splitting import split_stats, split_three_ways

# ----------------------------------------------------------------------------
# 参数配置 (edit here, or override any of them with --NAME VALUE)

input_dir = "./dataset/output"  # 原始数据目录 (searched recursively for *.json and *.jsonl)
converted_file = "./dataset/converted_data.jsonl"  # 转换后的数据文件: all converted samples (chat JSONL)
train_file = "./dataset/train.jsonl"  # 训练集输出路径 (chat JSONL); split_stats.json is written beside it
test_file = "./dataset/test.jsonl"  # 测试集输出路径 (chat JSONL)
# 验证集输出路径 (chat JSONL): evaluation and checkpoint choice during training
dev_file = "./dataset/dev.jsonl"
test_ratio = 0.2  # 测试集比例: share of each subtype that goes to the test split, in (0, 1)
# 验证集比例: share of each subtype (of all samples) that goes to the dev split, taken from the training share;
# test_ratio + dev_ratio must stay below 1, and this default is not scaled down when test_ratio is raised (pass
# both); 0 writes no dev split, leaves an earlier dev file as it is, and cannot go with --dev_file
dev_ratio = 0.1
seed = 42  # 分割随机种子: the same seed gives the same split
skip_invalid = False  # 跳过无效样本 instead of stopping, listing each with its reason in <converted_file stem>.rejects.jsonl
# warn about events (the code) longer than this many characters: training and evaluation cut them to fit their
# max_length (0: never warn)
long_event_chars = 16000
# ----------------------------------------------------------------------------
PATHS = ("input_dir", "converted_file", "train_file", "test_file", "dev_file")
STATS_FILE = "split_stats.json"
RAW_SUFFIXES = (".json", ".jsonl")  # compared lower-cased: a.JSON is read too
# A split's share may differ from the requested one by this many samples, or this fraction of the
# requested count, before the run says so (rounding per subtype moves it a little on any data).
SHARE_TOLERANCE_SAMPLES, SHARE_TOLERANCE_FRACTION = 1, 0.1

log = logging.getLogger("convert_and_split")


@dataclass(frozen=True)
class Sample:
    record: Record
    raw: RawSample


@dataclass(frozen=True)
class Rejected:
    path: str
    sample: int | None
    line: int | None
    field: str | None
    error: str

    def to_json(self) -> dict:
        return {"file": self.path, "sample": self.sample, "line": self.line, "field": self.field, "error": self.error}


# ------------------------------------------------------------------ reading

def raw_files(folder: Path) -> list[Path]:
    """Every *.json / *.jsonl file under ``folder`` (any case), hidden ones left out; says what it skipped.

    Dot-files and dot-folders are not data: macOS leaves ``._a.json`` resource forks beside
    copied files (binary, not JSON), editors and git keep their own folders.
    """
    if not folder.is_dir():
        raise InputError("input folder does not exist" if not folder.exists() else "not a folder", path=folder)
    files, hidden, other = [], 0, 0
    for root, folders, names in os.walk(folder):
        hidden += sum(1 for name in folders + names if name.startswith("."))
        folders[:] = [name for name in folders if not name.startswith(".")]  # never descend into them
        for name in names:
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in RAW_SUFFIXES:
                files.append(Path(root) / name)
            else:
                other += 1
    if not files:
        raise InputError("no *.json or *.jsonl files found" + (f" ({hidden} hidden entries skipped)" if hidden else ""),
                         path=folder)
    log.info("reading %d raw file(s) under %s; skipped %d hidden entries (dot-files, dot-folders, macOS ._ files) "
             "and %d file(s) not named *.json / *.jsonl", len(files), folder, hidden, other)
    return sorted(files)


def sample_source(folder: Path, record_id: str) -> tuple[Path, int]:
    """The file (under ``folder``) and the position in it of the sample that ``sample_id`` named."""
    relative, index = record_id.rsplit("#", 1)
    return folder / relative, int(index)


def rejection(folder: Path, sample: Sample, field: str, error: str) -> Rejected:
    """A sample refused with ``error``, named by its file and its position there."""
    path, index = sample_source(folder, sample.record.id)
    return Rejected(str(path), index, None, field, error)


def load_samples(folder: Path, skip_invalid: bool) -> tuple[list[Sample], list[Rejected]]:
    samples, rejected = [], []
    for path in tqdm(raw_files(folder), desc="reading raw files", unit="file", disable=None):
        relative = path.relative_to(folder).as_posix()
        try:
            for index, line, obj in raw_objects(path):
                try:
                    raw = validate_raw_sample(obj, path=path, sample=index, line=line)
                except InputError as error:
                    if not skip_invalid:
                        raise
                    rejected.append(Rejected(str(path), index, line, error.field, error.reason))
                    continue
                samples.append(Sample(raw_to_record(raw, sample_id(relative, index)), raw))
        except InputError as error:
            if not skip_invalid or error.sample is not None:
                raise
            rejected.append(Rejected(str(path), None, error.line, None, error.reason))  # the whole file
    report_stripped([s.raw for s in samples], folder)
    return samples, rejected


def check_conflicts(samples: list[Sample], folder: Path, skip_invalid: bool) -> tuple[list[Sample], list[Rejected]]:
    """The same question with different judgements cannot both be right: an error (or both rejected)."""
    by_prompt: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for sample in samples:
        by_prompt[(sample.raw.subtype, sample.record.user)].append(sample)
    conflicting: set[str] = set()
    for group in by_prompt.values():
        judgements = {s.raw.judgement for s in group}
        if len(judgements) > 1:
            ids = [s.record.id for s in group]
            if not skip_invalid:
                where = ", ".join(str(folder / i) for i in ids)
                raise InputError(f"conflicting duplicates: samples {where} have the same subtype, task, event "
                                 f"and output format but different judgements ({' / '.join(sorted(judgements))})",
                                 field="output.judgement")
            conflicting.update(ids)
    kept = [s for s in samples if s.record.id not in conflicting]
    rejected = [rejection(folder, s, "output.judgement", "conflicting duplicate: same question, different judgement")
                for s in samples if s.record.id in conflicting]
    return kept, rejected


def check_pairs(samples: list[Sample], folder: Path, skip_invalid: bool) -> tuple[list[Sample], list[Rejected]]:
    """A pair (samples sharing a pair_id) is versions of one piece of code: one subtype, not all the same
    judgement, and at most one defective member. A bad pair is an error (or, with skip_invalid, rejected)."""
    by_pair: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if sample.raw.pair_id is not None:
            by_pair[sample.raw.pair_id].append(sample)
    vocabulary = sorted({s.raw.judgement for s in samples})
    defective, _ = positive_judgement(vocabulary)
    bad: dict[str, str] = {}
    for pair_id, members in sorted(by_pair.items()):
        problem = pair_problem([m.raw.subtype for m in members], [m.raw.judgement for m in members], defective)
        if problem:
            bad[pair_id] = problem
    for pair_id, reason in bad.items():
        first = by_pair[pair_id][0].record.id
        if not skip_invalid:
            ids = ", ".join(str(folder / m.record.id) for m in by_pair[pair_id])
            path, index = sample_source(folder, first)
            raise InputError(f"pair {pair_id!r} ({ids}): {reason}", path=path, sample=index, field="pair_id")
    rejected_ids = {m.record.id for pair_id in bad for m in by_pair[pair_id]}
    rejected = [rejection(folder, s, "pair_id", f"pair {s.raw.pair_id!r}: {bad[s.raw.pair_id]}")
                for s in samples if s.record.id in rejected_ids]
    lone = sorted(pair_id for pair_id, members in by_pair.items() if len(members) == 1 and pair_id not in bad)
    if lone:
        log.warning("%d pair_id(s) with a single sample (its twin is missing), e.g. %r: counted as unpaired",
                    len(lone), lone[0])
    return [s for s in samples if s.record.id not in rejected_ids], rejected


def exact_duplicates(samples: list[Sample]) -> list[list[str]]:
    groups: dict[tuple, list[str]] = defaultdict(list)
    for sample in samples:
        groups[(sample.raw.subtype, sample.record.user, sample.record.assistant)].append(sample.record.id)
    return [ids for ids in groups.values() if len(ids) > 1]


# -------------------------------------------------------------------- table

def warn_long_events(samples: list[Sample], limit: int) -> None:
    """Say which events are longer than ``limit`` characters: training and evaluation cut such code to fit their
    max_length (its end goes), so a defect at the end of it is never seen."""
    long = [s for s in samples if len(s.raw.event) > limit]
    if limit and long:
        ids = ", ".join(s.record.id for s in long[:5]) + (", ..." if len(long) > 5 else "")
        log.warning("%d sample(s) with an event longer than --long_event_chars %d characters (about a quarter as "
                    "many tokens of code): training and evaluation cut their code to fit max_length: %s", len(long),
                    limit, ids)


def format_table(stats: dict) -> str:
    judgements, names = stats["judgements"], stats["splits"]
    header = ["subtype", "total", *names] + [f"{j} {'/'.join(names)}" for j in judgements]
    rows = [[name, str(e["total"]), *(str(e[n]) for n in names)]
            + ["/".join(str(e["judgements"][j][n]) for n in names) for j in judgements]
            for name, e in stats["subtypes"].items()]
    totals = {j: [sum(e["judgements"][j][n] for e in stats["subtypes"].values()) for n in names] for j in judgements}
    rows.append(["(all)", str(stats["total"]), *(str(stats[n]) for n in names)]
                + ["/".join(map(str, totals[j])) for j in judgements])
    widths = [max(display_width(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = pad_to(cells[0], widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([line(header), rule, *map(line, rows[:-1]), rule, line(rows[-1])])


# --------------------------------------------------------------------- main

def dev_path(args, given: frozenset[str]) -> Path:
    """dev_file; when train_file was moved by a flag and dev_file was not, dev.jsonl beside train_file,
    so that a split written elsewhere never mixes with the repository's own dataset/dev.jsonl."""
    if "train_file" in given and "dev_file" not in given:
        return Path(args.train_file).with_name(Path(dev_file).name)
    return Path(args.dev_file)


def output_paths(args: Settings, splits: dict[str, Path], converted: Path, rejects: Path) -> dict[str, Path]:
    """Every file this run writes, by the flag (or rule) that names it."""
    outputs = {"--converted_file": converted, "--train_file": splits["train"]}
    if args.dev_ratio > 0:
        outputs["--dev_file"] = splits["dev"]
    outputs["--test_file"] = splits["test"]
    outputs[f"{STATS_FILE} (beside --train_file)"] = splits["train"].with_name(STATS_FILE)
    if args.skip_invalid:
        outputs["the rejects file (beside --converted_file)"] = rejects
    return outputs


def check_output_paths(outputs: dict[str, Path]) -> None:
    """Two outputs on one path would overwrite each other (train_file = test_file left only the test
    records, and exit 0): refuse before reading anything. A folder cannot be written as a file."""
    seen: dict[Path, str] = {}
    for name, path in outputs.items():
        key = path.resolve()  # ./a.jsonl, a.jsonl and a link to it are one file
        if key in seen:
            raise InputError(f"{seen[key]} and {name} name the same file: each output needs its own path, "
                             f"or the later one would overwrite the earlier", path=path)
        if path.is_dir():
            raise InputError(f"{name} is a folder, not a file", path=path)
        seen[key] = name


def share_warnings(counts: dict[str, int], total: int, ratios: dict[str, float]) -> list[str]:
    """A line for each split whose size is far from the requested share, and why (it is by design)."""
    reasons = {"test": "every subtype gets at least one test sample, and each judgement with two or more samples one "
                       "on each side, so every subtype is measured",
               "dev": "dev takes at least one sample from every subtype of three or more samples and none from "
                      "smaller ones, so that train, dev and test each hold one"}
    lines = []
    for name, ratio in ratios.items():
        wanted, got = total * ratio, counts.get(name, 0)
        if name in counts and abs(got - wanted) > max(SHARE_TOLERANCE_SAMPLES, SHARE_TOLERANCE_FRACTION * wanted):
            lines.append(f"the {name} split holds {got} of {total} samples ({got / total:.1%}), not the requested "
                         f"{ratio:.1%} ({wanted:.1f}): by design {reasons[name]}; samples sharing an event or a "
                         f"pair_id also stay together")
    return lines


def warn_stale_dev(path: Path, outputs: dict[str, Path]) -> None:
    """dev_ratio 0: an earlier run's dev split may overlap this run's training split, but the user did not ask
    for it to be written, so it is never deleted; saying so is what keeps it from being trained on unawares."""
    if path.exists() and path.resolve() not in {p.resolve() for p in outputs.values()}:
        log.warning("--dev_ratio 0: %s is an earlier run's dev split, left as it is and not rewritten: it may "
                    "overlap this run's training split; delete it, or rerun with a --dev_ratio above 0", path)


def ratio_flag(args: Settings, given: frozenset[str], name: str) -> str:
    return f"--{name} {getattr(args, name):g}" + ("" if name in given else " (the default)")


def check_ratios(args: Settings, given: frozenset[str]) -> None:
    """The ratios alone, before anything is read; a default the user never typed is named as such."""
    if not 0 < args.test_ratio < 1:
        raise InputError(f"test_ratio must be between 0 and 1 (exclusive), got {args.test_ratio}", field="test_ratio")
    if args.dev_ratio < 0:
        raise InputError(f"dev_ratio must be at least 0, got {args.dev_ratio}", field="dev_ratio")
    if args.test_ratio + args.dev_ratio >= 1:
        raise InputError(f"{ratio_flag(args, given, 'test_ratio')} plus {ratio_flag(args, given, 'dev_ratio')} is "
                         f"{args.test_ratio + args.dev_ratio:g}, which leaves nothing to train on: the two must sum "
                         f"to less than 1; pass a smaller --test_ratio or --dev_ratio (--dev_ratio 0: no dev split)")
    if args.dev_ratio == 0 and "dev_file" in given:
        raise InputError(f"--dev_ratio 0 writes no dev split, but --dev_file {args.dev_file} was given: drop "
                         f"--dev_file, or pass a --dev_ratio above 0 to write it")


def check_split_sizes(args: Settings, given: frozenset[str], splits: dict[str, list[Record]]) -> None:
    """A split with an empty train (or a requested but empty dev) would train on nothing or choose on nothing."""
    empty = [name for name in ("train", "dev") if name in splits and not splits[name]]
    if not empty:
        return
    total = sum(len(split) for split in splits.values())
    counts = ", ".join(f"{name} {len(split)}" for name, split in splits.items())
    remedy = ("add samples, or pass a smaller --test_ratio or --dev_ratio" if "train" in empty else
              "pass --dev_ratio 0 for no dev split, add samples, or pass a smaller --test_ratio")
    what = " and ".join(empty) + (" splits" if len(empty) > 1 else " split")
    raise InputError(f"{ratio_flag(args, given, 'test_ratio')} and {ratio_flag(args, given, 'dev_ratio')} leave the "
                     f"{what} empty ({counts} of {total} samples: every subtype keeps a test sample, and twins and "
                     f"samples sharing an event stay on one side): {remedy}")


def subtype_warnings(stats: dict, dev_requested: bool) -> list[str]:
    """A line for each subtype that training, or the dev split, has none of."""
    lines = []
    for name, entry in stats["subtypes"].items():
        if entry["train"] == 0:
            where = ", ".join(f"{split} {entry[split]}" for split in ("dev", "test") if entry.get(split))
            lines.append(f"subtype {name!r} has {entry['total']} sample(s), none in train ({where}): training has "
                         f"none of it; twins and samples sharing an event stay on one side, so add samples")
        elif dev_requested and entry["dev"] == 0:
            lines.append(f"subtype {name!r} has {entry['total']} sample(s), none in dev: too few for a dev sample "
                         f"(test, dev and train need one each, and twins or samples sharing an event count as one)")
    return lines


def main(argv: list[str] | None = None) -> None:
    args, given = parse_settings(globals(), paths=PATHS, argv=argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    check_ratios(args, given)
    input_folder, converted_path = Path(args.input_dir), Path(args.converted_file)
    paths = {"train": Path(args.train_file), "dev": dev_path(args, given), "test": Path(args.test_file)}
    rejects_path = converted_path.with_name(converted_path.stem + ".rejects.jsonl")
    outputs = output_paths(args, paths, converted_path, rejects_path)
    check_output_paths(outputs)

    log.info("reading raw samples from %s", input_folder)
    samples, rejected = load_samples(input_folder, args.skip_invalid)
    samples, conflicts = check_conflicts(samples, input_folder, args.skip_invalid)
    samples, bad_pairs = check_pairs(samples, input_folder, args.skip_invalid)
    rejected += conflicts + bad_pairs
    if not samples:
        raise InputError("no valid samples found" + (f" ({len(rejected)} rejected)" if rejected else ""), path=input_folder)
    for ids in exact_duplicates(samples):
        log.warning("exact duplicate samples (kept, always on the same side of the split): %s", ", ".join(ids))

    check_two_judgements([(s.raw.judgement, dict(zip(("path", "sample"), sample_source(input_folder, s.record.id)),
                                                 field="output.judgement")) for s in samples])
    warn_long_events(samples, args.long_event_chars)
    records = [s.record for s in samples]
    judgements = {s.record.id: s.raw.judgement for s in samples}
    train, dev, test = split_three_ways(records, judgements, args.test_ratio, args.dev_ratio, args.seed)
    splits = {"train": train, "dev": dev, "test": test} if args.dev_ratio > 0 else {"train": train, "test": test}
    check_split_sizes(args, given, splits)
    ratios = {"test": args.test_ratio, "dev": args.dev_ratio}
    stats = split_stats(splits, judgements, ratios, args.seed)
    for line in subtype_warnings(stats, args.dev_ratio > 0):
        log.warning(line)
    if "dev" not in splits:
        warn_stale_dev(paths["dev"], outputs)
    for line in share_warnings({name: len(split) for name, split in splits.items()}, len(records),
                               {"test": args.test_ratio, "dev": args.dev_ratio}):
        log.warning(line)

    write_jsonl_atomic(converted_path, (r.to_json() for r in records))
    for name, split in splits.items():
        write_jsonl_atomic(paths[name], (r.to_json() for r in split))
    write_json_atomic(paths["train"].with_name(STATS_FILE), stats | {"rejected": len(rejected)})
    if rejected:
        write_jsonl_atomic(rejects_path, (r.to_json() for r in rejected))
    elif rejects_path.exists() and rejects_path.resolve() not in {p.resolve() for p in outputs.values()}:
        rejects_path.unlink()  # a stale list from an earlier run would mislead

    print(format_table(stats))
    print(f"\n{len(records)} samples converted -> {converted_path}")
    for name, split in splits.items():
        print(f"{name + ':':6} {len(split)} -> {paths[name]}")
    print(f"stats -> {paths['train'].with_name(STATS_FILE)}")
    if rejected:
        print(f"{len(rejected)} invalid samples skipped; reasons in {rejects_path}")


if __name__ == "__main__":
    run_main(main)
