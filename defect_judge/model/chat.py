"""Rendering conversations with the tokenizer's own chat template.

Training and evaluation both go through here, so the model is asked at
inference exactly what it was trained on. The trained span is the assistant's
content plus the end-of-turn token that closes it (so the model learns to
stop); the template's own text (system prompt, role headers) is never trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from defect_judge.errors import InputError
from defect_judge.templates import judgement_char_span


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
