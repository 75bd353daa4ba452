#!/usr/bin/env python
"""经典基线 — a TF-IDF + logistic-regression defect judge: the bar a fine-tuned LLM must clear.

Reads the same chat JSONL splits as training and evaluation, and judges each
test sample from the code alone:

  features   TF-IDF of code-token n-grams of the event (identifiers, numbers and
             operators such as <=, ->, != are tokens), plus the subtype
  model      logistic regression (scikit-learn), fitted on train_dataset_path;
             its regularisation C is chosen on dev_dataset_path (highest dev
             accuracy, ties broken by the lower dev log-loss), never on the test set
  output     OUTPUT_DIR/evaluation_results.json in the schema of
             eval/model_evaluation.py (mode "tfidf-logreg", per-sample
             probabilities, ROC-AUC, VD-S, pair outcomes when the test records
             carry pair_id), subtype_accuracy.png, roc_curve.png and
             pair_outcomes.png, so eval/plot_subtype_acc.py compares it with any LLM

Two uses. The bar: a fine-tuned LLM that does not beat it has learned nothing a
bag of words could not. The alarm: a bag of words that is right 90% of the time
means the data gives the answer away (names, comments, one side longer), and an
LLM's high accuracy on it proves little.

Runs in seconds on a CPU. Examples:
  python eval/baseline.py
  python eval/baseline.py --train_dataset_path runs/demo/latest/data/train.jsonl \\
      --dev_dataset_path runs/demo/latest/data/dev.jsonl --test_dataset_path runs/demo/latest/data/test.jsonl
  python eval/baseline.py --dev_dataset_path ""      # no dev split: choose C by 5-fold cross-validation
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge.cli import parse_settings
from defect_judge.data.labels import (check_record_judgements, judgement_vocabulary, labelled_records,
                                      positive_judgement)
from defect_judge.data.schema import Record, read_records
from defect_judge.errors import InputError, run_main
from defect_judge.evaluate.metrics import class_scores
from defect_judge.evaluate.pairs import check_record_pairs
from defect_judge.fileio import file_sha256
from defect_judge.evaluate.results import results_document
from defect_judge.evaluate.results_folder import RESULTS_FILE
from defect_judge.evaluate.results_table import format_results_table
from defect_judge.fileio import check_output_dir, write_json_atomic
from defect_judge.report.result_charts import result_charts
from defect_judge.templates import event_char_span

# ----------------------------------------------------------------------------
# 参数配置 (edit here, or override any of them with --name value)

TRAIN_DATASET_PATH = "./dataset/train.jsonl"  # training split (chat JSONL): fits the classifier
# dev split (chat JSONL): chooses C; empty: 5-fold cross-validation on the training split
DEV_DATASET_PATH = "./dataset/dev.jsonl"
TEST_DATASET_PATH = "./dataset/test.jsonl"  # test split (chat JSONL): the reported accuracy
OUTPUT_DIR = "./eval/output/baseline"  # folder for evaluation_results.json and subtype_accuracy.png
NGRAM_MAX = 3  # code-token n-grams of length 1..NGRAM_MAX
C_GRID = [0.01, 0.1, 1.0, 10.0, 100.0]  # logistic regression's inverse regularisation strengths tried on dev
# warn when dev or test accuracy reaches this: a bag of words that good means the data gives the answer away
LEAK_ALARM = 0.9
# VD-S (the miss rate at a false-positive rate of at most this) is reported at this level and at PrimeVul's 0.005
VDS_FPR = 0.05
# ----------------------------------------------------------------------------
PATHS = ("train_dataset_path", "dev_dataset_path", "test_dataset_path", "output_dir")
MODE = "tfidf-logreg"
MODEL_NAME = "TF-IDF + logistic regression"
CV_FOLDS = 5
# Code tokens: identifiers, numbers, two- and three-character operators, then any other single symbol.
CODE_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+(?:\.\d+)?|<<=|>>=|->|\+\+|--|==|!=|<=|>=|&&|\|\||<<|>>|[+\-*/%&|^]=|\S")

log = logging.getLogger("baseline")


def code_tokens(text: str) -> list[str]:
    return CODE_TOKEN.findall(text)


def event_text(record: Record) -> str:
    start, end = event_char_span(record.user)
    return record.user[start:end]


def group_key(record: Record) -> str:
    """Samples that must stay on one side of a cross-validation fold: twins, and copies of one event."""
    return f"pair:{record.pair_id}" if record.pair_id is not None else f"event:{event_text(record)}"


def read_labelled(path: str) -> list[Record]:
    """The split's records, every one with its reference judgement (labels.labelled_records: one without is
    refused, named by file and sample)."""
    return labelled_records(read_records(path), path)[0]


class Classifier:
    """TF-IDF code n-grams of the event next to a one-hot subtype, into a logistic regression."""

    def __init__(self, ngram_max: int, c: float):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import OneHotEncoder

        self.code = TfidfVectorizer(tokenizer=code_tokens, token_pattern=None, lowercase=False,
                                    ngram_range=(1, ngram_max), sublinear_tf=True)
        self.subtype = OneHotEncoder(handle_unknown="ignore")
        self.model = LogisticRegression(C=c, max_iter=5000)

    def _features(self, records: list[Record], fit: bool):
        from scipy.sparse import hstack

        events, subtypes = [event_text(r) for r in records], [[r.subtype] for r in records]
        if fit:
            return hstack([self.code.fit_transform(events), self.subtype.fit_transform(subtypes)]).tocsr()
        return hstack([self.code.transform(events), self.subtype.transform(subtypes)]).tocsr()

    def fit(self, records: list[Record]) -> "Classifier":
        self.model.fit(self._features(records, fit=True), [r.judgement for r in records])
        return self

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes_)

    @property
    def n_features(self) -> int:
        return len(self.code.vocabulary_) + len(self.subtype.categories_[0])

    def probabilities(self, records: list[Record]):
        return self.model.predict_proba(self._features(records, fit=False))


def choose_c(train: list[Record], dev: list[Record] | None, args) -> tuple[float, list[dict]]:
    """C with the highest dev accuracy (ties: lower dev log-loss); k-fold cross-validation without a dev split."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    trials = []
    for c in args.c_grid:
        if dev:
            model = Classifier(args.ngram_max, c).fit(train)
            truth, classes, probabilities = [r.judgement for r in dev], model.classes, model.probabilities(dev)
        else:
            labels = [r.judgement for r in train]
            classes = sorted(set(labels))
            # Folds by pair (and by event), as the split keeps them: a sample held out while its twin, the same
            # code with the other label, is fitted would be scored far below chance.
            groups = [group_key(r) for r in train]
            folds = StratifiedGroupKFold(n_splits=max(2, min(CV_FOLDS, len(set(groups)))), shuffle=True,
                                         random_state=0)
            truth, probabilities = [], []
            for fit_part, held_out in folds.split(labels, labels, groups):
                model = Classifier(args.ngram_max, c).fit([train[i] for i in fit_part])
                truth += [labels[i] for i in held_out]
                probabilities.append(model.probabilities([train[i] for i in held_out]))
            probabilities = np.vstack(probabilities)
        trials.append({"C": c, **class_scores(truth, probabilities, classes)})
    best = max(trials, key=lambda t: (t["accuracy"], -t["log_loss"]))
    return best["C"], trials


def warn_single_judgement_dev(dev: list[Record], path: str) -> None:
    """Dev accuracy on one judgement rewards the C that predicts it most often, not the one that judges best."""
    judgements = sorted({r.judgement for r in dev})
    if len(judgements) == 1:
        log.warning("dev split %s holds a single judgement (%s, all %d samples): its accuracy rewards the C that "
                    "predicts %s most often, not the one that judges best; write a dev split with both judgements "
                    "(dataset/convert_and_split.py stratifies by judgement), or pass --dev_dataset_path \"\" to "
                    "choose C by cross-validation on the training split", path, judgements[0], len(dev), judgements[0])


def warn_c_on_grid_edge(c: float, grid: list[float], chosen_on: str) -> None:
    """A C at the end of its grid may only be the best of the values tried: the optimum can lie beyond it."""
    if len(set(grid)) < 2 or min(grid) < c < max(grid):
        return
    end, beyond = ("largest", c * 10) if c == max(grid) else ("smallest", c / 10)
    extended = " ".join(f"{g:g}" for g in sorted({*grid, beyond}))
    log.warning("the chosen C=%g is the %s value of --c_grid [%s] (chosen on %s): the best C may lie beyond the "
                "grid; extend it past %g and rerun (e.g. --c_grid %s)", c, end, ", ".join(f"{g:g}" for g in grid),
                chosen_on, c, extended)


def predict_rows(model: Classifier, test: list[Record]) -> list[dict]:
    rows = []
    for record, probabilities in zip(test, model.probabilities(test)):
        by_class = {c: float(p) for c, p in zip(model.classes, probabilities)}
        prediction = max(by_class, key=by_class.get)
        pair = {} if record.pair_id is None else {"pair_id": record.pair_id}
        rows.append({"id": record.id, "subtype": record.subtype, **pair, "reference": record.judgement,
                     "prediction": prediction, "correct": prediction == record.judgement,
                     "probabilities": by_class})
    return rows


def main(argv: list[str] | None = None) -> None:
    args, _ = parse_settings(globals(), paths=PATHS, argv=argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.ngram_max < 1:
        raise InputError(f"ngram_max must be at least 1, got {args.ngram_max}", field="ngram_max")
    if not args.c_grid or min(args.c_grid) <= 0:
        raise InputError(f"c_grid must hold values greater than 0, got {args.c_grid}", field="c_grid")
    if not 0 < args.vds_fpr < 1:
        raise InputError(f"vds_fpr must be a false-positive rate between 0 and 1, got {args.vds_fpr}", field="vds_fpr")
    check_output_dir(args.output_dir)
    train, test = read_labelled(args.train_dataset_path), read_labelled(args.test_dataset_path)
    if args.dev_dataset_path and not Path(args.dev_dataset_path).is_file():
        raise InputError("dev split not found (write one with dataset/convert_and_split.py, or pass "
                         "--dev_dataset_path \"\" to choose C by cross-validation on the training split)",
                         path=args.dev_dataset_path)
    dev = read_labelled(args.dev_dataset_path) if args.dev_dataset_path else None
    check_record_judgements((train, args.train_dataset_path), (dev or [], args.dev_dataset_path),
                            (test, args.test_dataset_path))
    if dev:
        warn_single_judgement_dev(dev, args.dev_dataset_path)
    if len({r.judgement for r in train}) < 2:
        raise InputError("the training split holds a single judgement: nothing to learn", path=args.train_dataset_path)
    c, trials = choose_c(train, dev, args)
    chosen_on = f"dev split {args.dev_dataset_path}" if dev else f"{CV_FOLDS}-fold cross-validation on train"
    for trial in trials:
        log.info("C=%g: %s accuracy %.3f, log-loss %.3f%s", trial["C"], "dev" if dev else "cv", trial["accuracy"],
                 trial["log_loss"], "  <- chosen" if trial["C"] == c else "")
    warn_c_on_grid_edge(c, args.c_grid, chosen_on)
    model = Classifier(args.ngram_max, c).fit(train)
    rows = predict_rows(model, test)
    judgements = judgement_vocabulary(r.judgement for r in [*train, *test])
    check_record_pairs(test, args.test_dataset_path, positive_judgement(judgements)[0])
    settings = vars(args) | {
        "chosen_C": c, "chosen_on": chosen_on, "trials": trials, "train_samples": len(train),
        "train_sha256": file_sha256(args.train_dataset_path), "features": model.n_features}
    results = results_document(model_path=MODEL_NAME, model_kind="classical_baseline",
                               test_dataset_path=str(args.test_dataset_path), mode=MODE, settings=settings,
                               judgements=judgements, samples=rows, vds_fpr=args.vds_fpr)
    output_dir = Path(args.output_dir)
    write_json_atomic(output_dir / RESULTS_FILE, results)
    charts = result_charts(output_dir, results)
    print(format_results_table(results))
    best_dev = max(t["accuracy"] for t in trials)
    if max(best_dev, results["overall"]["accuracy"]) >= args.leak_alarm:
        log.warning("a bag of code n-grams is right on %.0f%% (%s) and %.0f%% (test): the data may give the answer "
                    "away (names, comments, length); an LLM's accuracy on it proves little",
                    100 * best_dev, "dev" if dev else "cv", 100 * results["overall"]["accuracy"])
    log.info("wrote %s", ", ".join(str(p) for p in [output_dir / RESULTS_FILE, *charts]))


if __name__ == "__main__":
    run_main(main)
