"""Rendering conversations with the tokenizer's own chat template, and cutting one that is too long.

Training and evaluation both go through here, so the model is asked at
inference exactly what it was trained on. The trained span is the assistant's
content plus the end-of-turn token that closes it (so the model learns to
stop); the template's own text (system prompt, role headers) is never trained.

A conversation longer than the model may take is cut by one rule, in training
(``train/samples.py``) and at inference (``evaluate/judges.py``) alike: the end
of its event (the code) goes, never the task, the output format, the template
or the answer, and ``TRUNCATION_MARK`` marks the cut (``cut_event_to_fit``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from defect_judge.errors import InputError
from defect_judge.templates import event_char_span, judgement_char_span

T = TypeVar("T")

TRUNCATION_MARK = "\n……"       # put where an event was cut, so the model can tell a cut event from a short one
# No token of code spans more characters than this: the search for the longest event that fits starts below it,
# so a huge event (a 20,000-line function) costs a few tokenizations of what can fit, not of all of it.
MAX_CHARS_PER_TOKEN = 64


@dataclass(frozen=True)
class RenderedConversation:
    text: str                    # the full rendered conversation
    prompt_end: int              # chars [0, prompt_end) are the prompt incl. the generation header
    answer_end: int              # chars [prompt_end, answer_end) are the answer + end-of-turn token
    judgement_span: tuple[int, int]  # chars of the {judgement} value


def require_chat_template(tokenizer, source: str = "") -> None:
    if not getattr(tokenizer, "chat_template", None):
        where = f" of {source}" if source else ""
        raise InputError(f"the tokenizer{where} has no chat template; use an instruct/chat model's tokenizer "
                         f"(or pass --tokenizer_path pointing to one)")


def render_prompt(tokenizer, messages: Sequence[dict]) -> str:
    """The prompt as the model sees it at inference: every non-assistant turn plus the generation header."""
    prompt = [m for m in messages if m["role"] != "assistant"]
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def render_conversation(tokenizer, messages: Sequence[dict]) -> RenderedConversation:
    """Render prompt + answer and locate the answer and its judgement in the text."""
    answer = messages[-1]
    if answer["role"] != "assistant":
        raise ValueError("the last message must be the assistant's answer")
    prompt_text = render_prompt(tokenizer, messages[:-1])
    full_text = tokenizer.apply_chat_template(list(messages), tokenize=False)
    content = answer["content"]
    if not full_text.startswith(prompt_text) or not full_text[len(prompt_text):].startswith(content):
        raise InputError("the tokenizer's chat template does not render the prompt followed by the unchanged answer; "
                         "it cannot be used for assistant-only training")
    content_end = len(prompt_text) + len(content)
    # The end-of-turn marker (e.g. <|im_end|>) follows the content; trailing
    # newlines after it belong to the template, not to the answer.
    suffix = full_text[content_end:]
    answer_end = content_end + len(suffix.rstrip())
    start, end = judgement_char_span(content)
    return RenderedConversation(full_text, len(prompt_text), answer_end,
                                (len(prompt_text) + start, len(prompt_text) + end))


@dataclass(frozen=True)
class EncodedConversation:
    input_ids: list[int]
    trained: list[bool]   # the token belongs to the answer span (a label)
    key: list[bool]       # the token carries part of the judgement value
    prompt_tokens: int    # tokens before the first trained one


def encode_conversation(tokenizer, messages: Sequence[dict]) -> EncodedConversation:
    """Token ids with the trained and key-token masks, from character offsets."""
    rendered = render_conversation(tokenizer, messages)
    encoding = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    trained = [end > rendered.prompt_end and start < rendered.answer_end for start, end in offsets]
    j_start, j_end = rendered.judgement_span
    key = [t and end > j_start and start < j_end for t, (start, end) in zip(trained, offsets)]
    if not any(trained):
        raise InputError("the answer renders to no tokens")
    return EncodedConversation(list(ids), trained, key, trained.index(True))


# --------------------------------------------------------------- the event cut

@dataclass(frozen=True)
class EventCut(Exception):
    """Even with its event removed the conversation does not fit: ``shortest`` is what remains of it."""
    shortest: object
    reason: str = ""

    def __str__(self) -> str:
        return self.reason


def with_event_cut(messages: Sequence[dict], keep: int) -> list[dict]:
    """The conversation with the event of its last user turn cut to its first ``keep`` characters, the mark after
    it (unchanged when ``keep`` covers the whole event). ValueError when the turn does not follow the template."""
    index = max(i for i, m in enumerate(messages) if m["role"] == "user")
    content = messages[index]["content"]
    start, end = event_char_span(content)
    event = content[start:end]
    cut = content[:start] + event[:keep] + (TRUNCATION_MARK if keep < len(event) else "") + content[end:]
    return [dict(m, content=cut) if i == index else dict(m) for i, m in enumerate(messages)]


def event_length(messages: Sequence[dict]) -> int:
    """Characters of the event of the last user turn (ValueError: the turn does not follow the template)."""
    content = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    start, end = event_char_span(content)
    return end - start


def cut_event_to_fit(messages: Sequence[dict], encode: Callable[[list[dict]], T], length: Callable[[T], int],
                     max_tokens: int) -> tuple[T, list[dict], int]:
    """(encoded, messages, characters cut): ``messages`` as they are when ``encode`` makes them at most
    ``max_tokens`` long, else with the longest prefix of their event that does. Raises EventCut when even no
    event is too long, ValueError when the user turn does not follow the template (no event to cut)."""
    encoded = encode(list(messages))
    if length(encoded) <= max_tokens:
        return encoded, list(messages), 0
    total = event_length(messages)
    shortest = encode(with_event_cut(messages, 0))
    if length(shortest) > max_tokens:
        raise EventCut(shortest, f"does not fit in {max_tokens} tokens even with its event removed")
    # The longest event prefix that fits; ``low`` always fits.
    low, high, best = 0, min(total, MAX_CHARS_PER_TOKEN * (max_tokens - length(shortest)) + 1), shortest
    while high - low > 1:
        middle = (low + high) // 2
        candidate = encode(with_event_cut(messages, middle))
        if length(candidate) <= max_tokens:
            low, best = middle, candidate
        else:
            high = middle
    return best, with_event_cut(messages, low), total - low
