"""defect_judge/errors.py's run_main in a real process: each kind of failure is one line on stderr, with its
label, and its own exit code (2: the input is wrong, 1: the run failed through no fault of its input, 130:
interrupted); --debug lets the traceback through."""
from __future__ import annotations

import subprocess
import sys

import pytest

from defect_judge.errors import EXIT_INPUT_ERROR, EXIT_INTERRUPTED, EXIT_RUN_ERROR, InputError, RunError
from helpers import REPO_ROOT

RAISES = {
    "input": "raise InputError('must be a string', path='data.jsonl', line=3, sample='s1', field='id')",
    "run": "raise RunError('2 samples have no result after all ranks finished', path='out')",
    "os_read": "open('/nonexistent/defect-judge/input.jsonl')",
    "rust_os": "raise Exception('I/O error: No space left on device (os error 28)')",  # as safetensors says it
    "interrupted": "raise KeyboardInterrupt",
}


def run(body: str, *flags: str) -> subprocess.CompletedProcess:
    """A script named prog.py whose main does ``body``, under run_main."""
    code = ("import sys\n"
            "from defect_judge.errors import InputError, RunError, run_main\n"
            "sys.argv[0] = 'prog.py'\n"
            f"def main():\n    {body}\n"
            "run_main(main)\n")
    return subprocess.run([sys.executable, "-c", code, *flags], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("kind,code,line", [
    ("input", EXIT_INPUT_ERROR, "prog.py: error: data.jsonl:3, sample s1, field 'id': must be a string"),
    ("run", EXIT_RUN_ERROR, "prog.py: failed: out: 2 samples have no result after all ranks finished"),
    ("os_read", EXIT_INPUT_ERROR,
     "prog.py: error: cannot access '/nonexistent/defect-judge/input.jsonl': No such file or directory"),
    ("rust_os", EXIT_INPUT_ERROR, "prog.py: error: cannot write: I/O error: No space left on device (os error 28)"),
    ("interrupted", EXIT_INTERRUPTED, "interrupted"),
])
def test_each_failure_is_one_line_and_its_own_exit_code(kind, code, line):
    result = run(RAISES[kind])
    assert result.returncode == code, result.stderr
    assert result.stderr.splitlines() == [line] and result.stdout == ""


def test_the_exit_codes_tell_input_from_run_failures():
    assert (EXIT_INPUT_ERROR, EXIT_RUN_ERROR, EXIT_INTERRUPTED) == (2, 1, 130)
    assert InputError("x").exit_code == 2 and RunError("x").exit_code == 1
    assert not isinstance(RunError("x"), InputError)  # `except InputError` never swallows a failed run


@pytest.mark.parametrize("kind", ["input", "run"])
def test_debug_shows_the_traceback(kind):
    result = run(RAISES[kind], "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert ("InputError" if kind == "input" else "RunError") in result.stderr.splitlines()[-1]


def test_a_success_exits_zero_and_prints_nothing():
    result = run("pass")
    assert result.returncode == 0 and result.stderr == ""
