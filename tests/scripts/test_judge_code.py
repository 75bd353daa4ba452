"""judge/judge_code.py on a tiny real model: its three inputs (a real cppcheck SARIF of a C file the test writes,
source files, samples without a judgement), the judged SARIF checked against the SARIF 2.1.0 schema and against
its input, the same verdicts as eval/model_evaluation.py for the same samples (both modes, with and without a
verdict head), a run killed and resumed, two ranks, and every refusal in one line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from defect_judge import free_port
from defect_judge.evaluate.results import load_results
from defect_judge.judge.outputs import PARTIAL_STEM
from defect_judge.judge.sarif import PROPERTY_KEY
from defect_judge.evaluate.results_folder import partial_file
from helpers import (EVALUATE, PYTHON, REPO_ROOT, assert_clean_failure, run_cppcheck, run_script,
                     sarif_schema_validator, write_subset)

JUDGE = REPO_ROOT / "judge" / "judge_code.py"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
SPEC = "mean@0.5,1.0"  # conftest.head_model's

C_FILE = """\
#include <stdlib.h>
#include <stdio.h>

struct item { int id; };

int first_id(int n)
{
    struct item *it = NULL;
    if (n > 3)
        it = malloc(sizeof *it);
    return it->id;
}

int ratio(int total)
{
    int parts = 0;
    return total / parts;
}

char *copy_name(const char *name)
{
    char *out = malloc(16);
    out[0] = name[0];
    return NULL;
}
"""
CPP_FILE = """\
#include <vector>
template <typename T>
T sum(const std::vector<T> &xs) {
    T total = 0;
    for (auto x : xs) total += x;
    return total;
}
struct Box {
    int size() const { return n; }
    int n;
};
"""
JAVA_FILE = """\
public class Account {
    private final int[] slots;
    public Account(int n) {
        slots = new int[n];
    }
    public int at(int i) {
        return slots[i];
    }
}
"""


def judge(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_script(JUDGE, *args, env=ONE_THREAD | (env or {}))


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def c_project(tmp_path_factory) -> tuple[Path, Path]:
    """A C file with a null-pointer dereference, a division by zero and a leak, and cppcheck's SARIF of it (run
    from the project folder, so its paths are relative to it)."""
    root = tmp_path_factory.mktemp("c-project")
    (root / "src").mkdir()
    (root / "src" / "items.c").write_text(C_FILE, encoding="utf-8")
    log = root / "cppcheck.sarif"
    run_cppcheck("src", log, cwd=root)
    return root, log


# ------------------------------------------------------------------ SARIF

def test_triage_marks_every_cppcheck_finding_and_changes_nothing_else(head_model, c_project, tmp_path):
    root, log = c_project
    original = json.loads(log.read_text(encoding="utf-8"))
    rules = [r["ruleId"] for r in original["runs"][0]["results"]]
    assert {"nullPointer", "zerodiv", "memleak"} <= set(rules)
    out = tmp_path / "triage"
    result = judge("--model_path", head_model, "--sarif", log, "--source_root", root, "--output_dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    judged = json.loads((out / "judged.sarif").read_text(encoding="utf-8"))
    sarif_schema_validator().validate(judged)
    results = judged["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == rules  # every finding, in order
    for before, after in zip(original["runs"][0]["results"], results):
        mark = after["properties"][PROPERTY_KEY]
        assert mark["judged"] is True and mark["verdictSource"] == "head" and mark["head"] == SPEC
        assert after["rank"] == round(100 * mark["p_defective"])
        clean = mark["defective"] is False
        assert [s["status"] for s in after.get("suppressions", [])] == (["underReview"] if clean else [])
        stripped = {k: v for k, v in after.items() if k not in ("rank", "suppressions", "properties")}
        assert stripped == {k: v for k, v in before.items() if k != "properties"}
    assert judged["runs"][0]["tool"] == original["runs"][0]["tool"]
    assert judged["runs"][0]["properties"][PROPERTY_KEY]["model"] == str(head_model)
    by_rule = {row["rule_id"]: row for row in rows_of(out)}
    assert by_rule["nullPointer"]["function"] == "first_id" and by_rule["nullPointer"]["subtype"] == "空指针解引用"
    assert by_rule["zerodiv"]["function"] == "ratio" and by_rule["zerodiv"]["subtype_from"] == "CWE-369"
    assert by_rule["memleak"]["function"] == "copy_name" and by_rule["memleak"]["subtype"] == "内存泄漏"
    upload = json.loads((out / "judged.upload.sarif").read_text(encoding="utf-8"))
    kept = [r for r in results if r["properties"][PROPERTY_KEY]["defective"]]
    assert upload["runs"][0]["results"] == kept
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert f"Findings: {len(rules)}" in summary and summary in result.stdout


def test_a_finding_outside_the_source_root_is_kept_unjudged(head_model, c_project, tmp_path):
    root, log = c_project
    secret = tmp_path / "secret.c"
    secret.write_text(C_FILE, encoding="utf-8")
    data = json.loads(log.read_text(encoding="utf-8"))
    escaping = json.loads(json.dumps(data["runs"][0]["results"][0]))
    escaping["locations"][-1]["physicalLocation"]["artifactLocation"]["uri"] = "../" * 12 + str(secret)[1:]
    unknown = json.loads(json.dumps(data["runs"][0]["results"][0])) | {"ruleId": "knownConditionTrueFalse"}
    data["runs"][0]["results"] += [escaping, unknown]
    (tmp_path / "more.sarif").write_text(json.dumps(data), encoding="utf-8")
    out = tmp_path / "out"
    result = judge("--model_path", head_model, "--sarif", tmp_path / "more.sarif", "--source_root", root,
                   "--output_dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "judged.sarif").read_text(encoding="utf-8"))["runs"][0]["results"]
    assert results[-2]["properties"][PROPERTY_KEY] == {"judged": False, "notJudged": "outside the source root"}
    assert results[-1]["properties"][PROPERTY_KEY]["notJudged"].startswith("no subtype")
    assert "outside the source root | 1" in (out / "summary.md").read_text(encoding="utf-8")
    assert len(rows_of(out)) == len(results) - 2


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "invalid JSON"),
    (json.dumps({"version": "2.0.0", "runs": [{"results": []}]}), "2.1.0"),
    (json.dumps({"version": "2.1.0", "runs": []}), "runs"),
])
def test_a_bad_sarif_is_one_line_and_writes_nothing(head_model, tmp_path, content, fragment):
    log = tmp_path / "bad.sarif"
    log.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    result = judge("--model_path", head_model, "--sarif", log, "--source_root", tmp_path, "--output_dir", out)
    assert_clean_failure(result, str(log), fragment)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("content, fragment", [("[1, 2", "invalid JSON"), ('{"nullPointer": "溢出"}', "unknown subtype")])
def test_a_bad_rule_map_is_one_line(head_model, c_project, tmp_path, content, fragment):
    root, log = c_project
    rule_map = tmp_path / "rules.json"
    rule_map.write_text(content, encoding="utf-8")
    result = judge("--model_path", head_model, "--sarif", log, "--source_root", root, "--rule_map", rule_map,
                   "--output_dir", tmp_path / "out")
    assert_clean_failure(result, str(rule_map), fragment)


# ---------------------------------------------------------------- sources

def test_every_function_of_c_cpp_and_java_files_for_the_subtypes_asked(head_model, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "items.c").write_text(C_FILE, encoding="utf-8")
    (src / "sum.cpp").write_text(CPP_FILE, encoding="utf-8")
    (src / "Account.java").write_text(JAVA_FILE, encoding="utf-8")
    (src / "notes.txt").write_text("not code", encoding="utf-8")
    out = tmp_path / "out"
    result = judge("--model_path", head_model, "--source", src, "--source_root", tmp_path, "--subtypes", "空指针解引用",
                   "division_by_zero", "--output_dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(out)
    functions = sorted({(row["file"], row["function"], row["start_line"]) for row in rows})
    assert functions == [("src/Account.java", "Account", 3), ("src/Account.java", "at", 6),
                         ("src/items.c", "copy_name", 20), ("src/items.c", "first_id", 6),
                         ("src/items.c", "ratio", 14), ("src/sum.cpp", "size", 9), ("src/sum.cpp", "sum", 2)]
    assert len(rows) == 2 * len(functions)
    assert {row["subtype"] for row in rows} == {"空指针解引用", "除零"}
    log = json.loads((out / "judged.sarif").read_text(encoding="utf-8"))
    sarif_schema_validator().validate(log)
    defective = [row for row in rows if row["defective"]]
    assert len(log["runs"][0]["results"]) == len(defective)
    for result_, row in zip(log["runs"][0]["results"], defective):
        location = result_["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == row["file"]
        assert location["region"]["startLine"] == row["start_line"]
    rules = {rule["id"]: rule for rule in log["runs"][0]["tool"]["driver"]["rules"]}
    assert rules["null_pointer_dereference"]["properties"]["tags"] == ["external/cwe/cwe-476"]


def test_an_unknown_subtype_is_one_line(head_model, tmp_path):
    (tmp_path / "a.c").write_text(C_FILE, encoding="utf-8")
    result = judge("--model_path", head_model, "--source", tmp_path / "a.c", "--subtypes", "空指针",
                   "--output_dir", tmp_path / "out")
    assert_clean_failure(result, "unknown subtype", "null_pointer_dereference")


# ---------------------------------------------------------- samples, and the evaluation's verdicts

def unlabelled_copy(source: Path, target: Path, n: int) -> Path:
    """The first ``n`` records of a split without their answers."""
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()[:n]]
    target.write_text("".join(json.dumps(r | {"text": r["text"][:-1]}, ensure_ascii=False) + "\n" for r in rows),
                      encoding="utf-8")
    return target


@pytest.mark.parametrize("mode", ["score", "generate"])
@pytest.mark.parametrize("with_head", [True, False])
def test_the_judge_gives_the_evaluations_verdicts(head_model, tiny_model_dir, shipped_split, tmp_path, mode,
                                                   with_head):
    """The shipped test samples given without their answers get the verdict and P(defective) the evaluation
    gives the same samples with them: one judge, one path."""
    test = write_subset(shipped_split["test_file"], tmp_path / "test.jsonl", 10)
    questions = unlabelled_copy(test, tmp_path / "questions.jsonl", 10)
    model = ["--model_path", head_model] if with_head else ["--model_path", tiny_model_dir]
    common = [*model, "--mode", mode, "--max_new_tokens", "4", "--batch_size", "4"]
    evaluated = run_script(EVALUATE, *common, "--test_dataset_path", test, "--output_dir", tmp_path / "eval",
                           env=ONE_THREAD, check=True)
    judged = judge(*common, *([] if with_head else ["--judgements", "是", "否"]), "--input", questions,
                   "--output_dir", tmp_path / "judge")
    assert judged.returncode == 0, judged.stderr[-3000:]
    samples = load_results(tmp_path / "eval")["samples"]
    rows = rows_of(tmp_path / "judge")
    assert [row["id"] for row in rows] == [s["id"] for s in samples]
    assert [row["verdict"] for row in rows] == [s["prediction"] for s in samples], evaluated.stderr[-2000:]
    assert {row["verdict_source"] for row in rows} == {s["verdict_source"] for s in samples}
    for row, sample in zip(rows, samples):
        expected = sample.get("probabilities", {}).get("是")
        assert row["p_defective"] == (None if expected is None else pytest.approx(expected, abs=1e-9))
        if mode == "generate":
            assert row["response"] == sample["response"]


def test_raw_samples_without_an_output_are_questions(tiny_model_dir, tmp_path):
    raw = json.loads((REPO_ROOT / "dataset" / "output" / "division_by_zero.json").read_text(encoding="utf-8"))[:3]
    for sample in raw:
        del sample["output"]
    (tmp_path / "new.json").write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    result = judge("--model_path", tiny_model_dir, "--judgements", "是", "否", "--input", tmp_path / "new.json",
                   "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(tmp_path / "out")
    assert [row["id"] for row in rows] == ["new.json#0", "new.json#1", "new.json#2"]
    assert all(row["subtype"] == "除零" and row["verdict"] in ("是", "否") for row in rows)


def test_a_model_with_no_recorded_vocabulary_needs_judgements(tiny_model_dir, six_samples, tmp_path):
    result = judge("--model_path", tiny_model_dir, "--input", six_samples, "--output_dir", tmp_path / "out")
    assert_clean_failure(result, "--judgements", "no judgement vocabulary is recorded")


def test_an_earlier_run_is_not_replaced_without_overwrite(tiny_model_dir, six_samples, tmp_path):
    common = ["--model_path", tiny_model_dir, "--judgements", "是", "否", "--input", six_samples, "--output_dir",
              tmp_path / "out"]
    assert judge(*common).returncode == 0
    assert_clean_failure(judge(*common), "verdicts.jsonl", "--overwrite")
    assert judge(*common, "--overwrite").returncode == 0


# -------------------------------------------------------- resume, two ranks

def test_a_killed_run_resumes_to_the_uninterrupted_verdicts(tiny_model_dir, shipped_split, tmp_path):
    questions = unlabelled_copy(shipped_split["test_file"], tmp_path / "questions.jsonl", 16)
    common = ["--model_path", tiny_model_dir, "--judgements", "是", "否", "--input", questions, "--mode",
              "generate", "--max_new_tokens", "24", "--batch_size", "1"]
    out = tmp_path / "killed"
    partial = partial_file(out, 0, PARTIAL_STEM)
    process = subprocess.Popen([PYTHON, str(JUDGE), *map(str, common), "--output_dir", str(out)], cwd=REPO_ROOT,
                               env=os.environ | ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while (partial.read_bytes().count(b"\n") if partial.exists() else 0) < 3 and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = partial.read_bytes().count(b"\n") - 1
    assert not (out / "verdicts.jsonl").exists()
    resumed = judge(*common, "--output_dir", out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {done} prompts already judged" in resumed.stderr
    assert not partial.exists()
    straight = judge(*common, "--output_dir", tmp_path / "straight")
    assert straight.returncode == 0
    keys = ("id", "verdict", "reason", "prompt_sha256")
    assert [{k: r[k] for k in keys} for r in rows_of(out)] == \
        [{k: r[k] for k in keys} for r in rows_of(tmp_path / "straight")]


def test_two_ranks_give_the_single_process_verdicts(head_model, shipped_split, tmp_path):
    questions = unlabelled_copy(shipped_split["test_file"], tmp_path / "questions.jsonl", 9)
    common = ["--model_path", head_model, "--input", questions, "--batch_size", "2"]
    one = judge(*common, "--output_dir", tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_script(PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                     str(free_port()), JUDGE, *common, "--output_dir", tmp_path / "two", env=ONE_THREAD, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    single, double = rows_of(tmp_path / "one"), rows_of(tmp_path / "two")
    assert [r["id"] for r in double] == [r["id"] for r in single]
    assert [r["verdict"] for r in double] == [r["verdict"] for r in single]
    assert [r["p_defective"] for r in double] == pytest.approx([r["p_defective"] for r in single], abs=1e-5)
    assert not list((tmp_path / "two").glob("*.partial*"))
