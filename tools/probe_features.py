#!/usr/bin/env python
"""Linear probe of a frozen model: can the base model's hidden states tell defective code from clean at all?

Runs the base model (no training) over every prompt of the training split and of a held-out split
(TEST_DATASET_PATH: dev by default), exactly as evaluation renders them, and fits a logistic
regression (scikit-learn) on the hidden states of chosen layers, pooled two ways:

  mean   the average over every prompt token: what the model has read, wherever it is
  last   the prompt's last token (after the chat template's assistant header): the position a
         generative judge answers from

Regularisation C is chosen by cross-validation over whole twin pairs on the training split; the
held-out split is only scored. When the mean pool is well above chance and the last token is not, the
information is in the model and a fine-tuned judge still has to learn to gather it where it answers:
a matter of training data and steps rather than of the model. When both stay at chance, this model
cannot see the difference without changing its lower layers.

Forward passes only: about 0.6 s per sample for the embedded model on a 2-core CPU.

Example (the shipped half of the table in instruct_fine_tuning/readme.md; the probe is scored on dev, so
the test split stays unread for a later honest report):
  python tools/probe_features.py --train_dataset_path dataset/train.jsonl \\
      --test_dataset_path dataset/dev.jsonl --layers 0.17 0.33 0.5 0.67 0.83 1.0 --json runs/probe/shipped_dev.json
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge.chat import render_prompt
from defect_judge.cli import parse_settings
from defect_judge.errors import InputError, run_main
from defect_judge.fileio import write_json_atomic
from defect_judge.modeling import check_model_folder, load_causal_lm, load_tokenizer
from defect_judge.results import positive_judgement
from defect_judge.schema import Record, read_records

# ----------------------------------------------------------------------------
MODEL_PATH = "./models/SmolLM2-135M-Instruct"  # the frozen model to probe (folder, safetensors)
# training split (chat JSONL): fits the probe (C by cross-validation over whole pairs)
TRAIN_DATASET_PATH = "./dataset/train.jsonl"
# held-out split (chat JSONL) that scores the probe: dev by default, so that the test split stays unread
TEST_DATASET_PATH = "./dataset/dev.jsonl"
LAYERS = [0.33, 0.67, 1.0]  # layers to probe, as fractions of the depth (1.0: the last layer)
C_GRID = [0.01, 0.1, 1.0]  # logistic regression's C (the features are standardised)
JSON = ""  # also write the table here
# ----------------------------------------------------------------------------
PATHS = ("model_path", "train_dataset_path", "test_dataset_path", "json")
POOLINGS = ("mean", "last")
CV_FOLDS = 5

log = logging.getLogger("probe_features")


def layer_indices(fractions: list[float], depth: int) -> list[int]:
    """Hidden-state indices (1..depth: the output of that layer) for fractions of the depth."""
    return sorted({min(depth, max(1, round(f * depth))) for f in fractions})


def labels(records: list[Record], path: str) -> list[int]:
    judgements = sorted({r.judgement for r in records if r.judgement is not None})
    positive, _ = positive_judgement(judgements)
    if positive is None:
        raise InputError(f"needs two judgements, one of them meaning defective; found {judgements}", path=path)
    missing = next((r for r in records if r.judgement is None), None)
    if missing is not None:
        raise InputError("the reference answer has no judgement (判断:…)", path=path, line=missing.line,
                         sample=missing.id, field="text")
    return [int(r.judgement == positive) for r in records]


def pooled_states(model, tokenizer, records: list[Record], layers: list[int], desc: str):
    """{(layer, pooling): [samples x hidden]} of the prompts as evaluation renders them."""
    import numpy as np
    import torch
    from tqdm import tqdm

    features = {(layer, pooling): [] for layer in layers for pooling in POOLINGS}
    for record in tqdm(records, desc=desc, unit="sample"):
        text = render_prompt(tokenizer, record.prompt_messages)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.inference_mode():
            hidden = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states
        for layer in layers:
            states = hidden[layer][0].float()
            features[(layer, "mean")].append(states.mean(0).numpy())
            features[(layer, "last")].append(states[-1].numpy())
    return {key: np.stack(rows) for key, rows in features.items()}


def group_of(record: Record) -> str:
    return record.pair_id if record.pair_id is not None else record.id


def probe(train_x, train_y, groups, test_x, test_y, c_grid: list[float]) -> dict:
    """C chosen by cross-validation over whole pairs, then fitted on all of train and scored on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = StratifiedGroupKFold(n_splits=max(2, min(CV_FOLDS, len(set(groups)))), shuffle=True, random_state=0)

    def model(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))

    cv = {c: float(cross_val_score(model(c), train_x, train_y, groups=groups, cv=folds).mean()) for c in c_grid}
    best = max(c_grid, key=lambda c: (cv[c], -c))
    fitted = model(best).fit(train_x, train_y)
    scores = fitted.predict_proba(test_x)[:, 1]
    return {"C": best, "cv_accuracy": cv[best], "accuracy": float(((scores > 0.5) == test_y).mean()),
            "roc_auc": float(roc_auc_score(test_y, scores)) if len(set(test_y)) == 2 else None}


def main() -> None:
    args, _ = parse_settings(globals(), paths=PATHS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import numpy as np
    import torch

    train, test = read_records(args.train_dataset_path), read_records(args.test_dataset_path)
    train_y = np.array(labels(train, args.train_dataset_path))
    test_y = np.array(labels(test, args.test_dataset_path))
    check_model_folder(args.model_path)
    tokenizer = load_tokenizer(args.model_path)
    model = load_causal_lm(args.model_path, dtype=torch.float32).eval()
    layers = layer_indices(args.layers, model.config.num_hidden_layers)
    log.info("probing layers %s of %d; %d training and %d test samples", layers, model.config.num_hidden_layers,
             len(train), len(test))
    train_x = pooled_states(model, tokenizer, train, layers, "train")
    test_x = pooled_states(model, tokenizer, test, layers, "test")
    groups = [group_of(r) for r in train]
    rows = [{"layer": layer, "pooling": pooling,
             **probe(train_x[(layer, pooling)], train_y, groups, test_x[(layer, pooling)], test_y, args.c_grid)}
            for layer in layers for pooling in POOLINGS]
    print(f"{'layer':>5}  {'pooling':7}  {'C':>5}  {'cv acc':>6}  {'test acc':>8}  {'AUC':>5}")
    for row in rows:
        auc = "n/a" if row["roc_auc"] is None else f"{row['roc_auc']:.3f}"
        print(f"{row['layer']:>5}  {row['pooling']:7}  {row['C']:>5g}  {row['cv_accuracy']:>6.3f}  "
              f"{row['accuracy']:>8.3f}  {auc:>5}")
    if args.json:
        write_json_atomic(args.json, {"model_path": str(args.model_path), "train": str(args.train_dataset_path),
                                      "test": str(args.test_dataset_path), "train_samples": len(train),
                                      "test_samples": len(test), "rows": rows})


if __name__ == "__main__":
    run_main(main)
