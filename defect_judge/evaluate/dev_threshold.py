"""The decision threshold chosen on the dev split (``--threshold_from``): where it comes from, the checks that it fits
the model and test split it is applied to, and the threshold itself.

``--threshold_from`` names the dev split's ``evaluation_results.json`` of the same model (or the folder holding it),
or the dev ``.jsonl``, which ``eval/model_evaluation.py`` then scores first into ``OUTPUT_DIR/threshold_dev``
(``results_folder.THRESHOLD_DEV_FOLDER``). Everything is checked before any model runs, so a mistake shows at
once. The script passes in what only it has: how it reads a split and how it evaluates one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from defect_judge.data.labels import positive_judgement
from defect_judge.data.schema import Record
from defect_judge.cli import Settings
from defect_judge.errors import InputError
from defect_judge.evaluate.results import load_results
from defect_judge.evaluate.results_folder import RESULTS_FILE, THRESHOLD_DEV_FOLDER, results_file
from defect_judge.evaluate.thresholds import choose_threshold, positive_scores, threshold_text
from defect_judge.fileio import same_folder

log = logging.getLogger(__name__)

# (path, limit, skip_unlabelled) -> (records, judgement vocabulary, ids skipped for no judgement)
ReadSplit = Callable[[str, int, bool], tuple[list[Record], list[str], list[str]]]
# (settings of the dev run, its records, the ids skipped) -> its results on rank 0, None on the others
EvaluateSplit = Callable[[Settings, list[Record], list[str]], "dict | None"]


@dataclass(frozen=True)
class ThresholdSource:
    """Where --threshold_from points: a dev JSONL to score first, or a dev evaluation_results.json."""
    path: Path
    records: list[Record] | None = None  # the dev records, when it is a JSONL file
    skipped: tuple[str, ...] = ()
    results: dict | None = None  # the dev results, when it is an evaluation_results.json


@dataclass(frozen=True)
class EvaluatedModel:
    """What dev results must share with this evaluation: the model's weights and the verdict head's."""
    weights_path: Path
    head_sha256: str | None = None
    head_path: Path | None = None


def threshold_source(args: Settings, test_records: list[Record], vocabulary: list[str],
                     model: EvaluatedModel, *, has_head: bool, read_split: ReadSplit) -> ThresholdSource | None:
    """Read and check --threshold_from before any model runs: a mistake shows at once."""
    if not args.threshold_from:
        return None
    if args.mode != "score" and not has_head:
        raise InputError("--threshold_from needs --mode score (or a verdict head): a threshold applies to scores, "
                         "and generated answers have none", field="threshold_from")
    if len(vocabulary) != 2:
        raise InputError(f"a decision threshold needs two judgements (defective / clean), the test set has "
                         f"{'/'.join(vocabulary)}", field="threshold_from")
    path = results_file(args.threshold_from)
    if not path.exists():
        raise InputError("--threshold_from not found (the dev split's evaluation_results.json, or dev .jsonl)",
                         path=path, field="threshold_from")
    test_ids = {r.id for r in test_records}
    if path.suffix.lower() == ".jsonl":
        if path.resolve() == Path(args.test_dataset_path).resolve():
            raise InputError("--threshold_from names the test split itself: choose the threshold on the dev split",
                             path=path, field="threshold_from")
        records, dev_vocabulary, skipped = read_split(str(path), 0, args.skip_unlabelled)
        check_dev_split(path, [r.id for r in records], test_ids, dev_vocabulary, vocabulary)
        return ThresholdSource(path, records, tuple(skipped))
    results = load_results(path)
    check_dev_results(path, results, test_ids, vocabulary, model)
    return ThresholdSource(path, results=results)


def check_dev_split(path: Path, dev_ids: list[str], test_ids: set[str], dev_vocabulary: list[str],
                    vocabulary: list[str]) -> None:
    """A dev split shares no sample with the test split, and its judgements are the test's."""
    shared = [i for i in dev_ids if i in test_ids]
    if shared:
        raise InputError(f"{len(shared)} of its samples are in the test split too (e.g. {shared[0]!r}): a threshold "
                         f"chosen on them would be chosen on test", path=path, field="threshold_from")
    if set(dev_vocabulary) != set(vocabulary):
        raise InputError(f"its judgements ({'/'.join(dev_vocabulary)}) are not the test split's "
                         f"({'/'.join(vocabulary)})", path=path, field="threshold_from")


def check_dev_results(path: Path, results: dict, test_ids: set[str], vocabulary: list[str],
                      model: EvaluatedModel) -> None:
    """Dev results fit for choosing this model's threshold: scored, of the same model (and verdict head),
    not of the test split."""
    positive, _ = positive_judgement(vocabulary)
    if not positive_scores(results["samples"], positive):
        raise InputError(f"its samples have no scores (mode {results['mode']!r}): evaluate the dev split with "
                         f"--mode score", path=path, field="samples")
    check_dev_split(path, [s["id"] for s in results["samples"]], test_ids, list(results.get("judgements") or []),
                    vocabulary)
    theirs = (results.get("model") or {}).get("weights_path")
    ours = model.weights_path
    if theirs is None or not same_folder(theirs, ours):
        raise InputError(f"results of another model ({theirs or results['model_path']}), not of {ours}: a threshold "
                         f"fits the scores of the model it was chosen for", path=path, field="model")
    their_head = (results.get("verdict_head") or {}).get("weights_sha256")
    our_head = model.head_sha256
    if their_head != our_head:
        said = {None: "no verdict head"}
        raise InputError(f"results scored with {said.get(their_head, 'another verdict head')}, this evaluation uses "
                         f"{said.get(our_head, 'the verdict head in ' + str(model.head_path))}: a threshold fits the "
                         f"scores it was chosen on", path=path, field="verdict_head")


def dev_threshold(args: Settings, source: ThresholdSource, vocabulary: list[str], *, rank: int,
                  evaluate_split: EvaluateSplit) -> dict | None:
    """The threshold chosen on dev (rank 0; None on the others): scores the dev JSONL first if that is
    what --threshold_from names, into OUTPUT_DIR/threshold_dev (resumable like any evaluation)."""
    if source.records is not None:
        dev_args = replace(args, test_dataset_path=str(source.path),  # scores are all a threshold needs: never
                           output_dir=str(Path(args.output_dir) / THRESHOLD_DEV_FOLDER),  # generate on dev
                           limit=0, threshold_from="", mode="score")
        log.info("scoring the dev split %s to choose the decision threshold", source.path)
        results = evaluate_split(dev_args, source.records, list(source.skipped))
        results_path = Path(dev_args.output_dir) / RESULTS_FILE
    else:
        results, results_path = source.results, source.path
    if rank != 0:
        return None
    positive, _ = positive_judgement(vocabulary)
    labels, scores = positive_scores(results["samples"], positive)
    chosen = choose_threshold(labels, scores)
    if chosen is None:
        raise InputError(f"the dev split holds one judgement only ({results['samples'][0]['reference']}): no "
                         f"threshold can be chosen on it", path=results_path, field="threshold_from")
    log.info("decision threshold P(%s) >= %s, chosen on %s (%d samples, balanced accuracy %.1f%%)", positive,
             threshold_text(chosen["threshold"], scores), results_path, chosen["samples"],
             100 * chosen["balanced_accuracy"])
    return chosen | {"source": str(results_path), "test_dataset_path": results["test_dataset_path"]}
