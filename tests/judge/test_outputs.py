"""defect_judge/judge/outputs.py on hand-built verdicts: the partial file's row of a prompt (a scored verdict decided
at the threshold, a head's or a written answer's as given), the verdicts.jsonl row of a question, the marks on a
SARIF result (rank, the suppression of a clean verdict and its justification, no verdict, not judged), a source
run's SARIF log (validated against the SARIF 2.1.0 schema) and summary.md's counts. The same pieces written by
a whole run: tests/judge/test_stage.py and tests/scripts/test_judge_code.py."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from defect_judge.data.subtypes import find_subtypes
from defect_judge.evaluate.judges import Prompt, Verdict
from defect_judge.evaluate.verdicts import GENERATED, HEAD, SCORED
from defect_judge.judge import outputs
from defect_judge.judge.outputs import NO_VERDICT, JudgeInfo
from defect_judge.judge.questions import Question, Unjudged, question_record
from defect_judge.judge.sarif import PROPERTY_KEY, Annotation, annotated_log
from helpers import sarif_schema_validator

INFO = JudgeInfo(model="runs/demo/train", model_kind="lora", head="mean@0.5", mode="score", verdict_source=HEAD,
                 threshold=0.375, threshold_from="chosen on dev in training (dev.jsonl, step 4)", positive="是",
                 negative="否")
NULL, DIVISION = find_subtypes(["null_pointer_dereference", "division_by_zero"])
CODE = "int ratio(int total)\n{\n    int parts = 0;\n    return total / parts;\n}"


def question(subtype=DIVISION, *, function: str | None = "ratio", finding: tuple[int, int] | None = None,
             start_line: int = 10) -> Question:
    qid = f"src/a.c:{start_line}:{function}#{subtype.key}" if finding is None else f"run0/result{finding[1]}"
    sarif = {} if finding is None else {"finding": finding, "subtype_from": f"CWE-{subtype.cwes[0]}",
                                        "rule_id": "zerodiv"}
    return Question(qid, subtype.name, question_record(qid, subtype, "c", CODE, "是", "否"), "src/a.c", function,
                    start_line, start_line + 4, **sarif)


def prompt_of(q: Question, cut_chars: int = 0) -> Prompt:
    return Prompt(q.record, f"<rendered {q.id}>", [1, 2, 3], cut_chars)


def row(q: Question, verdict: Verdict, *, threshold: float | None = 0.5, cut_chars: int = 0) -> dict:
    """The verdicts.jsonl row of a question whose prompt got ``verdict``, as judging writes it."""
    judged = outputs.prompt_row(prompt_of(q, cut_chars), verdict, threshold=threshold, positive="是", negative="否")
    return outputs.verdict_row(q, judged, "是")


def scored(p: float | None, prediction: str | None = None, source: str = HEAD) -> Verdict:
    decided = prediction if p is None else ("是" if p >= 0.5 else "否")
    return Verdict(decided, source, p, None if p is None else {"是": p, "否": 1 - p})


def test_the_judge_is_said_in_sarifs_camel_case():
    assert INFO.to_json() == {"model": "runs/demo/train", "modelKind": "lora", "head": "mean@0.5", "mode": "score",
                              "verdictSource": "head", "threshold": 0.375,
                              "thresholdFrom": "chosen on dev in training (dev.jsonl, step 4)",
                              "judgements": ["是", "否"]}


def test_output_paths_are_the_four_files_in_the_folder(tmp_path):
    assert outputs.output_paths(tmp_path) == {name: tmp_path / name for name in
                                              ("verdicts.jsonl", "summary.md", "judged.sarif", "judged.upload.sarif")}
    assert outputs.output_paths(str(tmp_path))["summary.md"] == Path(tmp_path, "summary.md")


# ------------------------------------------------------------------ rows

def test_a_scored_verdict_is_decided_at_the_threshold():
    prompt = prompt_of(question(), cut_chars=12)
    verdict = Verdict("否", SCORED, 0.375, {"是": 0.375, "否": 0.625}, details={"logprobs": [-1.0, -0.5]})
    decided = outputs.prompt_row(prompt, verdict, threshold=0.375, positive="是", negative="否")
    assert decided == {"id": prompt.record.id, "prediction": "是", "verdict_source": SCORED, "p_defective": 0.375,
                       "reason": None, "prompt_sha256": hashlib.sha256(prompt.text.encode("utf-8")).hexdigest(),
                       "cut_chars": 12, "probabilities": {"是": 0.375, "否": 0.625}, "logprobs": [-1.0, -0.5]}
    above = outputs.prompt_row(prompt, verdict, threshold=0.376, positive="是", negative="否")
    assert above["prediction"] == "否"
    argmax = outputs.prompt_row(prompt, verdict, threshold=None, positive="是", negative="否")
    assert argmax["prediction"] == "否"  # no threshold: the judge's own verdict


def test_a_heads_and_a_written_verdict_are_kept_as_given():
    """A head decided at the threshold already (the session's judge); a written answer has no P to decide by."""
    prompt = prompt_of(question())
    head = outputs.prompt_row(prompt, Verdict("否", HEAD, 0.9), threshold=0.375, positive="是", negative="否")
    assert head["prediction"] == "否" and head["p_defective"] == 0.9
    answer = Verdict("是", GENERATED, None, response="判断:是\n\n原因：parts 为 0。", generated_tokens=9, stopped=True)
    written = outputs.prompt_row(prompt, answer, threshold=0.375, positive="是", negative="否")
    assert written["prediction"] == "是" and written["reason"] == "parts 为 0。" and written["p_defective"] is None
    assert (written["response"], written["generated_tokens"], written["stopped"]) == (answer.response, 9, True)
    assert "probabilities" not in written


def test_a_findings_row_names_its_place_in_the_log():
    q = question(finding=(0, 3))
    got = row(q, scored(0.75), cut_chars=5)
    assert got == {"id": "run0/result3", "file": "src/a.c", "function": "ratio", "start_line": 10, "end_line": 14,
                   "subtype": "除零", "verdict": "是", "defective": True, "p_defective": 0.75, "reason": None,
                   "verdict_source": HEAD, "code_cut": True, "code_cut_chars": 5,
                   "prompt_sha256": hashlib.sha256(b"<rendered run0/result3>").hexdigest(), "rule_id": "zerodiv",
                   "sarif_result": [0, 3], "subtype_from": "CWE-369"}


def test_a_source_rows_fields_and_a_missing_verdict():
    clean = row(question(), scored(0.25))
    assert clean["defective"] is False and clean["verdict"] == "否" and clean["code_cut"] is False
    assert not {"rule_id", "sarif_result", "subtype_from", "response"} & set(clean)
    none = row(question(), Verdict(None, GENERATED, response="我不确定。", generated_tokens=4, stopped=True))
    assert none["verdict"] is None and none["defective"] is None and none["response"] == "我不确定。"
    assert row(question(), Verdict("否", GENERATED, response="判断:否"))["defective"] is False


# ---------------------------------------------------------- SARIF marks

def test_a_clean_verdict_is_justified_by_its_reason_or_by_who_said_so():
    generated = row(question(), Verdict("否", GENERATED, response="判断:否\n\n原因：parts 已检查。"))
    assert outputs.clean_justification(generated, INFO) == "parts 已检查。"
    assert outputs.clean_justification(row(question(), scored(0.1234)), INFO) == \
        "judged 否 (no 除零) by runs/demo/train, P(defective) = 0.123"
    no_p = row(question(), Verdict("否", GENERATED, response="判断:否"))
    assert outputs.clean_justification(no_p, INFO) == "judged 否 (no 除零) by runs/demo/train"


def findings_rows() -> list[dict]:
    """Four findings of run 0: defective (P 0.876), clean (P 0.204), clean by a written answer (no P), no verdict."""
    return [row(question(finding=(0, 1)), scored(0.876)), row(question(finding=(0, 2)), scored(0.204)),
            row(question(finding=(0, 3)), Verdict("否", GENERATED, response="判断:否\n\n原因：除数不为零。")),
            row(question(finding=(0, 4)), Verdict(None, GENERATED, response="不知道"))]


@pytest.mark.parametrize("accept_clean", [False, True])
def test_each_finding_gets_its_mark_rank_and_suppression(accept_clean):
    rows = findings_rows()
    skipped = [Unjudged((0, 0), "no subtype: rule invalidTestForOverflow, CWE-391", "invalidTestForOverflow")]
    annotations, clean = outputs.triage_annotations(rows, skipped, INFO, accept_clean=accept_clean)
    assert clean == {(0, 2), (0, 3)}
    assert annotations[(0, 0)] == Annotation({"judged": False, "notJudged": skipped[0].reason})
    assert annotations[(0, 4)] == Annotation({"judged": False, "notJudged": NO_VERDICT, "model": INFO.model})
    defective = annotations[(0, 1)]
    assert (defective.rank, defective.suppress) == (88, None)
    assert defective.properties == {
        "judged": True, "verdict": "是", "defective": True, "p_defective": 0.876, "subtype": "除零",
        "subtypeFrom": "CWE-369", "reason": None, "function": "ratio", "functionLines": [10, 14], "codeCut": False,
        "promptSha256": rows[0]["prompt_sha256"], "verdictSource": HEAD, "model": INFO.model, "head": "mean@0.5"}
    assert (annotations[(0, 2)].rank, annotations[(0, 2)].suppress) == \
        (20, "judged 否 (no 除零) by runs/demo/train, P(defective) = 0.204")
    assert (annotations[(0, 3)].rank, annotations[(0, 3)].suppress) == (None, "除数不为零。")
    assert [annotations[w].accepted for w in ((0, 2), (0, 3))] == [accept_clean] * 2


def test_the_marks_make_a_valid_sarif_log():
    rows = findings_rows()
    log = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "cppcheck", "rules": [{"id": "zerodiv"}]}},
                                         "results": [{"ruleId": "zerodiv", "message": {"text": f"finding {i}"},
                                                      "rank": 50.0} for i in range(5)]}]}
    annotations, _ = outputs.triage_annotations(rows, [Unjudged((0, 0), "not analysed")], INFO)
    judged = annotated_log(log, annotations, {0: INFO.to_json()})
    sarif_schema_validator().validate(judged)
    results = judged["runs"][0]["results"]
    assert [r["rank"] for r in results] == [50.0, 88, 20, 50.0, 50.0]  # no P, no verdict: the analyzer's rank stays
    assert [len(r.get("suppressions", [])) for r in results] == [0, 0, 1, 1, 0]


# --------------------------------------------------------- a source run's log

@pytest.mark.parametrize("p,level", [(None, "warning"), (0.0, "warning"), (0.8999, "warning"), (0.9, "error"),
                                     (1.0, "error")])
def test_a_defective_verdict_is_an_error_when_sure(p, level):
    assert outputs.level(p) == level


def test_a_source_run_is_a_log_of_its_defective_verdicts():
    rows = [row(question(DIVISION), Verdict("是", GENERATED, response="判断:是\n\n原因：parts 为 0。")),
            row(question(NULL, function=None, start_line=30), scored(0.95)),
            row(question(NULL, function="first", start_line=2), scored(0.3)),
            row(question(DIVISION, start_line=50), Verdict(None, GENERATED, response="?"))]
    log = outputs.findings_log(rows, [NULL, DIVISION], INFO)
    sarif_schema_validator().validate(log)
    (run,) = log["runs"]
    assert run["tool"]["driver"]["name"] == "defect-judge" and run["properties"] == {PROPERTY_KEY: INFO.to_json()}
    assert run["tool"]["driver"]["rules"] == [
        {"id": "null_pointer_dereference", "name": "空指针解引用",
         "shortDescription": {"text": "空指针解引用 (null pointer dereference)"},
         "properties": {"tags": ["external/cwe/cwe-476"]}},
        {"id": "division_by_zero", "name": "除零", "shortDescription": {"text": "除零 (division by zero)"},
         "properties": {"tags": ["external/cwe/cwe-369"]}}]
    division, null = run["results"]  # the clean verdict and the missing one are not results
    assert (division["ruleId"], division["ruleIndex"], division["level"]) == ("division_by_zero", 1, "warning")
    assert division["message"] == {"text": "ratio: 除零: parts 为 0。"} and "rank" not in division
    assert division["locations"] == [{"physicalLocation": {"artifactLocation": {"uri": "src/a.c"},
                                                           "region": {"startLine": 10, "endLine": 14}}}]
    assert (null["ruleId"], null["ruleIndex"], null["level"], null["rank"]) == ("null_pointer_dereference", 0,
                                                                                "error", 95)
    assert null["message"] == {"text": "function: 空指针解引用 (P = 0.95)"}
    assert null["partialFingerprints"] == {"defectJudge/v1": rows[1]["prompt_sha256"]}
    assert null["properties"][PROPERTY_KEY]["functionLines"] == [30, 34]
    assert null["properties"][PROPERTY_KEY]["subtypeFrom"] is None
    empty = outputs.findings_log([], [DIVISION], INFO)
    sarif_schema_validator().validate(empty)
    assert empty["runs"][0]["results"] == []


# ----------------------------------------------------------------- summary

def test_the_summary_counts_each_subtype_and_each_reason_not_judged():
    rows = [row(question(finding=(0, 1)), scored(0.8)), row(question(finding=(0, 2)), scored(0.2), cut_chars=40),
            row(question(NULL, finding=(0, 3)), scored(0.6)),
            row(question(NULL, finding=(0, 4)), Verdict(None, GENERATED, response="?"))]
    unjudged = [Unjudged((0, 5), "no enclosing function"), Unjudged((0, 6), "outside the source root"),
                Unjudged((0, 7), "outside the source root")]
    text = outputs.summary_markdown(rows, unjudged, INFO, input_text="SARIF `x.sarif` (source root `.`)", seconds=4.0,
                                    prompts=3, findings=8)
    assert text.endswith("\n") and not text.endswith("\n\n")
    lines = text.splitlines()
    assert lines[0] == "# Judged: SARIF `x.sarif` (source root `.`)"
    assert lines[2] == ("Model `runs/demo/train` (lora), score mode; the verdict: the verdict head over the model's "
                        "hidden states mean@0.5; defective when P(是) >= 0.375 (chosen on dev in training (dev.jsonl, "
                        "step 4)).")
    assert lines[4] == "Findings: 8; asked about: 4; judged: 3 (defective 2, clean 1); not judged: 5."
    table = lines[lines.index("| subtype | questions | defective | clean | no verdict | mean P(defective) |"):]
    assert table[2:5] == ["| 空指针解引用 | 2 | 1 | 0 | 1 | 0.60 |", "| 除零 | 2 | 1 | 1 | 0 | 0.50 |",
                          "| **all** | 4 | 2 | 1 | 1 | 0.53 |"]
    assert "Code cut to fit the model: 1 of 4 question(s)." in lines
    reasons = lines[lines.index("| not judged, because | findings |") + 2:]
    assert reasons[:3] == ["| outside the source root | 2 |", "| no enclosing function | 1 |", f"| {NO_VERDICT} | 1 |"]
    assert lines[-1] == "Judged 3 distinct prompt(s) in 4.0 s (0.75 prompts/s; 4 question(s) asked them)."


def test_a_source_runs_summary_has_no_findings_line_and_no_speed_when_nothing_was_judged_now():
    rows = [row(question(), Verdict("是", GENERATED, response="判断:是"))]
    info = JudgeInfo("base", "base", None, "generate", GENERATED, 0.5, "argmax", "是", "否")
    text = outputs.summary_markdown(rows, [], info, input_text="sources `src`, 1 subtype(s)", seconds=0.0, prompts=0)
    assert "Findings:" not in text and "not judged, because" not in text and "prompts/s" not in text
    assert "the verdict: parsed from the model's generated answer; defective when P(是) >= 0.5 (argmax)." in text
    assert "| 除零 | 1 | 1 | 0 | 0 | – |" in text and "Code cut to fit the model: 0 of 1 question(s)." in text
    assert text == outputs.summary_markdown(rows, [], info, input_text="sources `src`, 1 subtype(s)", seconds=None,
                                            prompts=0)
