"""defect_judge/evaluate/judges.py on the embedded tokenizer and the tiny real model: the prompt of a record is the one
training feeds the model (cut to fit by its rule, or one line naming the sample when it cannot be), longest first;
room for a scored answer; each mechanism's verdicts (scored, generated, a verdict head's at its threshold, with what
the model alone answers beside it) and the result row the evaluation writes around a verdict.

The evaluation script runs these end to end (tests/scripts/test_model_evaluation.py,
tests/scripts/test_evaluation_with_heads.py); the cut of a huge event is tests/scripts/test_prompt_cut.py."""
from __future__ import annotations

import json
import math

import pytest
import torch

from defect_judge.data.schema import Record
from defect_judge.evaluate.judges import (Judge, Prompt, Verdict, answer_tokens, fitted_prompt, head_verdicts,
                                          prompts_longest_first, result_rows, scored_verdicts)
from defect_judge.evaluate.results import load_results
from defect_judge.evaluate.verdicts import GENERATED, HEAD, SCORED
from defect_judge.model import inference
from defect_judge.model.hidden_states import prompt_features
from defect_judge.model.verdict_head import VerdictHead, head_probabilities
from defect_judge.templates import answer_prefix, parse_answer
from defect_judge.train.samples import fit_sample, prompt_ids
from helpers import assert_input_error, chat_records, results_of

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread

YES_NO = ["否", "是"]


@pytest.fixture(scope="module")
def batch(embedded_tokenizer) -> list[Prompt]:
    """Four prompts of both judgements and three subtypes, longest first."""
    return prompts_longest_first(embedded_tokenizer, chat_records(6)[2:])


@pytest.fixture(scope="module")
def head(tiny_model, batch) -> VerdictHead:
    """A verdict head for the tiny model (hidden size 64, 2 layers) as a fit leaves one: features standardised by
    their mean and spread over the batch, random weights."""
    head = VerdictHead([1, 2], "mean", 64, 2, positive="是", negative="否", spec="mean@0.5,1.0")
    features = prompt_features(tiny_model, [prompt.ids for prompt in batch], head.layers, head.pooling)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        head.mean.copy_(features.mean(0))
        head.scale.copy_(features.std(0) + 1e-6)
        head.weight.copy_(torch.randn(head.dim, generator=generator) / head.dim ** 0.5)
    return head.eval()


# ------------------------------------------------------------------ prompts

def test_a_prompt_is_the_one_training_feeds_the_model_and_the_longest_come_first(embedded_tokenizer):
    records = chat_records(8, event_repeat=2)
    prompts = prompts_longest_first(embedded_tokenizer, records)
    lengths = [len(prompt.ids) for prompt in prompts]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) > 1
    assert sorted(prompt.record.id for prompt in prompts) == sorted(record.id for record in records)
    for prompt in prompts:
        assert prompt.ids == prompt_ids(fit_sample(embedded_tokenizer, prompt.record, 4096)) and prompt.cut_chars == 0
        assert inference.encode_prompt(embedded_tokenizer, prompt.text) == prompt.ids
    # within a budget between the shortest and the longest, only the longer ones are cut, each to fit
    budget = lengths[len(lengths) // 2]
    fitted = {prompt.record.id: prompt for prompt in prompts_longest_first(embedded_tokenizer, records, budget)}
    for prompt in prompts:
        cut = fitted[prompt.record.id]
        assert len(cut.ids) <= budget and (cut.cut_chars > 0) == (len(prompt.ids) > budget)
        assert cut.ids == prompt.ids or cut.cut_chars


def test_a_prompt_that_cannot_be_cut_to_fit_is_one_line_naming_the_sample(embedded_tokenizer):
    record = chat_records(1)[0]
    assert_input_error(lambda: fitted_prompt(embedded_tokenizer, record, 30), f"sample {record.id}", "field 'text'",
                       "its prompt does not fit in 30 tokens even with its event (the code) removed",
                       "tokens of task, output format and template")
    # a user turn that does not follow the template has no event to cut
    free = Record("free-form", "除零", ({"role": "user", "content": "请看这段代码：" + "x = y / z; " * 200},
                                        {"role": "assistant", "content": "判断:是\n\n原因：z 可能为零。"}))
    assert_input_error(lambda: fitted_prompt(embedded_tokenizer, free, 100), "sample free-form", "field 'text'",
                       "its prompt is longer than the 100 tokens the model takes, and it cannot be cut")
    assert fitted_prompt(embedded_tokenizer, free).cut_chars == 0  # without a limit it is asked whole


def test_the_answer_tokens_make_room_for_every_scored_answer(embedded_tokenizer, batch):
    for vocabulary in (YES_NO, ["无缺陷", "有缺陷"], ["no", "yes"]):
        room = answer_tokens(embedded_tokenizer, vocabulary)
        for prompt in batch:
            candidates = inference.candidate_sequences(embedded_tokenizer, prompt.text, vocabulary)
            needed = max(len(candidate.input_ids) for candidate in candidates) - len(prompt.ids)
            assert 0 < needed <= room, (vocabulary, needed, room)


# ------------------------------------------------------------------ the rows of the results

def test_a_result_row_puts_the_verdict_beside_the_reference_as_the_results_file_reads_it(tmp_path):
    records = chat_records(3)  # references 是, 否, 是
    verdicts = [Verdict("是", GENERATED, response="判断:是\n\n原因：malloc 的返回值未检查。", generated_tokens=9,
                        stopped=True),
                Verdict("否", SCORED, 0.3, {"是": 0.3, "否": 0.7}, details={"logprobs": {"是": -1.2, "否": -0.36}}),
                Verdict(None, GENERATED, response="这段代码", generated_tokens=4, stopped=False)]
    rows = result_rows([Prompt(record, "", [], cut) for record, cut in zip(records, (0, 12, 0))], verdicts)
    assert list(rows[0]) == ["id", "subtype", "reference", "prediction", "correct", "verdict_source", "response",
                             "generated_tokens", "stopped"]
    assert list(rows[1]) == ["id", "subtype", "reference", "prediction", "correct", "verdict_source",
                             "probabilities", "logprobs", "event_cut_chars"]
    assert [(row["id"], row["reference"], row["correct"]) for row in rows] == [
        (records[0].id, "是", True), (records[1].id, "否", True), (records[2].id, "是", False)]
    assert rows[1]["event_cut_chars"] == 12 and rows[2]["prediction"] is None and not rows[2]["stopped"]
    assert verdicts[0].reason == "malloc 的返回值未检查。" and verdicts[1].reason is None
    path = tmp_path / "evaluation_results.json"
    path.write_text(json.dumps(results_of(rows), ensure_ascii=False), encoding="utf-8")
    results = load_results(path)
    assert results["overall"]["correct"] == 2 and results["overall"]["invalid_format"] == 1
    assert results["overall"]["truncated_invalid"] == 1  # the answer cut before its judgement


# ------------------------------------------------------------------ verdicts on the tiny model

def test_score_mode_gives_p_defective_whatever_the_order_of_the_vocabulary(tiny_model, embedded_tokenizer, batch):
    verdicts = scored_verdicts(tiny_model, embedded_tokenizer, batch, YES_NO)
    reordered = scored_verdicts(tiny_model, embedded_tokenizer, batch, ["是", "否"])
    for verdict, other in zip(verdicts, reordered):
        assert verdict.source == SCORED and verdict.p_defective == verdict.probabilities["是"]
        assert other.p_defective == pytest.approx(verdict.p_defective, abs=1e-6)
        assert other.prediction == verdict.prediction == max(verdict.probabilities, key=verdict.probabilities.get)
        logprobs = verdict.details["logprobs"]
        total = sum(math.exp(value) for value in logprobs.values())
        assert verdict.probabilities == pytest.approx({j: math.exp(logprobs[j]) / total for j in YES_NO})
        assert verdict.fields() == {"probabilities": verdict.probabilities, "logprobs": logprobs}
    other_words = scored_verdicts(tiny_model, embedded_tokenizer, batch, ["无缺陷", "有缺陷"])
    assert all(v.p_defective == v.probabilities["有缺陷"] for v in other_words)  # 有缺陷 means defective
    judged = Judge(tiny_model, embedded_tokenizer, YES_NO, "score").verdicts(batch)
    assert [v.p_defective for v in judged] == pytest.approx([v.p_defective for v in verdicts], abs=1e-6)


def test_generate_mode_reads_the_judgement_off_each_answer(tiny_model, embedded_tokenizer, batch):
    stop_ids = inference.stop_token_ids(embedded_tokenizer, tiny_model)
    judge = Judge(tiny_model, embedded_tokenizer, YES_NO, "generate", max_new_tokens=3, stop_ids=stop_ids)
    assert judge.source == GENERATED
    for verdict in judge.verdicts(batch):
        assert verdict.source == GENERATED and verdict.p_defective is None and verdict.probabilities is None
        assert 1 <= verdict.generated_tokens <= 3 and isinstance(verdict.response, str)
        assert verdict.prediction == parse_answer(verdict.response, YES_NO).judgement
        assert verdict.stopped or verdict.generated_tokens == 3  # not stopped: it ran into max_new_tokens


def test_a_head_decides_at_its_threshold_beside_what_the_model_alone_answers(tiny_model, embedded_tokenizer, batch,
                                                                           head):
    p = head_probabilities(tiny_model, head, [prompt.ids for prompt in batch])
    low, high = max(zip(sorted(p), sorted(p)[1:]), key=lambda gap: gap[1] - gap[0])
    assert high - low > 1e-4, p
    threshold = (low + high) / 2  # in the widest gap: both verdicts are given
    calls = ["是" if value >= threshold else "否" for value in p]
    assert set(calls) == {"是", "否"}
    verdicts = head_verdicts(tiny_model, embedded_tokenizer, batch, YES_NO, head, mode="score", threshold=threshold)
    alone = scored_verdicts(tiny_model, embedded_tokenizer, batch, YES_NO)
    assert [v.prediction for v in verdicts] == calls and {v.source for v in verdicts} == {HEAD}
    for verdict, value, model in zip(verdicts, p, alone):
        assert verdict.p_defective == pytest.approx(value, abs=1e-6)
        assert verdict.probabilities == pytest.approx({"是": value, "否": 1 - value}, abs=1e-6)
        assert verdict.details["model_prediction"] == model.prediction
        assert verdict.details["model_probabilities"] == pytest.approx(model.probabilities, abs=1e-6)
    quick = head_verdicts(tiny_model, embedded_tokenizer, batch, YES_NO, head, mode="score", threshold=threshold,
                          model_answer=False)
    assert [v.prediction for v in quick] == calls and all(v.details == {} for v in quick)
    # generate mode: the same verdicts open the answers the model writes on
    written = Judge(tiny_model, embedded_tokenizer, YES_NO, "generate", head=head, threshold=threshold,
                    max_new_tokens=2, stop_ids=inference.stop_token_ids(embedded_tokenizer, tiny_model)).verdicts(batch)
    assert [v.prediction for v in written] == calls
    assert all(v.response.startswith(answer_prefix(v.prediction)) and v.source == HEAD for v in written)
    assert [v.p_defective for v in written] == pytest.approx(p, abs=1e-6)
