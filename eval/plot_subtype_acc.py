#!/usr/bin/env python
"""结果可视化 — compare the evaluation results of a baseline and improved models.

Reads two (or more) ``evaluation_results.json`` files (or their folders) written by
``eval/model_evaluation.py`` on the same test set, pairs their samples by ``id``,
and writes into ``output_dir``:

  model_comparison.png             accuracy per defect subtype, most samples first
  overall_accuracy_comparison.png  overall accuracy, with McNemar's paired test of
                                   each model against the baseline (the first file)
  type_accuracy_comparison.png     accuracy per reference judgement (defective / clean)
  pair_outcomes_comparison.png     only when the test set has twin pairs (pair_id): PrimeVul's
                                   pair outcomes P-C/P-V/P-B/P-R of every model, stacked, overall
                                   and per subtype, with McNemar's test of P-C over the pairs
  comparison_summary.md            the same numbers as Markdown tables (also printed)

Bars carry their value and a Wilson 95% interval, category labels their n.
Results without pairs (or v1 results files) give the first three charts only.

Examples:
  python eval/plot_subtype_acc.py --result1_path base/evaluation_results.json \\
      --result2_path tuned/evaluation_results.json --output_dir comparison
  python eval/plot_subtype_acc.py --results base.json lora.json full.json --labels base LoRA full
"""
from __future__ import annotations

import logging
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge.cli import Settings, parse_settings
from defect_judge.data.labels import judgement_vocabulary, majority_class, two_classes
from defect_judge.errors import InputError, run_main
from defect_judge.evaluate.metrics import metrics
from defect_judge.evaluate.pairs import OUTCOMES, pair_mcnemar, pair_results
from defect_judge.evaluate.results import load_results
from defect_judge.evaluate.results_folder import results_file
from defect_judge.evaluate.results_table import outcome_cell
from defect_judge.evaluate.verdicts import display_label, source_of_results
from defect_judge.fileio import check_output_dir, write_text_atomic
from defect_judge.report.accuracy_bars import accuracy_bar_chart
from defect_judge.report.comparison_folder import (ACCURACY_CHARTS, JUDGEMENT_CHART, OVERALL_CHART, PAIR_CHART,
                                                   SUBTYPE_CHART, SUMMARY_FILE)
from defect_judge.report.result_charts import ALL_PAIRS, pair_outcome_chart
from defect_judge.stats import mcnemar
from defect_judge.templates import JUDGEMENT_PREFIX
from defect_judge.model.run_folder import CHECKPOINT_PREFIX

# ----------------------------------------------------------------------------
# 参数配置 (edit here, or override any of them with --NAME VALUE)

result1_path = "/home/ubuntu/LLM_RL/evaluation_results_ori_0403.json"  # 基线模型结果 (evaluation_results.json or its folder)
result2_path = "/home/ubuntu/LLM_RL/evaluation_results.json"  # 改进模型结果 (evaluation_results.json or its folder)
# 多个模型: two or more evaluation_results.json files (or their folders), the baseline first (instead of result1/result2)
results = []
output_dir = "./eval/comparison"  # 图表和 comparison_summary.md 的输出目录
labels = []  # 模型名称, one per model in the order of the results files; default: the last parts of each model_path
# ----------------------------------------------------------------------------
PATHS = ("result1_path", "result2_path", "output_dir")
# A folder name that says little on its own ("checkpoint-140", a training OUTPUT_DIR called "train"): keep its parent.
GENERIC_FOLDER = re.compile(rf"^({re.escape(CHECKPOINT_PREFIX)}(-\d+)?|final|best|best_model|merged|adapter|train|"
                            r"training|output|outputs|output_dir|latest)$")

log = logging.getLogger("plot_subtype_acc")


@dataclass
class Model:
    path: Path  # the results file
    data: dict
    label: str = ""

    @property
    def correct(self) -> dict:
        return {s["id"]: bool(s["correct"]) for s in self.data["samples"]}


def results_files(args: Settings, given: set[str]) -> list[Path]:
    """The results files to compare, baseline first."""
    if args.results:
        if given & {"result1_path", "result2_path"}:
            raise InputError("give either --results or --result1_path/--result2_path, not both", field="results")
        files = [Path(p) for p in args.results]
    else:
        files = [Path(args.result1_path), Path(args.result2_path)]
    if len(files) < 2:
        raise InputError(f"at least two results files are needed for a comparison, got {len(files)} "
                         f"({', '.join(map(str, files))})", field="results")
    return files


def default_label(model_path: str, parts: int) -> str:
    """The last ``parts`` folders of a model path (one more after a generic checkpoint name)."""
    names = [p for p in Path(str(model_path)).parts if p not in ("/", "\\")] or [str(model_path)]
    if GENERIC_FOLDER.match(names[-1]):
        parts += 1
    return "/".join(names[-parts:])


def model_labels(models: list[Model], given: list[str]) -> list[str]:
    """The user's labels, else model path endings made longer until they differ."""
    if given:
        if len(given) != len(models):
            raise InputError(f"{len(given)} labels for {len(models)} results files", field="labels")
        return list(given)
    paths = [str(m.data["model_path"]) for m in models]
    sources = [source_of_results(m.data) for m in models]
    labels = [default_label(path, 1) for path in paths]
    for parts in (2, 3, 4):  # lengthen only labels shared with a different model path
        clashing = [any(labels[j] == labels[i] and paths[j] != paths[i] for j in range(len(paths)))
                    for i in range(len(paths))]
        labels = [default_label(path, parts) if clash else label
                  for path, label, clash in zip(paths, labels, clashing)]
    labels = [display_label(label, source) for label, source in zip(labels, sources)]
    counts, seen = Counter(labels), Counter()
    unique = []
    for label in labels:  # the same model evaluated twice: number the copies
        seen[label] += 1
        unique.append(f"{label} #{seen[label]}" if counts[label] > 1 else label)
    return unique


def check_same_test_set(baseline: Model, other: Model) -> None:
    """Refuse results of different test sets: pairing them would compare nothing."""
    base = {s["id"]: s for s in baseline.data["samples"]}
    them = {s["id"]: s for s in other.data["samples"]}
    only_base, only_them = sorted(set(base) - set(them), key=str), sorted(set(them) - set(base), key=str)
    if only_base or only_them:
        example = (f"id {only_base[0]!r} is in {baseline.path} but not in {other.path}" if only_base
                   else f"id {only_them[0]!r} is in {other.path} but not in {baseline.path}")
        raise InputError(f"{baseline.path} and {other.path} are results of different test sets: {example} "
                         f"({len(only_base) + len(only_them)} ids unmatched, {len(set(base) & set(them))} shared); "
                         f"compare evaluations of the same test file", field="samples")
    for sample_id, sample in base.items():
        for key in ("subtype", "reference"):
            if sample[key] != them[sample_id][key]:
                raise InputError(f"{baseline.path} and {other.path} disagree on sample {sample_id!r}: {key} "
                                 f"{sample[key]!r} vs {them[sample_id][key]!r}; they were not evaluated on the "
                                 f"same test file", field="samples")


def compared_judgements(models: list[Model]) -> list[str]:
    """The judgements the files list (a file that lists none: its references' judgement vocabulary), in the
    baseline's order, then any other reference seen."""
    vocabulary: list[str] = []
    for model in models:
        references = sorted({s["reference"] for s in model.data["samples"]})
        listed = list(model.data.get("judgements") or judgement_vocabulary(references)) + references
        for judgement in listed:
            if judgement not in vocabulary:
                vocabulary.append(judgement)
    return vocabulary


def paired_test(baseline: Model, other: Model) -> dict:
    """McNemar on the discordant pairs: fixed = baseline wrong, other right; broken = the reverse."""
    base, them = baseline.correct, other.correct
    fixed = sum(1 for i in base if not base[i] and them[i])
    broken = sum(1 for i in base if base[i] and not them[i])
    p_value, method = mcnemar(fixed, broken)
    return {"fixed": fixed, "broken": broken, "p_value": p_value, "method": method}


def percent(stats: dict) -> str:
    return f"{stats['accuracy']:.1%}" if stats["total"] else "—"


def difference(base: dict, other: dict) -> str:
    if not base["total"] or not other["total"]:
        return "—"
    return f"{100 * (other['accuracy'] - base['accuracy']):+.1f} pp"


def test_line(label: str, test: dict) -> str:
    return (f"{label}: fixed {test['fixed']}, broken {test['broken']}, "
            f"p = {test['p_value']:.4g} ({test['method']})")


def category_table(title: str, names: list[str], models: list[Model], tables: list[dict]) -> list[str]:
    """One Markdown table: n, each model's accuracy, each model's difference to the baseline."""
    header = ["n"] + [m.label for m in models] + [f"Δ {m.label}" for m in models[1:]]
    lines = [f"| {title} | " + " | ".join(header) + " |", "|---" + "|---:" * len(header) + "|"]
    for name in names:
        cells = [str(tables[0][name]["total"])] + [percent(t[name]) for t in tables]
        cells += [difference(tables[0][name], t[name]) for t in tables[1:]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(models: list[Model], subtypes: list[str], judgements: list[str], per_model: list[dict],
                     tests: list[dict]) -> str:
    baseline = models[0]
    lines = ["# Model comparison", "",
             f"- Baseline: **{baseline.label}** (`{baseline.data['model_path']}`, results `{baseline.path}`)"]
    lines += [f"- Compared: **{m.label}** (`{m.data['model_path']}`, results `{m.path}`)" for m in models[1:]]
    lines += ["", f"{per_model[0]['overall']['total']} test samples, paired by id. "
              "Accuracy with its Wilson 95% interval; Δ = model − baseline in percentage points.", "",
              "## Overall", "", "| model | accuracy | 95% CI | correct / n | invalid format | Δ vs baseline |",
              "|---|---:|---:|---:|---:|---:|"]
    for model, table in zip(models, per_model):
        o = table["overall"]
        lines.append(f"| {model.label} | {percent(o)} | {o['ci95'][0]:.1%}–{o['ci95'][1]:.1%} | "
                     f"{o['correct']} / {o['total']} | {o['invalid_format']} | "
                     f"{difference(per_model[0]['overall'], o) if model is not baseline else '—'} |")
    lines += ["", f"McNemar's test against {baseline.label} (fixed: baseline wrong, model right; broken: the reverse):", ""]
    lines += [f"- {test_line(m.label, t)}" for m, t in zip(models[1:], tests)]
    lines += ["", "## Per subtype", ""]
    lines += category_table("subtype", subtypes, models, [t["per_subtype"] for t in per_model])
    lines += ["", "## Per reference judgement", ""]
    lines += category_table("reference", judgements, models, [t["per_judgement"] for t in per_model])
    return "\n".join(lines) + "\n"


def draw_charts(out: Path, models: list[Model], subtypes: list[str], judgements: list[str], per_model: list[dict],
                tests: list[dict]) -> None:
    names = [m.label for m in models]
    accuracy_bar_chart(out / SUBTYPE_CHART, subtypes,
                       [(n, [t["per_subtype"][s] for s in subtypes]) for n, t in zip(names, per_model)],
                       title="各缺陷类型准确率对比 (accuracy per defect subtype)")
    # What always answering the most common judgement would score: the bar to beat.
    _, majority = majority_class(s["reference"] for s in models[0].data["samples"])
    note = "\n".join([f"McNemar 配对检验 vs {names[0]} (fixed: 基线错→正确, broken: 基线对→错误)"]
                     + [test_line(n, t) for n, t in zip(names[1:], tests)])
    accuracy_bar_chart(out / OVERALL_CHART, ["全部样本"], [(n, [t["overall"]]) for n, t in zip(names, per_model)],
                       title="总体准确率对比 (overall accuracy)", reference_lines=[("多数类基线", majority)],
                       note=note, horizontal=False)
    accuracy_bar_chart(out / JUDGEMENT_CHART, [f"{JUDGEMENT_PREFIX}{j}" for j in judgements],
                       [(n, [t["per_judgement"][j] for j in judgements]) for n, t in zip(names, per_model)],
                       title="不同类型样本准确率对比 (accuracy per reference judgement)")


def pair_ids(models: list[Model]) -> dict[str, str]:
    """{sample id: pair_id} from the files that carry pair_ids (a v1 file of the same test set has none,
    and takes them from the others); two files that disagree are refused."""
    found: dict[str, tuple[str, Path]] = {}
    for model in models:
        for sample in model.data["samples"]:
            pair_id = sample.get("pair_id")
            if pair_id is None:
                continue
            seen = found.setdefault(sample["id"], (pair_id, model.path))
            if seen[0] != pair_id:
                raise InputError(f"{seen[1]} and {model.path} disagree on sample {sample['id']!r}: pair_id "
                                 f"{seen[0]!r} vs {pair_id!r}; they were not evaluated on the same test file",
                                 field="samples")
    return {sample_id: pair_id for sample_id, (pair_id, _) in found.items()}


def pair_sections(models: list[Model]) -> list[dict] | None:
    """Each model's pair outcomes over the same twin pairs; None without pairs (or without a defective /
    clean judgement to tell the twins apart)."""
    ids = pair_ids(models)
    if not ids:
        return None
    references = sorted({s["reference"] for s in models[0].data["samples"]})
    classes = two_classes(judgement_vocabulary(references))
    if classes is None:
        log.warning("the samples carry pair_ids but the judgements (%s) are not two (defective / clean): no pair "
                    "outcomes", "/".join(references))
        return None
    return [pair_results([s | {"pair_id": ids[s["id"]]} if s["id"] in ids else s for s in m.data["samples"]],
                         *classes) for m in models]


def pair_test_line(label: str, test: dict) -> str:
    return (f"{label}: P-C fixed {test['fixed']}, broken {test['broken']} of {test['pairs']} pairs, "
            f"p = {test['p_value']:.4g} ({test['method']})")


def pair_markdown(models: list[Model], pairs: list[dict], tests: list[dict]) -> list[str]:
    """The pair-outcome tables: overall per model, McNemar over pairs, P-C per subtype."""
    base = pairs[0]["overall"]
    lines = ["", "## Pair outcomes (PrimeVul)", "",
             f"{base['pairs']} twin pairs (one {pairs[0]['positive']}, one {pairs[0]['negative']} sample, same "
             f"pair_id): P-C both right, P-V both called defective, P-B both called clean, P-R both reversed; an "
             f"invalid answer counts as wrong. Count (share); Δ P-C in percentage points.", "",
             "| model | pairs | " + " | ".join(OUTCOMES) + " | P-C 95% CI | with invalid | Δ P-C |",
             "|---|---:|" + "---:|" * len(OUTCOMES) + "---:|---:|---:|"]
    for index, (model, section) in enumerate(zip(models, pairs)):
        o = section["overall"]
        shares = (o["P-C"]["share"], base["P-C"]["share"])
        delta = ("—" if index == 0 else "n/a" if None in shares else f"{100 * (shares[0] - shares[1]):+.1f} pp")
        interval = "n/a" if o["P-C"]["ci95"] is None else "{:.1%}–{:.1%}".format(*o["P-C"]["ci95"])
        lines.append(f"| {model.label} | {o['pairs']} | " + " | ".join(outcome_cell(o[name]) for name in OUTCOMES)
                     + f" | {interval} | {o['with_invalid']} | {delta} |")
    failed = [model.label for model, section in zip(models, pairs) if section["overall"].get("all_invalid")]
    if failed:
        lines += ["", f"n/a: every answer of {', '.join(failed)} is invalid, so its pair outcomes say nothing."]
    lines += ["", f"McNemar's test over pairs against {models[0].label} (a pair is right when P-C; fixed: P-C for "
              "the model only, broken: for the baseline only):", ""]
    lines += [f"- {pair_test_line(m.label, t)}" for m, t in zip(models[1:], tests)]
    subtypes = sorted(pairs[0]["per_subtype"], key=lambda name: (-pairs[0]["per_subtype"][name]["pairs"], name))
    lines += ["", "P-C per subtype:", "", "| subtype | pairs | " + " | ".join(m.label for m in models) + " |",
              "|---|---:|" + "---:|" * len(models)]
    for name in subtypes:
        cells = [outcome_cell(p["per_subtype"][name]["P-C"]) if name in p["per_subtype"] else "—" for p in pairs]
        lines.append(f"| {name} | {pairs[0]['per_subtype'][name]['pairs']} | " + " | ".join(cells) + " |")
    unpaired = pairs[0]["unpaired"]["samples"]
    if unpaired:
        lines += ["", f"{unpaired} sample(s) are not half of a twin pair and are not counted here."]
    return lines


def draw_pair_chart(out: Path, models: list[Model], pairs: list[dict], tests: list[dict]) -> None:
    per_subtype = pairs[0]["per_subtype"]
    subtypes = sorted(per_subtype, key=lambda name: (-per_subtype[name]["pairs"], name))
    series = [(m.label, [p["overall"], *(p["per_subtype"].get(name) for name in subtypes)])
              for m, p in zip(models, pairs)]
    note = "\n".join([f"McNemar 配对检验 (over pairs: right = P-C) vs {models[0].label}"]
                      + [pair_test_line(m.label, t) for m, t in zip(models[1:], tests)])
    pair_outcome_chart(out / PAIR_CHART, [ALL_PAIRS, *subtypes], series,
                       title="配对结果对比 (PrimeVul pair outcomes)", note=note)


def main(argv: list[str] | None = None) -> None:
    args, given = parse_settings(globals(), paths=PATHS, argv=argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    check_output_dir(args.output_dir)
    files = results_files(args, given)
    models = [Model(results_file(path), load_results(path)) for path in files]
    for model in models[1:]:
        check_same_test_set(models[0], model)
    for model, label in zip(models, model_labels(models, args.labels)):
        model.label = label
    if not models[0].data["samples"]:
        raise InputError("the results hold no samples: nothing to compare", path=models[0].path, field="samples")

    judgements = compared_judgements(models)
    per_model = [metrics(m.data["samples"], judgements) for m in models]
    counts = Counter(s["subtype"] for s in models[0].data["samples"])
    subtypes = sorted(counts, key=lambda name: (-counts[name], name))
    tests = [paired_test(models[0], model) for model in models[1:]]
    pairs = pair_sections(models)  # before anything is written: files that disagree on a pair are refused

    out = Path(args.output_dir)
    log.info("comparing %s on %d paired samples; writing to %s", ", ".join(m.label for m in models),
             len(models[0].data["samples"]), out)
    draw_charts(out, models, subtypes, judgements, per_model, tests)
    written = list(ACCURACY_CHARTS)
    markdown = summary_markdown(models, subtypes, judgements, per_model, tests)
    if pairs and pairs[0]["overall"]["pairs"]:
        pair_tests = [pair_mcnemar(pairs[0]["outcomes"], p["outcomes"]) for p in pairs[1:]]
        draw_pair_chart(out, models, pairs, pair_tests)
        written.append(PAIR_CHART)
        markdown += "\n".join(pair_markdown(models, pairs, pair_tests)) + "\n"
    elif (out / PAIR_CHART).exists():  # an earlier comparison's: it does not belong to these results
        (out / PAIR_CHART).unlink()
    write_text_atomic(out / SUMMARY_FILE, markdown)
    print(markdown)
    for name in [*written, SUMMARY_FILE]:
        log.info("wrote %s", out / name)


if __name__ == "__main__":
    run_main(main)
