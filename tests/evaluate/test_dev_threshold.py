"""defect_judge/evaluate/dev_threshold.py with what eval/model_evaluation.py passes it (its settings, its reader of a
split, its evaluation of one on a tiny real model): --threshold_from a dev .jsonl (scored first into
OUTPUT_DIR/threshold_dev) or a dev evaluation_results.json (or its folder), every check made before a model runs
(one line naming the file and field), and the threshold chosen on dev."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from types import SimpleNamespace

import pytest

from defect_judge.cli import parse_settings
from defect_judge.distributed import Ranks
from defect_judge.evaluate.dev_threshold import (EvaluatedModel, ThresholdSource, check_dev_results, dev_threshold,
                                                 threshold_source)
from defect_judge.evaluate.head_choice import HeadChoice
from defect_judge.evaluate.results import load_results
from defect_judge.evaluate.session import JudgeSession, resolve_model
from helpers import EVALUATE, assert_input_error, make_records, write_records


def settings(script, **flags):
    """eval/model_evaluation.py's settings as its command line gives them."""
    argv = [str(part) for name, value in flags.items() for part in (f"--{name}", value)]
    return parse_settings(vars(script), paths=script.PATHS, argv=argv)[0]


def never(*args):
    raise AssertionError("a dev results file is not evaluated again")


@pytest.fixture(scope="module")
def ev(tmp_path_factory, tiny_model_dir):
    """The script's pieces on the tiny model, a test and a dev split (8 samples each, both judgements), and a first
    run: --threshold_from the dev .jsonl, scored into OUTPUT_DIR/threshold_dev."""
    spec = importlib.util.spec_from_file_location("model_evaluation_under_test", EVALUATE)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = tmp_path_factory.mktemp("dev-threshold")
    test_file = write_records(folder / "test.jsonl", make_records(8))
    dev_file = write_records(folder / "dev.jsonl", make_records(8, start=100))
    records, vocabulary, _ = script.read_test_set(str(test_file), 0)
    resolved, tokenizer_dir = resolve_model(str(tiny_model_dir))
    session = JudgeSession(resolved, tokenizer_dir, Ranks(0, 1, "cpu"), HeadChoice(None))

    def evaluate_dev(dev_args, dev_records, dev_skipped):
        return script.evaluate_split(dev_args, session, dev_records, vocabulary, dev_skipped)

    # the test's --limit (4) never limits the dev split: it is read and scored whole
    args = settings(script, model_path=tiny_model_dir, test_dataset_path=test_file, output_dir=folder / "out",
                    mode="score", limit=4, threshold_from=dev_file)
    model = EvaluatedModel(resolved.weights_path)
    source = threshold_source(args, records, vocabulary, model, has_head=False, read_split=script.read_test_set)
    chosen = dev_threshold(args, source, vocabulary, rank=0, evaluate_split=evaluate_dev)
    return SimpleNamespace(script=script, test_file=test_file, dev_file=dev_file, records=records,
                           vocabulary=vocabulary, args=args, model=model, source=source, chosen=chosen,
                           dev_results=folder / "out" / "threshold_dev" / "evaluation_results.json")


def source_of(ev, threshold_from, *, records=None, vocabulary=None, model=None, has_head=False, **flags):
    args = replace(ev.args, threshold_from=str(threshold_from), **flags)
    return threshold_source(args, ev.records if records is None else records,
                            ev.vocabulary if vocabulary is None else vocabulary, model or ev.model,
                            has_head=has_head, read_split=ev.script.read_test_set)


def rewritten(ev, path, change) -> str:
    """The real dev results, changed by ``change`` and written to ``path``."""
    results = json.loads(ev.dev_results.read_text(encoding="utf-8"))
    change(results)
    path.write_text(json.dumps(results, ensure_ascii=False), encoding="utf-8")
    return str(path)


def balanced_accuracy(labels, scores, threshold) -> float:
    called = [score >= threshold for score in scores]
    recalls = [sum(c == bool(want) for c, label in zip(called, labels) if label == want) /
               sum(label == want for label in labels) for want in (0, 1)]
    return sum(recalls) / 2


# ------------------------------------------------------------------ the main paths

def test_no_threshold_from_is_argmax(ev):
    assert source_of(ev, "") is None


def test_a_dev_jsonl_is_read_whole_and_scored_into_threshold_dev(ev):
    dev_ids = [r["id"] for r in map(json.loads, ev.dev_file.read_text(encoding="utf-8").splitlines())]
    assert ev.source.path == ev.dev_file and ev.source.results is None and ev.source.skipped == ()
    assert [r.id for r in ev.source.records] == dev_ids
    dev = load_results(ev.dev_results)
    assert [s["id"] for s in dev["samples"]] == dev_ids  # not the test's --limit
    assert dev["mode"] == "score" and dev["test_dataset_path"] == str(ev.dev_file)
    assert dev["settings"]["limit"] == 0 and dev["settings"]["threshold_from"] == ""  # the dev run's own settings
    assert ev.chosen["source"] == str(ev.dev_results) and ev.chosen["test_dataset_path"] == str(ev.dev_file)


def test_the_threshold_has_the_best_balanced_accuracy_on_dev(ev):
    dev = load_results(ev.dev_results)
    labels = [int(s["reference"] == "是") for s in dev["samples"]]
    scores = [s["probabilities"]["是"] for s in dev["samples"]]
    chosen = ev.chosen
    assert (chosen["samples"], chosen["positives"], chosen["negatives"]) == (8, 4, 4)
    best = max(balanced_accuracy(labels, scores, t) for t in scores + [1.1])
    assert chosen["balanced_accuracy"] == pytest.approx(best)
    assert balanced_accuracy(labels, scores, chosen["threshold"]) == pytest.approx(best)


def test_the_dev_results_file_or_its_folder_gives_the_same_threshold_without_evaluating(ev):
    for named in (ev.dev_results, ev.dev_results.parent):
        source = source_of(ev, named)
        assert source.path == ev.dev_results and source.records is None
        assert source.results["samples"] == load_results(ev.dev_results)["samples"]
        again = dev_threshold(ev.args, source, ev.vocabulary, rank=0, evaluate_split=never)
        assert again == ev.chosen  # the same source file, the same threshold


def test_other_ranks_get_no_threshold_of_their_own(ev):
    source = ThresholdSource(ev.dev_results, results=load_results(ev.dev_results))
    assert dev_threshold(ev.args, source, ev.vocabulary, rank=1, evaluate_split=never) is None


def test_generated_answers_take_a_threshold_only_from_a_verdict_head(ev):
    assert_input_error(lambda: source_of(ev, ev.dev_results, mode="generate"), "field 'threshold_from'",
                       "--threshold_from needs --mode score (or a verdict head)")
    assert source_of(ev, ev.dev_results, mode="generate", has_head=True).path == ev.dev_results


def test_the_same_model_by_another_path_is_the_same_model(ev, tmp_path):
    (tmp_path / "latest").symlink_to(ev.model.weights_path)
    assert source_of(ev, ev.dev_results, model=EvaluatedModel(tmp_path / "latest")).results is not None


# ------------------------------------------------------------------ refusals, before any model runs

def test_a_threshold_needs_two_judgements(ev):
    for vocabulary in (["可疑"], ["否", "是", "不确定"]):
        assert_input_error(lambda: source_of(ev, ev.dev_file, vocabulary=vocabulary), "field 'threshold_from'",
                           f"needs two judgements (defective / clean), the test set has {'/'.join(vocabulary)}")


def test_a_missing_source_is_one_line(ev, tmp_path):
    assert_input_error(lambda: source_of(ev, tmp_path / "dev.jsonl"), str(tmp_path / "dev.jsonl"),
                       "field 'threshold_from'", "--threshold_from not found")
    assert_input_error(lambda: source_of(ev, tmp_path), str(tmp_path / "evaluation_results.json"), "not found")


def test_the_test_split_is_never_its_own_dev(ev, monkeypatch):
    monkeypatch.chdir(ev.test_file.parent)
    assert_input_error(lambda: source_of(ev, f"./{ev.test_file.name}"), "test.jsonl", "field 'threshold_from'",
                       "names the test split itself: choose the threshold on the dev split")


def test_a_dev_jsonl_sharing_samples_with_test_is_refused(ev, tmp_path):
    overlapping = write_records(tmp_path / "dev.jsonl", make_records(8, start=6))  # sample_006, sample_007 are test's
    assert_input_error(lambda: source_of(ev, overlapping), str(overlapping), "field 'threshold_from'",
                       "2 of its samples are in the test split too (e.g. 'sample_006.json#0')")


def test_a_dev_jsonl_of_other_judgements_is_refused(ev, tmp_path):
    rows = make_records(4, start=100)
    for row in rows:
        row["text"][-1]["content"] = row["text"][-1]["content"].replace("判断:是", "判断:有缺陷").replace(
            "判断:否", "判断:无缺陷")
    other = write_records(tmp_path / "dev.jsonl", rows)
    assert_input_error(lambda: source_of(ev, other), str(other),
                       "its judgements (无缺陷/有缺陷) are not the test split's (否/是)")


def test_dev_results_without_scores_are_refused(ev, tmp_path):
    def generated(results):
        results["mode"] = "generate"
        for sample in results["samples"]:
            del sample["probabilities"]

    path = rewritten(ev, tmp_path / "generated.json", generated)
    assert_input_error(lambda: source_of(ev, path), path, "field 'samples'",
                       "its samples have no scores (mode 'generate'): evaluate the dev split with --mode score")


def test_results_of_the_test_split_are_refused(ev):
    dev_records, _, _ = ev.script.read_test_set(str(ev.dev_file), 0)
    assert_input_error(lambda: source_of(ev, ev.dev_results, records=dev_records), str(ev.dev_results),
                       "8 of its samples are in the test split too")


def test_results_of_another_model_are_refused(ev, tmp_path):
    assert_input_error(lambda: source_of(ev, ev.dev_results, model=EvaluatedModel(tmp_path)), str(ev.dev_results),
                       "field 'model'",
                       f"not of {tmp_path}: a threshold fits the scores of the model it was chosen for")
    unnamed = rewritten(ev, tmp_path / "unnamed.json", lambda results: results.pop("model"))  # e.g. the baseline's
    assert_input_error(lambda: source_of(ev, unnamed), f"results of another model ({ev.args.model_path}), not of")


def test_results_scored_with_another_verdict_head_are_refused(ev, tmp_path):
    """What judge/stage.py checks directly: the head's weights must be the ones the dev scores came from."""
    results = load_results(ev.dev_results)
    test_ids = {r.id for r in ev.records}
    ours = EvaluatedModel(ev.model.weights_path, "a" * 64, tmp_path / "head")
    assert_input_error(lambda: check_dev_results(ev.dev_results, results, test_ids, ev.vocabulary, ours),
                       "field 'verdict_head'",
                       "results scored with no verdict head, this evaluation uses the verdict head in",
                       str(ours.head_path))
    with_head = results | {"verdict_head": {"weights_sha256": "b" * 64}}
    assert_input_error(lambda: check_dev_results(ev.dev_results, with_head, test_ids, ev.vocabulary, ev.model),
                       "results scored with another verdict head, this evaluation uses no verdict head")
    assert_input_error(lambda: check_dev_results(ev.dev_results, with_head, test_ids, ev.vocabulary, ours),
                       "results scored with another verdict head, this evaluation uses the verdict head in")
    same = results | {"verdict_head": {"weights_sha256": "a" * 64}}
    assert check_dev_results(ev.dev_results, same, test_ids, ev.vocabulary, ours) is None


def test_a_dev_split_of_one_judgement_chooses_no_threshold(ev, tmp_path):
    def defective_only(results):
        results["samples"] = [s for s in results["samples"] if s["reference"] == "是"]

    path = rewritten(ev, tmp_path / "one.json", defective_only)
    source = source_of(ev, path)  # its judgements are still the test's: the checks pass
    assert_input_error(lambda: dev_threshold(ev.args, source, ev.vocabulary, rank=0, evaluate_split=never), path,
                       "field 'threshold_from'",
                       "the dev split holds one judgement only (是): no threshold can be chosen on it")
