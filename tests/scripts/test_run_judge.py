"""tools/run_judge.sh (make judge) on the tiny model: a source distribution given as a local file (tests never
reach the network) goes through cppcheck, the triage and the judging of one file's functions; an index that
cannot be reached is one line saying what to do."""
from __future__ import annotations

import json
import tarfile

from helpers import REPO_ROOT, run_script

SCRIPT = REPO_ROOT / "tools" / "run_judge.sh"
COUNTER_C = """\
#include <stdlib.h>

typedef struct { int size; char *buf; } counter;

counter *counter_new(int size)
{
    counter *c = malloc(sizeof *c);
    c->size = size;
    c->buf = malloc(size);
    return c;
}

int counter_step(counter *c, int by)
{
    if (c == NULL)
        return c->size;
    return c->size / by;
}
"""


def test_make_judge_triages_and_judges_a_source_distribution(head_model, tmp_path):
    sdist = tmp_path / "pycrypto-2.6.1.tar.gz"
    src = tmp_path / "pycrypto-2.6.1" / "src"
    src.mkdir(parents=True)
    (src / "_counter.c").write_text(COUNTER_C, encoding="utf-8")
    with tarfile.open(sdist, "w:gz") as archive:
        archive.add(tmp_path / "pycrypto-2.6.1", arcname="pycrypto-2.6.1")
    run = tmp_path / "run"
    result = run_script(SCRIPT, env={"JUDGE_MODEL": str(head_model), "JUDGE_SDIST": str(sdist), "RUN_DIR": str(run),
                                     "OMP_NUM_THREADS": "1"}, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = json.loads((run / "cppcheck.sarif").read_text(encoding="utf-8"))
    findings = len(log["runs"][0]["results"])
    assert findings >= 2  # the null dereference after its check, and the unchecked malloc
    triage = [json.loads(line) for line in (run / "triage" / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert triage and all(row["file"] == "src/_counter.c" and row["response"].startswith("判断:") for row in triage)
    judged = json.loads((run / "triage" / "judged.sarif").read_text(encoding="utf-8"))
    assert len(judged["runs"][0]["results"]) == findings
    functions = [json.loads(line) for line in
                 (run / "functions" / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted({row["function"] for row in functions}) == ["counter_new", "counter_step"]
    assert len(functions) == 2 * 8  # every subtype
    assert "Findings: " in result.stdout and "make judge: " in result.stdout


def test_make_judge_says_what_to_do_when_the_index_cannot_be_reached(head_model, tmp_path):
    result = run_script(SCRIPT, env={"JUDGE_MODEL": str(head_model), "RUN_DIR": str(tmp_path / "run"),
                                     "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}, timeout=300)
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if "failed:" in line]
    assert len(failures) == 1 and "cannot fetch pycrypto==2.6.1" in failures[0] and "JUDGE_SDIST" in failures[0]


def test_make_judge_without_a_trained_judge_says_to_run_the_demo(tmp_path):
    result = run_script(SCRIPT, env={"JUDGE_MODEL": str(tmp_path / "nothing"), "RUN_DIR": str(tmp_path / "run")})
    assert result.returncode == 2 and "run make demo first" in result.stderr
