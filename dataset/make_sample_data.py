#!/usr/bin/env python3
"""Generate synthetic raw training samples for the defect-judgement model.

Every sample follows the raw format of the design document::

    {
        "instruction": [{"subtype": "<缺陷类型>"}],
        "input": {"task": "...", "event": "<code>", "output_format": "..."},
        "output": {"judgement": "是" | "否", "reason": "..."}
    }

For each defect subtype there are several code templates (C and/or Java).
Each template can render a defective variant ("是") or a clean variant ("否");
the two differ only in the decisive detail (a missing NULL check, ``<=`` vs
``<``, a missing ``free``/``fclose`` on one path, ...).  Identifiers, domains,
indentation, brace style and harmless extra statements are randomised with a
fixed seed, so the output is fully deterministic.

The templates live in ``dataset/sample_templates/`` (one module per subtype,
shared helpers in ``common.py``); this script draws, checks and writes the
samples.  Python 3.10+, standard library and the repo's ``defect_judge``.
"""

from __future__ import annotations

import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from random import Random

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sample_templates package beside this script

from defect_judge.cli import parse_settings
from defect_judge.data import subtypes as catalogue
from defect_judge.data.subtypes import NO, OUTPUT_FORMATS, TASK_PHRASES, YES
from defect_judge.errors import InputError, run_main
from defect_judge.fileio import check_output_dir, write_json_atomic, write_jsonl_atomic
from sample_templates import (buffer_overflow, division_by_zero, integer_overflow, memory_leak, null_pointer,
                              resource_leak, uninitialized_variable, use_after_free)
from sample_templates.common import DOMAINS, Ctx, TemplateFn

# ----------------------------------------------------------------------------
# Settings (edit here, or override any of them with --NAME VALUE, e.g. --seed 7)

# output folder; the relative default is relative to the repo root, a relative --output_dir to the current directory
OUTPUT_DIR = "./dataset/output"
SAMPLES_PER_SUBTYPE = 40  # samples per defect subtype, half 是 / half 否 (an odd count gets one extra 是)
SEED = 20240607  # random seed; the same seed gives byte-identical output
# ----------------------------------------------------------------------------

MIN_CODE_LINES = 10
MAX_CODE_LINES = 60
MAX_ATTEMPTS = 50  # retries per sample when a rendered event is a duplicate or too long

# Words that must never appear in generated code or reasons (they would leak
# the label).  Checked case-insensitively as substrings, so e.g. "debug" and
# "prefix" are avoided too.
FORBIDDEN_WORDS = (
    "bug", "vuln", "bad", "fix", "unsafe", "safe", "leak", "overflow", "todo",
    "wrong", "broken", "correct", "missing", "dangl", "uaf", "cwe",
)


@dataclass(frozen=True)
class Subtype:
    key: str  # file name stem (the catalogue's key)
    name: str  # Chinese subtype name written into the samples (the catalogue's name)
    layout: str  # "list" (one JSON list), "jsonl", or "per_file" (a folder of objects)
    templates: tuple[tuple[str, TemplateFn], ...]  # (language, template function)


# The catalogue's subtypes (defect_judge/data/subtypes.py), each with its file layout and code templates.
_LAYOUTS = {
    "null_pointer_dereference": ("list", null_pointer.TEMPLATES),
    "buffer_overflow": ("list", buffer_overflow.TEMPLATES),
    "memory_leak": ("list", memory_leak.TEMPLATES),
    "resource_leak": ("jsonl", resource_leak.TEMPLATES),
    "integer_overflow": ("per_file", integer_overflow.TEMPLATES),
    "division_by_zero": ("list", division_by_zero.TEMPLATES),
    "use_after_free": ("list", use_after_free.TEMPLATES),
    "uninitialized_variable": ("list", uninitialized_variable.TEMPLATES),
}
SUBTYPES = tuple(Subtype(s.key, s.name, *_LAYOUTS[s.key]) for s in catalogue.SUBTYPES)


# ==========================================================================
# Sample assembly
# ==========================================================================
_FORBIDDEN_RE = re.compile("|".join(FORBIDDEN_WORDS), re.IGNORECASE)


class SampleRejected(Exception):
    """A rendered sample is out of the line range; the caller draws another."""


def check_text(text: str, where: str) -> None:
    hit = _FORBIDDEN_RE.search(text)
    if hit:
        raise ValueError(f"{where}: label-leaking word {hit.group(0)!r} in:\n{text}")


def make_sample(rng: Random, subtype: Subtype, template_index: int, bad: bool) -> dict:
    lang, template = subtype.templates[template_index]
    ctx = Ctx(rng, rng.choice(DOMAINS), lang)
    event, reason = template(ctx, bad)
    where = f"{subtype.key}/{template.__name__}"
    check_text(event, where)
    check_text(reason, where)
    n_lines = event.count("\n") + 1
    if not MIN_CODE_LINES <= n_lines <= MAX_CODE_LINES:
        raise SampleRejected(f"{where}: {n_lines} code lines (allowed "
                             f"{MIN_CODE_LINES}..{MAX_CODE_LINES}):\n{event}")
    several = "class " in event or event.count("\n}") > 1  # helper + function, struct, ...
    if lang == "c":
        unit = "代码" if several else rng.choice(("函数", "函数", "代码"))
    else:
        unit = "代码" if several else rng.choice(("方法", "方法", "代码"))
    task = rng.choice(TASK_PHRASES).format(lang=catalogue.LANGUAGE_WORDS[lang][0], unit=unit, subtype=subtype.name)
    return {
        "instruction": [{"subtype": subtype.name}],
        "input": {"task": task, "event": event, "output_format": rng.choice(OUTPUT_FORMATS)},
        "output": {"judgement": YES if bad else NO, "reason": reason},
    }


def generate_subtype(subtype: Subtype, count: int, base_seed: int) -> list[dict]:
    """``count`` samples as twin pairs, shuffled.

    A pair renders one template's defective ("是") and clean ("否") variant from
    the same random draws (domain, names, layout), so the twins differ where
    the defect is and little else, and share a ``pair_id``, as a vulnerable
    function and its fix do in PrimeVul-style data. Templates are used
    round-robin. An odd count adds one unpaired "是" sample.
    """
    rng = Random(f"{base_seed}:{subtype.key}")
    n_pairs, single = divmod(count, 2)
    n_templates = len(subtype.templates)
    templates = [k % n_templates for k in range(n_pairs + single)]
    rng.shuffle(templates)
    samples, seen = [], set()
    for k, template_index in enumerate(templates):
        labels = (True, False) if k < n_pairs else (True,)
        for attempt in range(MAX_ATTEMPTS):
            draws = f"{base_seed}:{subtype.key}:{k}:{attempt}"  # the twins' shared random draws
            try:
                variants = [make_sample(Random(draws), subtype, template_index, bad) for bad in labels]
            except SampleRejected:
                continue
            events = [v["input"]["event"] for v in variants]
            if len(set(events)) == len(events) and not seen.intersection(events):
                break
        else:
            raise RuntimeError(f"{subtype.key}: could not produce a unique, valid event")
        for variant in variants:
            seen.add(variant["input"]["event"])
            if len(variants) == 2:
                variant["pair_id"] = f"{subtype.key}-{k + 1:04d}"
            samples.append(variant)
    rng.shuffle(samples)
    return samples


# ==========================================================================
# Output
# ==========================================================================
def owned_files(out_dir: Path) -> list[Path]:
    """Files in ``out_dir`` that this script writes (and may therefore delete):
    ``<subtype>.json``, ``<subtype>.jsonl`` and ``<subtype>/NNNN.json`` for the
    known subtype keys.  Nothing else is ever touched."""
    found = []
    for st in SUBTYPES:
        for suffix in (".json", ".jsonl"):
            p = out_dir / f"{st.key}{suffix}"
            if p.is_file():
                found.append(p)
        folder = out_dir / st.key
        if folder.is_dir():
            found += [p for p in folder.iterdir()
                      if p.is_file() and re.fullmatch(r"\d{4,}\.json", p.name)]
    return found


def write_subtype(out_dir: Path, subtype: Subtype, samples: list[dict]) -> list[Path]:
    if subtype.layout == "list":
        path = out_dir / f"{subtype.key}.json"
        write_json_atomic(path, samples)
        return [path]
    if subtype.layout == "jsonl":
        path = out_dir / f"{subtype.key}.jsonl"
        write_jsonl_atomic(path, samples)
        return [path]
    paths = []
    for k, sample in enumerate(samples, start=1):
        path = out_dir / subtype.key / f"{k:04d}.json"
        write_json_atomic(path, sample)
        paths.append(path)
    return paths


def print_summary(all_samples: dict[str, list[dict]], out_dir: Path, n_files: int) -> None:
    print(f"wrote {n_files} files to {out_dir}")
    print(f"{'subtype':<26}{'是':>5}{'否':>5}{'total':>7}")
    lines_all = []
    for st in SUBTYPES:
        samples = all_samples[st.key]
        yes = sum(s["output"]["judgement"] == YES for s in samples)
        print(f"{st.key:<26}{yes:>5}{len(samples) - yes:>5}{len(samples):>7}  {st.name}")
        lines_all += [s["input"]["event"].count("\n") + 1 for s in samples]
    total = sum(len(v) for v in all_samples.values())
    print(f"{'all':<26}{'':>10}{total:>7}")
    if lines_all:
        print(f"code lines: min {min(lines_all)}, median {statistics.median(lines_all):g}, "
              f"max {max(lines_all)}")


def main(argv: list[str] | None = None) -> int:
    args, _ = parse_settings(globals(), paths=("output_dir",), argv=argv)
    if args.samples_per_subtype < 1:
        raise InputError(f"--samples_per_subtype must be at least 1, got {args.samples_per_subtype}")
    out_dir = check_output_dir(Path(args.output_dir).resolve())
    all_samples = {st.key: generate_subtype(st, args.samples_per_subtype, args.seed)
                   for st in SUBTYPES}

    out_dir.mkdir(parents=True, exist_ok=True)
    stale_before = set(owned_files(out_dir))
    written: set[Path] = set()
    for st in SUBTYPES:
        written.update(write_subtype(out_dir, st, all_samples[st.key]))
    for path in sorted(stale_before - written):
        path.unlink()
    for st in SUBTYPES:  # drop per-file folders left empty by a layout change
        folder = out_dir / st.key
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    print_summary(all_samples, out_dir, len(written))
    return 0


if __name__ == "__main__":
    run_main(main)
