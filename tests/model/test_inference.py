"""defect_judge/model/inference.py on real models: batched generation and scoring give what one sample at a time
gives, the shared prefix and the prefill groups, and the probabilities of scored candidates."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from defect_judge.data.schema import read_records
from defect_judge.model import inference
from defect_judge.model import paths as model_paths
from defect_judge.model.chat import render_prompt
from defect_judge.model.loading import inference_model, load_tokenizer
from helpers import reference_logprob

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread

YES_NO = ["否", "是"]


@pytest.fixture(scope="module")
def embedded(embedded_model_dir):
    """The embedded model and tokenizer, loaded once as the evaluation loads them."""
    return loaded_for_inference(embedded_model_dir)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return loaded_for_inference(tiny_model_dir)


def loaded_for_inference(folder):
    resolved = model_paths.resolve_model(folder)
    return (inference_model(resolved.weights_path, adapter_base=resolved.adapter_base, dtype=None, device="cpu"),
            load_tokenizer(folder))


def prompts_of(tokenizer, path: Path) -> list[tuple[str, list[int]]]:
    records = read_records(path)
    texts = [render_prompt(tokenizer, r.prompt_messages) for r in records]
    pairs = [(text, inference.encode_prompt(tokenizer, text)) for text in texts]
    return sorted(pairs, key=lambda pair: -len(pair[1]))


def test_probabilities_of_candidate_logprobs():
    assert inference.probabilities([math.log(0.2), math.log(0.6)]) == pytest.approx([0.25, 0.75])


def test_an_answer_cut_inside_a_character_loses_only_the_partial_bytes(embedded_tokenizer):
    """SmolLM2's byte-level tokens split a CJK character over two or three tokens: an answer cut by
    max_new_tokens between them decodes to U+FFFD at its end, which the answer's text drops."""
    text = "不存在缓冲区溢出"
    ids = embedded_tokenizer.encode(text, add_special_tokens=False)
    cuts = [k for k in range(1, len(ids)) if embedded_tokenizer.decode(ids[:k]).endswith("\ufffd")]
    assert len(cuts) >= 3
    for k in cuts:
        answer = inference.decoded_answer(embedded_tokenizer, ids[:k], stopped=False)
        assert "\ufffd" not in answer and text.startswith(answer) and len(answer) >= k // 3
    assert inference.decoded_answer(embedded_tokenizer, ids, stopped=False) == text
    assert inference.decoded_answer(embedded_tokenizer, ids[:cuts[-1]], stopped=True).endswith("\ufffd")


# ------------------------------------------------------- batched vs unbatched

def test_batched_generation_equals_unbatched(embedded, six_samples, monkeypatch):
    model, tokenizer = embedded
    pairs = prompts_of(tokenizer, six_samples)
    prompts = [ids for _, ids in pairs]
    stop_ids = inference.stop_token_ids(tokenizer, model)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_ids
    one_by_one = [inference.generate_batch(model, tokenizer, [p], max_new_tokens=12, stop_ids=stop_ids)[0]
                  for p in prompts]
    # The system prompt and the task's opening words run once per batch (SharedPrefix), the rest per group.
    assert inference.common_prefix_length(prompts, keep=2) >= inference.SHARED_PREFIX_MIN_TOKENS > 0
    monkeypatch.setattr(inference, "PREFILL_MAX_WASTE", 0.0)  # every prompt prefilled apart, all decoded together
    assert len(inference.prefill_groups([len(p) for p in prompts])) == len(prompts)
    assert inference._prefill_cache(model, prompts, 12, "cpu") is not None  # the preallocated-cache path runs
    apart = inference.generate_batch(model, tokenizer, prompts, max_new_tokens=12, stop_ids=stop_ids)
    monkeypatch.setattr(inference, "PREFILL_MAX_WASTE", 10.0)  # one prefill group: heavy left padding
    monkeypatch.setattr(inference, "PREFILL_MAX_TOKENS_CPU", 100_000)
    padded = inference.generate_batch(model, tokenizer, prompts, max_new_tokens=12, stop_ids=stop_ids)
    monkeypatch.setattr(inference, "SHARED_PREFIX_MIN_TOKENS", 0)  # every prompt prefilled whole
    whole = inference.generate_batch(model, tokenizer, prompts, max_new_tokens=12, stop_ids=stop_ids)
    assert [a["response"] for a in apart] == [a["response"] for a in one_by_one]
    assert [a["response"] for a in padded] == [a["response"] for a in one_by_one]
    assert [a["response"] for a in whole] == [a["response"] for a in one_by_one]
    assert [a["generated_tokens"] for a in padded] == [a["generated_tokens"] for a in one_by_one]
    assert all(1 <= a["generated_tokens"] <= 12 for a in padded)
    assert any(a["response"].strip() for a in padded)


def test_score_batched_equals_unbatched_reference(embedded, six_samples, monkeypatch):
    model, tokenizer = embedded
    batch = [inference.candidate_sequences(tokenizer, text, YES_NO) for text, _ in prompts_of(tokenizer, six_samples)]
    for candidates in batch:  # the continuation is exactly 判断:{judgement}
        for c in candidates:
            assert tokenizer.decode(c.input_ids[c.start:]) == f"判断:{c.judgement}"
    expected = [[reference_logprob(model, c) for c in candidates] for candidates in batch]
    assert inference.common_prefix_length([c[0].input_ids for c in batch], keep=8) > 0  # the prefix runs once
    monkeypatch.setattr(inference, "PREFILL_MAX_WASTE", 10.0)  # all six in one left-padded forward
    monkeypatch.setattr(inference, "PREFILL_MAX_TOKENS_CPU", 100_000)
    assert len(inference.prefill_groups([len(c[0].input_ids) for c in batch],
                                        max_tokens=inference._token_budget("cpu"))) == 1
    got = inference.score_batch(model, batch, pad_id=tokenizer.pad_token_id)
    for row, want in zip(got, expected):
        assert row == pytest.approx(want, abs=1e-4)
    monkeypatch.setattr(inference, "PREFILL_MAX_WASTE", 0.0)  # each sample its own group after the shared prefix
    for row, want in zip(inference.score_batch(model, batch, pad_id=tokenizer.pad_token_id), expected):
        assert row == pytest.approx(want, abs=1e-4)


def test_score_multi_token_judgements_use_the_tail_pass(tiny, six_samples, monkeypatch):
    model, tokenizer = tiny
    vocabulary = ["无缺陷", "有缺陷", "不确定"]  # several tokens each, differing after the shared 判断:
    batch = [inference.candidate_sequences(tokenizer, text, vocabulary)
             for text, _ in prompts_of(tokenizer, six_samples)]
    assert any(len(c.input_ids) - inference._shared_prefix(cs) > 1 for cs in batch for c in cs)
    expected = [[reference_logprob(model, c) for c in candidates] for candidates in batch]
    monkeypatch.setattr(inference, "PREFILL_MAX_WASTE", 10.0)
    monkeypatch.setattr(inference, "PREFILL_MAX_TOKENS_CPU", 100_000)
    got = inference.score_batch(model, batch, pad_id=tokenizer.pad_token_id)
    for row, want in zip(got, expected):
        assert row == pytest.approx(want, abs=1e-4)


def test_common_prefix_length_leaves_own_tokens_and_skips_short_prefixes(monkeypatch):
    monkeypatch.setattr(inference, "SHARED_PREFIX_MIN_TOKENS", 3)
    head = [7, 7, 7, 7, 7]
    assert inference.common_prefix_length([head + [1, 2], head + [3, 4, 5]], keep=2) == 5
    assert inference.common_prefix_length([head + [1, 2], head + [1, 2, 5]], keep=2) == 5  # 7 shared, 2 kept
    assert inference.common_prefix_length([head + [1], head + [1, 9]], keep=3) == 3
    assert inference.common_prefix_length([[7, 7, 1], [7, 7, 2]], keep=1) == 0  # 2 < the minimum
    assert inference.common_prefix_length([head + [1, 2]], keep=1) == 0  # nothing to share with
    monkeypatch.setattr(inference, "SHARED_PREFIX_MIN_TOKENS", 0)
    assert inference.common_prefix_length([head + [1, 2], head + [3, 4, 5]], keep=2) == 0  # switched off


def test_prefill_groups_bound_padding_and_tokens():
    lengths = [500, 490, 480, 300, 295, 290, 100, 99]
    groups = inference.prefill_groups(lengths, max_waste=0.1, max_tokens=10_000)
    assert [list(g) for g in groups] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    by_tokens = inference.prefill_groups(lengths, max_waste=10, max_tokens=1000)
    assert [list(g) for g in by_tokens] == [[0, 1], [2, 3], [4, 5, 6], [7]]
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
