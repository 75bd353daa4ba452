"""The prompt and answer templates of the design document, and the answer parser.

User turn:       任务：{task}\\n\\n事件：\\n{event}\\n\\n输出格式：\\n{output_format}
Assistant turn:  判断:{judgement}\\n\\n原因：{reason}
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

# The user template's headers around the event, so training can cut the event
# (and only the event) when a sample is too long.
_EVENT_HEAD, _EVENT_TAIL = "\n\n事件：\n", "\n\n输出格式：\n"
USER_TEMPLATE = "任务：{task}" + _EVENT_HEAD + "{event}" + _EVENT_TAIL + "{output_format}"
# The answer's two words, and the fixed text before its judgement and before its reason.
JUDGEMENT_WORD, REASON_WORD = "判断", "原因"
JUDGEMENT_PREFIX = f"{JUDGEMENT_WORD}:"
REASON_PREFIX = f"\n\n{REASON_WORD}："
ASSISTANT_TEMPLATE = JUDGEMENT_PREFIX + "{judgement}" + REASON_PREFIX + "{reason}"


def format_user(task: str, event: str, output_format: str) -> str:
    return USER_TEMPLATE.format(task=task, event=event, output_format=output_format)


def format_assistant(judgement: str, reason: str) -> str:
    return ASSISTANT_TEMPLATE.format(judgement=judgement, reason=reason)


def answer_prefix(judgement: str) -> str:
    """The answer up to its reason, ``判断:{judgement}\\n\\n原因：``: what a verdict head fixes before the model
    writes the reason."""
    return ASSISTANT_TEMPLATE.split("{reason}")[0].format(judgement=judgement)


def event_char_span(user_content: str) -> tuple[int, int]:
    """[start, end) of the event inside a user turn built by ``format_user``.

    The task comes first and the output format last, so the event is what lies
    between the first event header and the last output-format header.
    """
    start = user_content.find(_EVENT_HEAD)
    end = user_content.rfind(_EVENT_TAIL)
    if start < 0 or end < start + len(_EVENT_HEAD):
        shape = USER_TEMPLATE.format(task="…", event="…", output_format="…").replace("\n", "\\n")
        raise ValueError(f"user content does not follow the template {shape}")
    return start + len(_EVENT_HEAD), end


# 判断 may be wrapped in markdown bold and followed by a half- or full-width colon.
_JUDGEMENT_RE = re.compile(rf"\**{JUDGEMENT_WORD}\**\s*[:：]\s*\**\s*")
_REASON_RE = re.compile(rf"\**{REASON_WORD}\**\s*[:：]\s*")
# A judgement followed by a slash or bar lists the alternatives (判断:是/否), as the output format does.
_ALTERNATIVES_RE = re.compile(r"\s*[/／|｜]")
# Without a vocabulary the judgement runs to the first separator.
_FREE_JUDGEMENT_RE = re.compile(r"[^\s，,。.;；:：!！*]+")


@dataclass(frozen=True)
class ParsedAnswer:
    judgement: str | None  # None: the answer has no judgement from the vocabulary
    reason: str | None
    judgement_span: tuple[int, int] | None = None  # character span of the judgement in the text

    @property
    def valid(self) -> bool:
        return self.judgement is not None


def parse_answer(text: str, vocabulary: Iterable[str] | None = None) -> ParsedAnswer:
    """Read the judgement after ``判断`` and the reason after ``原因``.

    With a ``vocabulary`` (the judgements seen in the references, e.g. 是/否 or
    有缺陷/无缺陷) the judgement is the longest vocabulary entry that starts right
    after the colon; anything else is ``None`` (an invalid format). Without one,
    it is the first word after the colon. An answer that only lists the
    alternatives (``判断:是/否``, echoing the output format) has no judgement.
    """
    reason_match = _REASON_RE.search(text)
    reason = text[reason_match.end():].strip() if reason_match else None
    match = _JUDGEMENT_RE.search(text)
    if match is None:
        return ParsedAnswer(None, reason)
    rest_start = match.end()
    rest = text[rest_start:]
    if vocabulary is None:
        word = _FREE_JUDGEMENT_RE.match(rest)
        if word is None:
            return ParsedAnswer(None, reason)
        return ParsedAnswer(word.group(0), reason, (rest_start, rest_start + word.end()))
    for candidate in sorted(set(vocabulary), key=len, reverse=True):
        if candidate and rest.startswith(candidate):
            if _ALTERNATIVES_RE.match(rest, len(candidate)):
                return ParsedAnswer(None, reason)  # the format line echoed (判断:是/否), not a decision
            return ParsedAnswer(candidate, reason, (rest_start, rest_start + len(candidate)))
    return ParsedAnswer(None, reason)


def judgement_char_span(assistant_content: str) -> tuple[int, int]:
    """Character span of ``{judgement}`` in an answer built by ``format_assistant``."""
    if not assistant_content.startswith(JUDGEMENT_PREFIX):
        raise ValueError(f"assistant content does not start with {JUDGEMENT_PREFIX!r}")
    end = assistant_content.find(REASON_PREFIX, len(JUDGEMENT_PREFIX))
    if end < 0:
        end = len(assistant_content)
    return len(JUDGEMENT_PREFIX), end
