#!/usr/bin/env python
"""Linear probe of a frozen model: can the base model's hidden states tell defective code from clean at all?

Runs the base model (no training) over every prompt of the training split and of a held-out split
(TEST_DATASET_PATH: dev by default), exactly as evaluation renders them, and fits one verdict head
(defect_judge/train/probe.py: standardised features, then a linear probe) per spec in HEADS and probe
in PROBES_TO_FIT (logistic regression, or LDA with shrinkage):

  mean@L   the average over every prompt token of layer L's output: what the model has read, wherever it is
  last@L   the prompt's last token (after the chat template's assistant header): where a generative judge
           answers from
  L is a layer index (15), a fraction of the depth (0.5) or several of them concatenated (8,12,16,20,24).

The probe's regularisation (C, or LDA's shrinkage) is chosen by cross-validation over whole twin pairs on
the training split; the held-out split is only scored, with the majority class and an exact binomial test
beside it. NESTED_CV > 0 also scores each probe as a procedure, without a held-out split: nested
cross-validation over whole pairs on train + held-out together (NESTED_FOLDS folds, repeated NESTED_CV times with
other shuffles; the regularisation chosen inside each training part as training chooses it). With dev as the
held-out split this is how to choose a head recipe on more than dev's few samples and never on test.
TRAIN_FRACTIONS below 1 make it a learning curve: each nested training part cut to that fraction of its pairs.
An accuracy still rising at 1.0 says the head is bound by the training data, not by the model. When the
mean pool is well above chance and the last token is not, the information is in the model and a
generative judge still has to learn to gather it where it answers; a verdict head reads it where it is
(train_lora.py --verdict_head). When both stay at chance, this model cannot see the difference.

Features are computed once for every layer the specs name, each forward pass stopping after the highest.

Examples (the tables in instruct_fine_tuning/readme.md; scored on dev, so the test split stays unread):
  python tools/probe_features.py --train_dataset_path dataset/train.jsonl \\
      --test_dataset_path dataset/dev.jsonl --json runs/probe/shipped_dev.json
  python tools/probe_features.py --heads mean@0.5 mean@0.33,0.5,0.67 --nested_cv 3
  python tools/probe_features.py --heads mean@0.33,0.5,0.67 --probes_to_fit lda --nested_cv 3 \\
      --train_fractions 0.25 0.5 0.75 1.0
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge.model.chat import render_prompt
from defect_judge.cli import parse_settings
from defect_judge.errors import InputError, run_main
from defect_judge.evaluate.metrics import decision_accuracy
from defect_judge.fileio import write_json_atomic
from defect_judge.model.loading import check_model_folder, load_causal_lm, load_tokenizer
from defect_judge.data.labels import is_labelled, labelled_records, majority_class, positive_judgement
from defect_judge.data.schema import Record, read_records
from defect_judge.stats import binomial_p_above
from defect_judge.model.hidden_states import pooled_prompt_features
from defect_judge.model.verdict_head import HeadSpec
from defect_judge.train.linear_probe import ProbeFit, fit_probe
from defect_judge.train.probe import DEFAULT_C_GRID, DEFAULT_SHRINKAGE_GRID, PROBES, ProbeDataError, probe_grid

# ----------------------------------------------------------------------------
MODEL_PATH = "./models/SmolLM2-135M-Instruct"  # the frozen model to probe (folder, safetensors)
# training split (chat JSONL): fits each probe (C by cross-validation over whole pairs)
TRAIN_DATASET_PATH = "./dataset/train.jsonl"
# held-out split (chat JSONL) that scores the probes: dev by default, so that the test split stays unread
TEST_DATASET_PATH = "./dataset/dev.jsonl"
# the probes, as verdict-head specs POOLING@LAYERS (layers: indices, or fractions of the depth)
HEADS = ["mean@0.33", "mean@0.5", "mean@0.67", "mean@1.0", "last@0.5", "last@1.0", "mean@0.27,0.4,0.53,0.67,0.8"]
PROBES_TO_FIT = ["logistic", "lda"]  # each head fitted as each of these probes (train/probe.py)
C_GRID = list(DEFAULT_C_GRID)  # logistic regression's C (the features are standardised)
SHRINKAGE_GRID = list(DEFAULT_SHRINKAGE_GRID)  # LDA's shrinkage, in [0, 1]
NESTED_CV = 0  # > 0: also nested cross-validation over train + held-out (NESTED_FOLDS folds), repeated this many times
NESTED_FOLDS = 8  # the folds of each nested cross-validation (whole pairs held out together)
# nested CV only: each training part cut to these fractions of its pairs (0.25 0.5 0.75 1.0: a learning curve)
TRAIN_FRACTIONS = [1.0]
JSON = ""  # also write the table here
# ----------------------------------------------------------------------------
PATHS = ("model_path", "train_dataset_path", "test_dataset_path", "json")

log = logging.getLogger("probe_features")


def labels(records: list[Record], path: str) -> list[int]:
    judgements = sorted({r.judgement for r in records if is_labelled(r)})
    positive, _ = positive_judgement(judgements)
    if positive is None:
        raise InputError(f"needs two judgements, one of them meaning defective; found {judgements}", path=path)
    labelled_records(records, path)  # a record without a judgement is refused
    return [int(r.judgement == positive) for r in records]


def prompt_ids(tokenizer, records: list[Record]) -> list[list[int]]:
    return [tokenizer(render_prompt(tokenizer, r.prompt_messages), add_special_tokens=False)["input_ids"]
            for r in records]


def group_of(record: Record) -> str:
    return record.pair_id if record.pair_id is not None else record.id


def columns(features, all_layers: list[int], layers: tuple[int, ...], hidden: int):
    """The blocks of ``layers`` out of features computed for ``all_layers``."""
    import numpy as np

    return np.concatenate([features[:, all_layers.index(l) * hidden:(all_layers.index(l) + 1) * hidden]
                           for l in layers], axis=1)


def grid_flag(probe: str) -> str:
    """This tool's setting for ``probe``'s candidates: --c_grid or --shrinkage_grid."""
    return f"--{PROBES[probe].parameter.lower()}_grid"


def probe_fit(x, y, groups, probe: str, grid, **held_out) -> ProbeFit:
    """``fit_probe``; data the probe cannot be fitted on is refused in one line naming this tool's settings."""
    try:
        return fit_probe(x, y, groups, probe=probe, grid=grid, **held_out)
    except ProbeDataError as error:
        hint = f": give a single value ({grid_flag(probe)} {error.value:g})" if error.setting == "grid" else ""
        raise InputError(f"{error}{hint}") from None


def probe_row(spec: HeadSpec, layers: tuple[int, ...], fit: ProbeFit, test_y) -> dict:
    """One table row: the probe's choice on train and its scores on the held-out split."""
    held_out, parameter = fit.report["dev"], fit.report["parameter"]
    correct = round(held_out["accuracy"] * len(test_y))
    _, majority = majority_class(test_y)
    chosen = next(row for row in fit.report["grid"] if row[parameter] == fit.report[parameter])
    return {"head": str(spec), "layers": list(layers), "pooling": spec.pooling, "probe": fit.report["probe"],
            "parameter": parameter, "value": fit.report[parameter], "cv_accuracy": chosen["accuracy"],
            "accuracy": held_out["accuracy"], "correct": correct, "samples": len(test_y),
            "roc_auc": held_out["roc_auc"], "majority": majority,
            "p_value": binomial_p_above(correct, len(test_y), majority)}


def nested_cv_curve(x, y, groups, probe: str, grid, repeats: int, folds: int,
                    fractions: Sequence[float] = (1.0,)) -> list[dict]:
    """The whole fitting procedure's accuracy on held-out whole pairs (the regularisation chosen inside each
    training part, as training chooses it), averaged over the folds of every repeat; one row per fraction of
    each training part's pairs kept (drawn at random, the same draw for every probe)."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    from tqdm.auto import tqdm

    x, y, groups = np.asarray(x), np.asarray(y), np.asarray(groups)
    splits = [split for seed in range(repeats)
              for split in StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y, groups)]
    scores: dict[float, list[tuple[int, float]]] = {fraction: [] for fraction in fractions}
    for index, (train, held) in enumerate(tqdm(splits, desc=f"nested cv ({probe})", unit="fold")):
        pairs = np.unique(groups[train])
        order = np.random.default_rng(index).permutation(len(pairs))
        for fraction in fractions:
            kept = train[np.isin(groups[train], pairs[order[:max(1, round(fraction * len(pairs)))]])]
            fit = probe_fit(x[kept], y[kept], groups[kept], probe, grid)
            scores[fraction].append((len(kept), decision_accuracy(y[held], fit.probabilities(x[held]))))
    return [{"fraction": fraction, "train_samples": float(np.mean([n for n, _ in rows])),
             "accuracy": float(np.mean([a for _, a in rows]))} for fraction, rows in scores.items()]


def main() -> None:
    args, _ = parse_settings(globals(), paths=PATHS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import numpy as np
    import torch

    specs = [HeadSpec.parse(text, field="heads") for text in args.heads]
    unknown = [p for p in args.probes_to_fit if p not in PROBES]
    if unknown or not args.probes_to_fit:
        raise InputError(f"probes_to_fit: expected some of {', '.join(PROBES)}, got {args.probes_to_fit}")
    for probe in args.probes_to_fit:
        problem = PROBES[probe].grid_problem(probe_grid(probe, args.c_grid, args.shrinkage_grid))
        if problem:
            raise InputError(f"{grid_flag(probe)} {problem}")
    fractions = sorted(set(args.train_fractions) | {1.0})
    if not all(0 < f <= 1 for f in fractions):
        raise InputError(f"train_fractions: expected fractions in (0, 1], got {args.train_fractions}")
    if len(fractions) > 1 and args.nested_cv < 1:
        raise InputError("train_fractions: a learning curve is drawn by the nested cross-validation: pass "
                         "--nested_cv N")
    train, test = read_records(args.train_dataset_path), read_records(args.test_dataset_path)
    train_y, test_y = labels(train, args.train_dataset_path), labels(test, args.test_dataset_path)
    check_model_folder(args.model_path)
    tokenizer = load_tokenizer(args.model_path)
    model = load_causal_lm(args.model_path, dtype=torch.float32).eval()
    depth, hidden = model.config.num_hidden_layers, model.config.hidden_size
    all_layers = sorted({layer for spec in specs for layer in spec.layer_indices(depth)})
    poolings = sorted({spec.pooling for spec in specs})
    log.info("probing %d head(s) over layers %s of %d; %d training and %d held-out samples (%s)", len(specs),
             all_layers, depth, len(train), len(test), args.test_dataset_path)
    train_x = pooled_prompt_features(model, prompt_ids(tokenizer, train), all_layers, poolings, progress=True,
                                     desc="train")
    test_x = pooled_prompt_features(model, prompt_ids(tokenizer, test), all_layers, poolings, progress=True,
                                    desc="held-out")
    groups = [group_of(r) for r in train]
    rows = []
    for spec in specs:
        layers = spec.layer_indices(depth)
        train_cols = columns(train_x[spec.pooling].numpy(), all_layers, layers, hidden)
        test_cols = columns(test_x[spec.pooling].numpy(), all_layers, layers, hidden)
        for probe in args.probes_to_fit:
            grid = probe_grid(probe, args.c_grid, args.shrinkage_grid)
            fit = probe_fit(train_cols, train_y, groups, probe, grid, dev_x=test_cols, dev_y=test_y)
            rows.append(probe_row(spec, layers, fit, test_y))
            if args.nested_cv > 0:
                log.info("nested cross-validation of %s, %s probe (%d x %d folds)", spec, probe, args.nested_cv,
                         args.nested_folds)
                curve = nested_cv_curve(np.concatenate([train_cols, test_cols]), train_y + test_y,
                                        groups + [group_of(r) for r in test], probe, grid, args.nested_cv,
                                        args.nested_folds, fractions)
                rows[-1]["nested_cv_accuracy"] = curve[-1]["accuracy"]
                if len(curve) > 1:
                    rows[-1]["learning_curve"] = curve
    nested = args.nested_cv > 0
    print(f"{'head':32}  {'probe':8}  {'regularisation':>16}  {'cv acc':>6}  {'held-out acc':>14}  {'AUC':>5}  "
          f"{'p vs majority':>13}" + ("  nested cv acc" if nested else ""))
    for row in rows:
        auc = "n/a" if row["roc_auc"] is None else f"{row['roc_auc']:.3f}"
        print(f"{row['head'] + ' (' + ','.join(map(str, row['layers'])) + ')':32}  {row['probe']:8}  "
              f"{row['parameter'] + ' ' + format(row['value'], 'g'):>16}  {row['cv_accuracy']:>6.3f}  "
              f"{row['correct']:>3}/{row['samples']:<3} {row['accuracy']:>6.3f}  {auc:>5}  {row['p_value']:>13.2g}"
              + (f"  {row['nested_cv_accuracy']:>14.3f}" if nested else ""))
    print(f"majority class on {args.test_dataset_path}: {rows[0]['majority']:.3f}" if rows else "no heads")
    for row in rows:
        if "learning_curve" in row:
            points = (f"{point['train_samples']:.0f} -> {point['accuracy']:.3f}" for point in row["learning_curve"])
            print(f"learning curve, {row['head']} {row['probe']} (nested cv accuracy by training samples): "
                  + ", ".join(points))
    if args.json:
        write_json_atomic(args.json, {"model_path": str(args.model_path), "train": str(args.train_dataset_path),
                                      "held_out": str(args.test_dataset_path), "train_samples": len(train),
                                      "held_out_samples": len(test), "rows": rows})


if __name__ == "__main__":
    run_main(main)
