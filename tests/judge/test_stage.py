"""defect_judge/judge/stage.py stage by stage on a tiny real model and a real cppcheck log: the questions of each
input (and its refusals), the decision threshold (none, the one recorded with the model, a dev .jsonl scored here or
the dev split's evaluation_results.json), judging each distinct prompt once (the plain definition of P(defective),
decided at the threshold, resumed from the partial file) and the output folder each input leaves."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from defect_judge import load_script
from defect_judge.cli import parse_settings
from defect_judge.data.subtypes import find_subtypes
from defect_judge.distributed import Ranks
from defect_judge.evaluate.head_choice import HeadChoice, choose_head
from defect_judge.evaluate.session import JudgeSession, resolve_model
from defect_judge.evaluate.verdicts import source_for
from defect_judge.judge import stage
from defect_judge.judge.outputs import PARTIAL_STEM, JudgeInfo
from defect_judge.judge.sarif import PROPERTY_KEY
from defect_judge.evaluate.results_folder import partial_file
from defect_judge.model import inference
from defect_judge.model.chat import render_prompt
from defect_judge.model.judge_card import judge_card
from defect_judge.model.verdict_head import VerdictHead
from helpers import (input_refusal, make_records, reference_logprob, run_cppcheck, sarif_schema_validator,
                     write_records)

pytestmark = pytest.mark.usefixtures("one_thread")

# cppcheck finds two null-pointer dereferences in both() (one prompt), a division by zero in ratio() and an invalid
# overflow test in grows() (CWE-391: no subtype).
JUDGED_C = """\
#include <stdlib.h>

int both(int n)
{
    int *p = NULL;
    int *q = NULL;
    return *p + *q + n;
}

int ratio(int total)
{
    int parts = 0;
    return total / parts;
}

int grows(int n)
{
    if (n + 1 < n)
        return 0;
    return n;
}
"""
NOT_JUDGED = "no subtype: rule invalidTestForOverflow, CWE-391"
RECORDED = {"threshold": 0.375, "chosen_on": "dev.jsonl", "step": 4}
CARD = {"judgements": ["否", "是"], "positive": "是", "negative": "否", "subtypes": ["空指针解引用"], "max_length": 512,
        "dev_threshold": RECORDED}
SETTINGS = {"mode": "score", "batch_size": 2, "max_new_tokens": 4, "max_length": 0, "model_answer": False}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("stage-project")
    (root / "src").mkdir()
    (root / "src" / "judged.c").write_text(JUDGED_C, encoding="utf-8")
    (root / "src" / "decls.h").write_text("int ratio(int total);\n", encoding="utf-8")
    log = root / "cppcheck.sarif"
    run_cppcheck("src/judged.c", log, cwd=root)
    return SimpleNamespace(root=root, log=log, source=root / "src" / "judged.c")


@pytest.fixture(scope="module")
def plain(tiny_model_dir) -> SimpleNamespace:
    """The tiny model without a head, judged in score mode: its session and card (a base model: --judgements)."""
    resolved, tokenizer_dir = resolve_model(str(tiny_model_dir))
    session = JudgeSession(resolved, tokenizer_dir, Ranks(0, 1, "cpu"), HeadChoice(None))
    return SimpleNamespace(session=session, card=judge_card(resolved.weights_path, judgements=["是", "否"]))


@pytest.fixture(scope="module")
def headed(tmp_path_factory, tiny_model_dir) -> SimpleNamespace:
    """The tiny model carrying a verdict head whose verdict_head.json records a judge card with a dev threshold."""
    folder = tmp_path_factory.mktemp("headed") / "model"
    shutil.copytree(tiny_model_dir, folder)
    VerdictHead([1, 2], "mean", 64, 2, positive="是", negative="否", spec="mean@0.5,1.0", card=CARD).save(folder)
    resolved, tokenizer_dir = resolve_model(str(folder))
    card = judge_card(resolved.weights_path, run_folder=resolved.run_folder, head_config=resolved.head_config)
    head = choose_head("", resolved, list(card.judgements))
    session = JudgeSession(resolved, tokenizer_dir, Ranks(0, 1, "cpu"), head)
    return SimpleNamespace(session=session, card=card, head=head, folder=folder)


@pytest.fixture(scope="module")
def triage(project, plain) -> stage.Questions:
    return stage.sarif_input(str(project.log), str(project.root), None, plain.card)


def judge(questions, setup, output_dir, *, threshold=None, overwrite=False, **settings):
    return stage.judge_questions(questions, setup.session, setup.card, output_dir=str(output_dir),
                                 threshold=threshold, overwrite=overwrite, **(SETTINGS | settings))


def info_of(setup, threshold: float | None, threshold_from: str) -> JudgeInfo:
    resolved = setup.session.resolved
    return JudgeInfo(str(resolved.weights_path), resolved.model_kind, None, "score", source_for("score", head=False),
                     0.5 if threshold is None else threshold, threshold_from, "是", "否")


def plain_p_defective(setup, question) -> float:
    """P(是) of a question's prompt by the plain definition: full logits, one sequence, softmax over 是/否."""
    tokenizer = setup.session.tokenizer
    text = render_prompt(tokenizer, question.record.prompt_messages)
    logprobs = [reference_logprob(setup.session.model, c)
                for c in inference.candidate_sequences(tokenizer, text, ["是", "否"])]
    return inference.probabilities(logprobs)[0]


def log_odds(p: float) -> float:
    """P(defective) on the scale its differences show on: the tiny model's are all close to 1."""
    return math.log(p / (1 - p))


def same_scores(got: list[float], expected: list[float]) -> bool:
    """Equal but for float noise (~1e-6 in log-odds between batchings here; prompts differ by 1e-4 to 0.04)."""
    return [log_odds(p) for p in got] == pytest.approx([log_odds(p) for p in expected], abs=1e-4)


def midpoint(rows: list[dict]) -> float:
    """A threshold in the widest gap between the rows' P(defective): both verdicts are given at it."""
    scores = sorted({row["p_defective"] for row in rows})
    assert len(scores) > 1, scores
    low, high = max(zip(scores, scores[1:]), key=lambda pair: log_odds(pair[1]) - log_odds(pair[0]))
    return (low + high) / 2


# ------------------------------------------------------------------ inputs

def test_a_sarif_input_asks_about_its_findings_and_keeps_the_log(triage, project):
    assert [(q.finding, q.function, q.subtype) for q in triage.asked] == \
        [((0, 1), "both", "空指针解引用"), ((0, 2), "both", "空指针解引用"), ((0, 3), "ratio", "除零")]
    assert [(u.finding, u.reason) for u in triage.unjudged] == [((0, 0), NOT_JUDGED)]
    assert triage.log == json.loads(project.log.read_text(encoding="utf-8"))
    assert triage.findings == 4 and triage.subtypes == ()
    assert triage.described == f"SARIF `{project.log}` (source root `{project.root}`)"


def test_a_sarif_input_without_a_source_root_reads_from_the_working_folder(project, plain, monkeypatch):
    monkeypatch.chdir(project.root)
    questions = stage.sarif_input(str(project.log), "", None, plain.card)
    assert [q.finding for q in questions.asked] == [(0, 1), (0, 2), (0, 3)] and "(source root `.`)" in \
        questions.described


def test_a_sarif_input_refuses_a_source_root_that_is_not_a_folder(project, plain, tmp_path):
    missing = tmp_path / "nowhere"
    input_refusal(lambda: stage.sarif_input(str(project.log), str(missing), None, plain.card), str(missing),
                  "field 'source_root'", "source root not found")
    input_refusal(lambda: stage.sarif_input(str(project.log), str(project.source), None, plain.card),
                  str(project.source), "field 'source_root'", "not a folder")
    old = tmp_path / "old.sarif"
    old.write_text(json.dumps({"version": "2.0.0", "runs": [{"results": []}]}), encoding="utf-8")
    input_refusal(lambda: stage.sarif_input(str(old), str(project.root), None, plain.card), str(old), "2.1.0")


def test_a_source_input_asks_every_function_for_each_subtype(project, plain):
    subtypes = find_subtypes(["除零", "null_pointer_dereference"])
    questions = stage.source_input([str(project.root / "src")], subtypes, str(project.root), plain.card)
    assert [q.id for q in questions.asked] == [f"src/judged.c:{line}:{name}#{key}"
                                               for line, name in ((3, "both"), (10, "ratio"), (16, "grows"))
                                               for key in ("null_pointer_dereference", "division_by_zero")]
    assert questions.subtypes == tuple(subtypes) and questions.unjudged == [] and questions.findings is None
    assert questions.described == f"sources `{project.root / 'src'}`, 2 subtype(s)"


def test_a_source_input_without_a_function_is_refused(project, plain):
    header = str(project.root / "src" / "decls.h")
    input_refusal(lambda: stage.source_input([header], find_subtypes(["all"]), "", plain.card), "field 'source'",
                  f"no function found in {header} (skipped: {header} (no function))")


def test_a_samples_input_is_its_questions(plain, tmp_path):
    rows = make_records(3)
    path = write_records(tmp_path / "new.jsonl", rows)
    questions = stage.samples_input(str(path))
    assert [q.id for q in questions.asked] == [r["id"] for r in rows]
    assert questions.described == f"samples `{path}`" and questions.log is None and questions.findings is None


def test_subtypes_the_model_was_not_trained_on_are_said_once(project, headed, plain, caplog):
    questions = stage.source_input([str(project.source)], find_subtypes(["all"]), "", headed.card)
    with caplog.at_level(logging.WARNING, logger="defect_judge.judge.stage"):
        stage.warn_untrained_subtypes(questions, headed.card)
        stage.warn_untrained_subtypes(questions, plain.card)  # a base model: its subtypes are not known
        trained = stage.Questions([q for q in questions.asked if q.subtype == "空指针解引用"], [], "")
        stage.warn_untrained_subtypes(trained, headed.card)
    untrained = "内存泄漏, 整数溢出, 未初始化变量, 缓冲区溢出, 资源未释放, 释放后使用, 除零"
    assert [r.getMessage() for r in caplog.records] == \
        [f"asked about {untrained}, which the model was not trained on (it was on 空指针解引用)"]


def test_distinct_records_are_one_a_prompt_in_the_order_first_asked(triage):
    records = stage.distinct_records(triage.asked)
    first, _, ratio = triage.asked
    assert [(r.id, r.subtype, r.text) for r in records] == [(q.prompt_key, q.subtype, q.record.text)
                                                            for q in (first, ratio)]


# --------------------------------------------------------------- threshold

@pytest.mark.parametrize("given", ["", "none", " None "])
def test_no_threshold_is_argmax(plain, given):
    assert stage.judge_threshold(given, "generate", plain.session, plain.card, plain.session.ranks) == \
        (None, "argmax")


def test_the_recorded_threshold_is_the_models_own_heads(headed, plain, tmp_path):
    own = stage.judge_threshold("model", "score", headed.session, headed.card, headed.session.ranks)
    assert own == (0.375, "chosen on dev in training (dev.jsonl, step 4)")
    argmax = (None, "argmax: no dev threshold recorded for this judge")
    assert stage.judge_threshold("Model", "score", plain.session, plain.card, plain.session.ranks) == argmax
    other = tmp_path / "other-head"
    shutil.copytree(headed.folder, other)  # the same head, in another folder: not the one the card was chosen for
    assert stage.recorded_threshold(headed.card, HeadChoice(headed.head.head, other), headed.folder) == argmax
    assert stage.recorded_threshold(headed.card, headed.head, None) == argmax


def test_a_threshold_file_is_refused_where_it_cannot_apply(plain, headed, tmp_path):
    missing = tmp_path / "dev.jsonl"
    input_refusal(lambda: stage.judge_threshold(str(missing), "generate", plain.session, plain.card,
                                                plain.session.ranks),
                  "field 'threshold_from'", "--threshold_from needs --mode score (or a verdict head)")
    for setup, mode in ((plain, "score"), (headed, "generate")):
        input_refusal(lambda: stage.judge_threshold(str(missing), mode, setup.session, setup.card,
                                                    setup.session.ranks),
                      str(missing), "field 'threshold_from'", "--threshold_from not found")


@pytest.fixture(scope="module")
def dev(tmp_path_factory, plain) -> SimpleNamespace:
    """A dev split (8 records, both judgements), and its evaluation_results.json by eval/model_evaluation.py's own
    evaluation of it with the same model."""
    folder = tmp_path_factory.mktemp("stage-dev")
    path = write_records(folder / "dev.jsonl", make_records(8, start=200))
    script = load_script("eval/model_evaluation.py")
    argv = ["--model_path", str(plain.session.resolved.weights_path), "--test_dataset_path", str(path),
            "--output_dir", str(folder / "eval"), "--mode", "score"]
    args = parse_settings(vars(script), paths=script.PATHS, argv=argv)[0]
    records, vocabulary, skipped = script.read_test_set(str(path), 0)
    script.evaluate_split(args, plain.session, records, vocabulary, skipped)
    return SimpleNamespace(path=path, results=folder / "eval" / "evaluation_results.json", records=records)


def test_a_dev_jsonl_is_scored_by_the_judge_and_gives_the_dev_results_threshold(plain, dev, tmp_path):
    ranks = plain.session.ranks
    threshold, said = stage.judge_threshold(str(dev.path), "score", plain.session, plain.card, ranks)
    assert said == f"chosen on {dev.path}" and 0 < threshold < 1
    for named in (dev.results, dev.results.parent):
        again, said_again = stage.judge_threshold(str(named), "score", plain.session, plain.card, ranks)
        assert same_scores([again], [threshold]) and said_again == f"chosen on {dev.results}"
    # the dev scores are the judge's own P(defective) of the same samples asked as questions
    labels, scores = stage.dev_scores(plain.session, dev.path, plain.card, ranks)
    questions = stage.samples_input(str(dev.path))
    rows, _, _ = judge(questions, plain, tmp_path / "asked")
    references = {r.id: int(r.judgement == "是") for r in dev.records}
    for label in (0, 1):
        assert same_scores(sorted(s for l, s in zip(labels, scores) if l == label),
                           sorted(row["p_defective"] for row in rows if references[row["id"]] == label))
    assert sum(labels) == 4 and len(labels) == 8


def test_a_dev_split_of_one_judgement_chooses_no_threshold(plain, tmp_path):
    defective = write_records(tmp_path / "dev.jsonl", make_records(8)[::2])  # every other sample is 是
    input_refusal(lambda: stage.judge_threshold(str(defective), "score", plain.session, plain.card,
                                                plain.session.ranks),
                  str(defective), "field 'threshold_from'", "the dev split holds one judgement only")


def test_dev_samples_are_scored_as_the_judging_cuts_them(headed, tmp_path):
    """The model whose card records max_length 512, scoring without its head, on dev samples longer than that."""
    session = JudgeSession(headed.session.resolved, headed.session.tokenizer_dir, Ranks(0, 1, "cpu"), HeadChoice(None))
    path = write_records(tmp_path / "dev.jsonl", make_records(4, event_repeat=40))
    budget, _ = session.prompt_budget(max_length=SETTINGS["max_length"], mode=SETTINGS["mode"],
                                      max_new_tokens=SETTINGS["max_new_tokens"], vocabulary=headed.card.judgements)
    _, scores = stage.dev_scores(session, path, headed.card, session.ranks, budget)
    rows, _, _ = judge(stage.samples_input(str(path)), SimpleNamespace(session=session, card=headed.card), tmp_path)
    assert all(row["code_cut"] for row in rows)
    assert same_scores(sorted(scores), sorted(row["p_defective"] for row in rows))


# ----------------------------------------------------------------- judging

def test_each_distinct_prompt_is_judged_once_by_the_plain_definition(triage, plain, tmp_path):
    rows, seconds, prompts = judge(triage, plain, tmp_path)
    assert prompts == 2 and seconds > 0
    assert [(row["id"], row["rule_id"], row["sarif_result"]) for row in rows] == \
        [(f"run0/result{i}", rule, [0, i]) for i, rule in ((1, "nullPointer"), (2, "nullPointer"), (3, "zerodiv"))]
    same = ("verdict", "p_defective", "prompt_sha256", "verdict_source")
    assert {k: rows[0][k] for k in same} == {k: rows[1][k] for k in same}
    tokenizer = plain.session.tokenizer
    for row, question in zip(rows, triage.asked):
        assert same_scores([row["p_defective"]], [plain_p_defective(plain, question)])
        assert row["verdict"] == ("是" if row["p_defective"] >= 0.5 else "否") and row["defective"] == \
            (row["verdict"] == "是")
        rendered = render_prompt(tokenizer, question.record.prompt_messages)
        assert row["prompt_sha256"] == hashlib.sha256(rendered.encode("utf-8")).hexdigest()
        assert row["verdict_source"] == "scored" and row["code_cut"] is False
    partial = partial_file(tmp_path, 0, PARTIAL_STEM).read_text(encoding="utf-8").splitlines()
    assert len(partial) == 1 + 2  # the header, a row per distinct prompt


@pytest.fixture(scope="module")
def review(project, plain) -> stage.Questions:
    return stage.source_input([str(project.source)], find_subtypes(["all"]), str(project.root), plain.card)


def test_the_threshold_decides_each_verdict(review, plain, tmp_path):
    argmax, _, _ = judge(review, plain, tmp_path / "argmax")
    threshold = midpoint(argmax)
    rows, _, prompts = judge(review, plain, tmp_path / "decided", threshold=threshold)
    assert prompts == len(review.asked) == 24
    assert same_scores([row["p_defective"] for row in rows], [row["p_defective"] for row in argmax])
    assert [row["verdict"] for row in rows] == ["是" if row["p_defective"] >= threshold else "否" for row in rows]
    assert {row["verdict"] for row in rows} == {"是", "否"}


def test_a_run_goes_on_from_its_partial_file(review, plain, tmp_path):
    straight, _, _ = judge(review, plain, tmp_path / "straight")
    out = tmp_path / "resumed"
    first = stage.Questions(review.asked[:5], [], "the first five")
    assert judge(first, plain, out)[2] == 5
    rows, _, prompts = judge(review, plain, out)
    assert prompts == len(review.asked) - 5
    assert [(r["id"], r["verdict"]) for r in rows] == [(r["id"], r["verdict"]) for r in straight]
    assert same_scores([r["p_defective"] for r in rows], [r["p_defective"] for r in straight])
    assert judge(review, plain, out)[2] == 0  # all judged: nothing left to do
    assert judge(review, plain, out, overwrite=True)[2] == len(review.asked)


def test_a_partial_file_of_other_settings_is_refused(review, plain, tmp_path):
    judge(stage.Questions(review.asked[:2], [], ""), plain, tmp_path)
    input_refusal(lambda: judge(review, plain, tmp_path, threshold=0.25), str(partial_file(tmp_path, 0, PARTIAL_STEM)),
                  "holds results of a run with other settings", "threshold: null -> 0.25")


# ------------------------------------------------------------------ output

@pytest.fixture(scope="module")
def triaged(triage, plain, tmp_path_factory) -> SimpleNamespace:
    """The SARIF questions judged at a threshold between their two prompts' P(defective): one judged clean."""
    out = tmp_path_factory.mktemp("triaged")
    argmax, _, _ = judge(triage, plain, out / "argmax")
    threshold = midpoint(argmax)
    rows, seconds, prompts = judge(triage, plain, out / "judged", threshold=threshold)
    return SimpleNamespace(out=out / "judged", rows=rows, seconds=seconds, prompts=prompts,
                           info=info_of(plain, threshold, "a test's midpoint"))


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_a_triage_writes_the_marked_log_the_upload_copy_and_the_summary(triage, triaged):
    summary = stage.write_outputs(str(triaged.out), triage, triaged.rows, triaged.info, accept_clean=False,
                                  seconds=2.0, prompts=triaged.prompts)
    out = triaged.out
    assert listing(out) == ["judged.sarif", "judged.upload.sarif", "summary.md", "verdicts.jsonl"]  # no partials
    assert [json.loads(line) for line in (out / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()] == \
        triaged.rows
    assert (out / "summary.md").read_text(encoding="utf-8") == summary
    assert "Findings: 4; asked about: 3;" in summary and f"| {NOT_JUDGED} | 1 |" in summary
    assert "Judged 2 distinct prompt(s) in 2.0 s" in summary
    judged = json.loads((out / "judged.sarif").read_text(encoding="utf-8"))
    sarif_schema_validator().validate(judged)
    results = judged["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == [r["ruleId"] for r in triage.log["runs"][0]["results"]]
    assert results[0]["properties"][PROPERTY_KEY] == {"judged": False, "notJudged": NOT_JUDGED}
    marks = [r["properties"][PROPERTY_KEY] for r in results[1:]]
    assert [(m["verdict"], m["p_defective"]) for m in marks] == [(r["verdict"], r["p_defective"]) for r in triaged.rows]
    assert [[s["status"] for s in r.get("suppressions", [])] for r in results[1:]] == \
        [[] if row["defective"] else ["underReview"] for row in triaged.rows]
    assert judged["runs"][0]["properties"][PROPERTY_KEY] == triaged.info.to_json()
    upload = json.loads((out / "judged.upload.sarif").read_text(encoding="utf-8"))
    kept = [r for r, row in zip(results[1:], triaged.rows) if row["defective"]]
    assert upload["runs"][0]["results"] == [results[0], *kept] and len(kept) < 3


def test_accept_clean_accepts_the_suppressions(triage, triaged, tmp_path):
    stage.write_outputs(str(tmp_path), triage, triaged.rows, triaged.info, accept_clean=True, seconds=0,
                        prompts=2)
    results = json.loads((tmp_path / "judged.sarif").read_text(encoding="utf-8"))["runs"][0]["results"]
    assert [s["status"] for r in results for s in r.get("suppressions", [])] == \
        ["accepted"] * sum(row["defective"] is False for row in triaged.rows)


def test_each_input_leaves_only_its_own_outputs(triage, triaged, review, plain, tmp_path):
    stage.write_outputs(str(tmp_path), triage, triaged.rows, triaged.info, accept_clean=False, seconds=1, prompts=2)
    rows, _, prompts = judge(review, plain, tmp_path, overwrite=True)
    stage.write_outputs(str(tmp_path), review, rows, info_of(plain, None, "argmax"), accept_clean=False, seconds=1,
                        prompts=prompts)
    assert listing(tmp_path) == ["judged.sarif", "summary.md", "verdicts.jsonl"]  # the triage's upload copy is gone
    log = json.loads((tmp_path / "judged.sarif").read_text(encoding="utf-8"))
    sarif_schema_validator().validate(log)
    assert [rule["id"] for rule in log["runs"][0]["tool"]["driver"]["rules"]] == [s.key for s in review.subtypes]
    assert [(r["locations"][0]["physicalLocation"]["region"]["startLine"], r["ruleId"]) for r in log["runs"][0]["results"]] \
        == [(row["start_line"], next(s.key for s in review.subtypes if s.name == row["subtype"]))
            for row in rows if row["defective"]]
    samples = stage.samples_input(str(write_records(tmp_path / "new.jsonl", make_records(2))))
    rows, _, prompts = judge(samples, plain, tmp_path / "samples")
    stage.write_outputs(str(tmp_path / "samples"), samples, rows, info_of(plain, None, "argmax"), accept_clean=False,
                        seconds=1, prompts=prompts)
    assert listing(tmp_path / "samples") == ["summary.md", "verdicts.jsonl"]
