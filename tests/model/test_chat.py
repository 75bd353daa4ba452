"""defect_judge/model/chat.py on the embedded tokenizer and its chat template: the prompt as inference renders it,
the answer's span and its judgement's in the conversation and in its tokens, a template that would train on
something else refused, and the event cut (the longest prefix of the event that fits, by a few encodings of what
can fit; the task, the output format and the answer never cut)."""
from __future__ import annotations

import copy

import pytest

from defect_judge.data.schema import RawSample, raw_to_record
from defect_judge.model.chat import (MAX_CHARS_PER_TOKEN, TRUNCATION_MARK, EventCut, cut_event_to_fit,
                                     encode_conversation, event_length, render_conversation, render_prompt,
                                     require_chat_template, with_event_cut)
from defect_judge.templates import event_char_span, format_user
from helpers import OUTPUT_FORMAT, TASK, assert_input_error

SYSTEM = {"role": "system", "content": "你是代码审查专家。"}


def conversation(event: str = "int f(int *p) {\n    return *p;\n}", judgement: str = "是",
                 reason: str = "参数 p 未判空即解引用。") -> list[dict]:
    raw = RawSample("空指针解引用", TASK, event, OUTPUT_FORMAT, judgement, reason)
    return raw_to_record(raw, "a.json#0").messages


@pytest.fixture(scope="module")
def tokenizer(embedded_tokenizer):
    return embedded_tokenizer


def with_template(tokenizer, template: str | None):
    changed = copy.deepcopy(tokenizer)
    changed.chat_template = template
    return changed


# ------------------------------------------------------------------ rendering

def test_a_tokenizer_without_a_chat_template_is_refused_naming_where_it_came_from(tokenizer):
    require_chat_template(tokenizer)
    bare = with_template(tokenizer, None)
    assert_input_error(lambda: require_chat_template(bare, "/models/base"), "the tokenizer of /models/base",
                       "has no chat template", "--tokenizer_path")
    message = assert_input_error(lambda: require_chat_template(bare), "the tokenizer has no chat template")
    assert " of " not in message.split("has no")[0]


def test_the_prompt_is_every_turn_before_the_answer_and_the_generation_header(tokenizer):
    messages = [SYSTEM, *conversation()]
    prompt = render_prompt(tokenizer, messages)
    assert prompt == render_prompt(tokenizer, messages[:-1])  # the answer never reaches the prompt
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert SYSTEM["content"] in prompt and messages[1]["content"] in prompt and messages[2]["content"] not in prompt
    assert "You are a helpful AI assistant" not in prompt  # the template's default system prompt gives way


@pytest.mark.parametrize("system", [False, True])
def test_the_answer_span_is_the_answer_and_its_end_of_turn_token(tokenizer, system):
    messages = [SYSTEM] * system + conversation(judgement="有缺陷")
    rendered = render_conversation(tokenizer, messages)
    assert rendered.text[:rendered.prompt_end] == render_prompt(tokenizer, messages)
    assert rendered.text[rendered.prompt_end:rendered.answer_end] == messages[-1]["content"] + "<|im_end|>"
    assert rendered.text[rendered.answer_end:] == "\n"  # the template's newline is not the answer's
    assert rendered.text[slice(*rendered.judgement_span)] == "有缺陷"
    with pytest.raises(ValueError, match="last message must be the assistant's answer"):
        render_conversation(tokenizer, messages[:-1])


def test_a_template_that_changes_the_answer_is_refused_for_training(tokenizer):
    """A template that writes something of its own before the answer (or rewrites it) would train the model on
    text it is never asked for at inference."""
    template = tokenizer.chat_template.replace("message['content']",
                                               "('答：' if message['role'] == 'assistant' else '') + message['content']")
    changed = with_template(tokenizer, template)
    assert_input_error(lambda: render_conversation(changed, conversation()),
                       "does not render the prompt followed by the unchanged answer", "assistant-only training")


def test_the_tokens_trained_and_the_key_tokens(tokenizer):
    messages = [SYSTEM, *conversation(judgement="有缺陷")]  # a judgement of several byte-level tokens
    encoded = encode_conversation(tokenizer, messages)
    ids, trained, key = encoded.input_ids, encoded.trained, encoded.key
    assert len(ids) == len(trained) == len(key)
    first = trained.index(True)
    assert encoded.prompt_tokens == first
    assert tokenizer.decode(ids[:first]) == render_prompt(tokenizer, messages)
    assert trained == [False] * first + [True] * sum(trained) + [False] * (len(ids) - first - sum(trained))
    assert tokenizer.decode([t for t, on in zip(ids, trained) if on]) == messages[-1]["content"] + "<|im_end|>"
    assert tokenizer.decode([t for t, on in zip(ids, key) if on]) == "有缺陷"
    assert all(trained[i] for i, on in enumerate(key) if on)
    # the same text as the tokenizer makes of the rendered conversation
    assert ids == tokenizer(render_conversation(tokenizer, messages).text, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------ the event cut

def test_an_event_is_cut_to_a_prefix_with_the_mark_and_nothing_else_changes():
    messages = [SYSTEM, *conversation(event="line one\nline two")]
    before = copy.deepcopy(messages)
    cut = with_event_cut(messages, 6)
    assert messages == before  # the input is not changed
    assert cut[0] == SYSTEM and cut[2] == messages[2]
    assert cut[1]["content"] == format_user(TASK, "line o" + TRUNCATION_MARK, OUTPUT_FORMAT)
    assert event_length(messages) == len("line one\nline two")
    assert with_event_cut(messages, len("line one\nline two")) == messages  # keeping it all: no mark
    assert with_event_cut(messages, 0)[1]["content"] == format_user(TASK, TRUNCATION_MARK, OUTPUT_FORMAT)
    free = [{"role": "user", "content": "no template here"}]
    with pytest.raises(ValueError, match="does not follow the template"):
        event_length(free)
    with pytest.raises(ValueError, match="does not follow the template"):
        with_event_cut(free, 3)


def user_chars(messages: list[dict]) -> str:
    """A plain encoding: the user turn's characters (one "token" each)."""
    return next(m["content"] for m in messages if m["role"] == "user")


def test_the_longest_event_prefix_that_fits_is_kept():
    messages = conversation(event="x" * 1000)
    fixed = len(format_user(TASK, "", OUTPUT_FORMAT)) + len(TRUNCATION_MARK)  # all but the event
    encoded, cut, chars = cut_event_to_fit(messages, user_chars, len, fixed + 300)
    assert len(encoded) == fixed + 300 and chars == 700
    assert cut == with_event_cut(messages, 300) and encoded == user_chars(cut)
    assert cut[-1] == messages[-1]  # the answer is never cut
    # a conversation that fits comes back as it is
    whole = len(user_chars(messages))
    assert cut_event_to_fit(messages, user_chars, len, whole) == (user_chars(messages), messages, 0)
    # one character less than the whole: the mark costs more than that character, so more goes
    encoded, _, chars = cut_event_to_fit(messages, user_chars, len, whole - 1)
    assert len(encoded) <= whole - 1 and chars == len(TRUNCATION_MARK) + 1


def test_a_huge_event_costs_a_few_encodings_of_what_can_fit():
    messages = conversation(event="y" * 2_000_000)
    encoded_lengths = []

    def encode(candidate: list[dict]) -> str:
        text = user_chars(candidate)
        encoded_lengths.append(len(text))
        return text

    encoded, _, chars = cut_event_to_fit(messages, encode, len, 500)
    assert len(encoded) == 500 and chars > 1_990_000
    # the whole conversation once, the event removed once, then a binary search below MAX_CHARS_PER_TOKEN a token
    assert len(encoded_lengths) <= 2 + (MAX_CHARS_PER_TOKEN * 500).bit_length()
    assert max(encoded_lengths[1:]) <= MAX_CHARS_PER_TOKEN * 500 + len(format_user(TASK, "", OUTPUT_FORMAT)) + 10


def test_a_conversation_that_does_not_fit_without_its_event_is_an_event_cut():
    messages = conversation()
    without_event = user_chars(with_event_cut(messages, 0))
    with pytest.raises(EventCut) as raised:
        cut_event_to_fit(messages, user_chars, len, len(without_event) - 1)
    assert raised.value.shortest == without_event
    assert str(raised.value) == f"does not fit in {len(without_event) - 1} tokens even with its event removed"
    free = [{"role": "user", "content": "a question not in the template " * 10}]
    with pytest.raises(ValueError, match="does not follow the template"):
        cut_event_to_fit(free, user_chars, len, 20)
    assert cut_event_to_fit(free, user_chars, len, 1000)[2] == 0  # nothing to cut when it fits


def test_the_cut_on_real_tokens_keeps_the_answer_and_is_the_longest_that_fits(tokenizer):
    messages = conversation(event="\n".join(f"    total += values[{i}] / counts[{i}];" for i in range(200)))
    full = encode_conversation(tokenizer, messages)

    def encode(candidate):
        return encode_conversation(tokenizer, candidate)

    def tokens(encoded):
        return len(encoded.input_ids)

    encoded, cut, chars = cut_event_to_fit(messages, encode, tokens, 400)
    assert tokens(encoded) <= 400 < tokens(full) and chars > 0
    answer = [t for t, on in zip(encoded.input_ids, encoded.trained) if on]
    assert answer == [t for t, on in zip(full.input_ids, full.trained) if on]
    user = cut[0]["content"]
    start, end = event_char_span(user)
    original = messages[0]["content"]
    assert user[:start] == original[:event_char_span(original)[0]]  # the task, whole
    assert user[end:] == original[event_char_span(original)[1]:]  # the output format, whole
    kept = event_length(messages) - chars
    assert cut == with_event_cut(messages, kept)
    assert tokens(encode(with_event_cut(messages, kept + 1))) > 400  # one more character would not fit
