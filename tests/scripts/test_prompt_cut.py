"""A prompt longer than the model takes is cut at inference by training's rule (defect_judge/model/chat.py's
event cut): the end of the code goes, never the task or the output format; the evaluation and the judge of new
code say so, and record it per sample."""
from __future__ import annotations

import json
import time

import pytest

from defect_judge.data.schema import RawSample, raw_to_record
from defect_judge.evaluate.judges import fitted_prompt
from defect_judge.evaluate.results import load_results
from defect_judge.model.chat import TRUNCATION_MARK
from defect_judge.templates import event_char_span
from helpers import EVALUATE, OUTPUT_FORMAT, REPO_ROOT, TASK, run_script, write_records

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread

JUDGE = REPO_ROOT / "judge" / "judge_code.py"


def long_record(lines: int, judgement: str | None = "是"):
    event = "\n".join(f"    total += values[{i}] / counts[{i}];" for i in range(lines))
    raw = RawSample("除零", TASK, "int f(int *values, int *counts) {\n" + event + "\n}", OUTPUT_FORMAT, judgement,
                    "原因。" if judgement else None)
    return raw_to_record(raw, f"long-{lines}")


def test_a_huge_event_is_cut_to_the_longest_prefix_that_fits(embedded_tokenizer):
    record = long_record(20_000)
    started = time.perf_counter()
    prompt = fitted_prompt(embedded_tokenizer, record, 700)
    assert time.perf_counter() - started < 60  # a few tokenizations of what can fit, not of 20,000 lines
    assert len(prompt.ids) <= 700 and prompt.cut_chars > 0
    user = record.user
    start, end = event_char_span(user)
    assert prompt.text.count(TASK) == 1 and OUTPUT_FORMAT in prompt.text  # task and format intact
    kept = prompt.text[prompt.text.index(user[:start]) + start:prompt.text.index(TRUNCATION_MARK)]
    assert user[start:end].startswith(kept) and len(user[start:end]) - len(kept) == prompt.cut_chars
    # one character more would not fit: the longest prefix, as training cuts
    assert len(fitted_prompt(embedded_tokenizer, record, len(prompt.ids) - 1).ids) < len(prompt.ids)
    assert fitted_prompt(embedded_tokenizer, record, None).cut_chars == 0


def test_the_evaluation_and_the_judge_cut_and_record_it(tiny_model_dir, tmp_path):
    rows = [long_record(400, "是").to_json(), long_record(3, "否").to_json() | {"id": "short"}]
    test = write_records(tmp_path / "test.jsonl", rows)
    result = run_script(EVALUATE, "--model_path", tiny_model_dir, "--test_dataset_path", test, "--output_dir",
                        tmp_path / "eval", "--mode", "score", "--max_length", "512", check=True)
    assert "1 sample(s) longer than the model takes" in result.stderr and "long-400" in result.stderr
    samples = {s["id"]: s for s in load_results(tmp_path / "eval")["samples"]}
    assert samples["long-400"]["event_cut_chars"] > 0 and "event_cut_chars" not in samples["short"]
    questions = write_records(tmp_path / "questions.jsonl", [r | {"text": r["text"][:1]} for r in rows])
    judged = run_script(JUDGE, "--model_path", tiny_model_dir, "--judgements", "是", "否", "--input", questions,
                        "--output_dir", tmp_path / "judge", "--max_length", "512", check=True)
    assert "1 question(s) longer than the model takes" in judged.stderr
    verdicts = {row["id"]: row for row in map(json.loads, (tmp_path / "judge" / "verdicts.jsonl").read_text(
        encoding="utf-8").splitlines())}
    assert verdicts["long-400"]["code_cut"] and verdicts["long-400"]["code_cut_chars"] == \
        samples["long-400"]["event_cut_chars"]
    assert not verdicts["short"]["code_cut"]
    assert verdicts["long-400"]["p_defective"] == samples["long-400"]["probabilities"]["是"]
