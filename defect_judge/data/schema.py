"""The two file schemas: raw samples (``dataset/output``) and chat JSONL records.

Raw sample (JSON object; a file holds one, a list of them, or one a line)::

    {"instruction": [{"subtype": "缺陷类型"}],
     "input": {"task": "...", "event": "...", "output_format": "..."},
     "output": {"judgement": "...", "reason": "..."},
     "pair_id": "..."}                     (optional)

Chat record (one JSON object a line, written by ``dataset/convert_and_split.py``)::

    {"id": "null_pointer.json#3", "subtype": "空指针解引用", "pair_id": "...",   (pair_id optional)
     "text": [{"role": "user", "content": "任务：…"}, {"role": "assistant", "content": "判断:是\\n\\n原因：…"}]}

``id`` is stable across runs and unique; evaluation and comparison pair samples by it.
``pair_id`` marks samples that are versions of the same code (a defective function
and its fixed twin, as in PrimeVul); a pair always stays on one side of a split.
"""
from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from defect_judge.errors import InputError
from defect_judge.templates import format_assistant, format_user, parse_answer

log = logging.getLogger(__name__)

RAW_INPUT_FIELDS = ("task", "event", "output_format")
RAW_OUTPUT_FIELDS = ("judgement", "reason")


@dataclass(frozen=True)
class RawSample:
    subtype: str
    task: str
    event: str
    output_format: str
    judgement: str | None   # None: a question without an answer
    reason: str | None
    pair_id: str | None = None
    # The label fields whose surrounding whitespace was stripped (see clean_label): reported, not compared.
    stripped: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Record:
    id: str
    subtype: str
    text: tuple[dict, ...]
    pair_id: str | None = None
    line: int | None = field(default=None, compare=False)  # where the record was read, for error messages
    stripped: tuple[str, ...] = field(default=(), compare=False)  # as RawSample.stripped

    @property
    def messages(self) -> list[dict]:
        return [dict(m) for m in self.text]

    def _content(self, role: str) -> str | None:
        return next((m["content"] for m in self.text if m["role"] == role), None)

    @property
    def user(self) -> str:
        return self._content("user")  # type: ignore[return-value]

    @property
    def assistant(self) -> str | None:
        return self._content("assistant")

    @property
    def prompt_messages(self) -> list[dict]:
        """Every turn before the assistant's: what the model sees at inference."""
        return [dict(m) for m in self.text if m["role"] != "assistant"]

    @property
    def judgement(self) -> str | None:
        """The reference judgement (``判断:{judgement}``) of the assistant turn."""
        return parse_answer(self.assistant).judgement if self.assistant is not None else None

    def to_json(self) -> dict:
        pair = {} if self.pair_id is None else {"pair_id": self.pair_id}
        return {"id": self.id, "subtype": self.subtype, **pair, "text": self.messages}


# ------------------------------------------------------------------ labels

def clean_label(value: str, *, field: str, where: dict) -> str:
    """The one rule for a label (subtype, judgement) of a raw sample or a chat record.

    Surrounding whitespace is stripped: "是 " and "是" are one class, "A\\n" and "A" one subtype
    (the caller counts the strips and says so once, see ``report_stripped``). A control
    character left inside is an error: it breaks every printed table and Markdown summary,
    and no label means one.
    """
    label = value.strip()
    bad = next((ch for ch in label if unicodedata.category(ch) == "Cc"), None)
    if bad is not None:
        raise InputError(f"must be a single line of text without control characters, got U+{ord(bad):04X} "
                         f"inside {label!r}", field=field, **where)
    return label


def _judgement_padded(assistant: str) -> bool:
    """Whitespace around the judgement word of an answer (判断: 是 / 判断:是 ⏎): the parser skips it,
    so the judgement is already stripped; this only tells ``report_stripped`` that it was there."""
    span = parse_answer(assistant).judgement_span
    if span is None:
        return False
    before, after = assistant[span[0] - 1:span[0]], assistant[span[1]:span[1] + 1]
    return before.isspace() or (after.isspace() and after not in "\r\n")


def report_stripped(items: Iterable[RawSample | Record], source: str | os.PathLike) -> int:
    """Say once, for a whole file or folder, how many labels lost surrounding whitespace; returns the count."""
    counts = Counter(name for item in items for name in item.stripped)
    if counts:
        fields = ", ".join(f"{name} of {n} sample(s)" for name, n in sorted(counts.items()))
        log.warning("%s: stripped the whitespace around %s (\"是 \" and \"是\" are one judgement, "
                    "\"A \" and \"A\" one subtype)", source, fields)
    return sum(counts.values())


# ---------------------------------------------------------------- raw samples

def _string_field(obj: dict, key: str, field: str, where: dict) -> str:
    if key not in obj:
        raise InputError("required field is missing", field=field, **where)
    value = obj[key]
    if not isinstance(value, str):
        raise InputError(f"must be a string, got {type(value).__name__}", field=field, **where)
    if not value.strip():
        raise InputError("must not be empty", field=field, **where)
    return value


def _object_field(obj: dict, key: str, where: dict) -> dict:
    if key not in obj:
        raise InputError("required field is missing", field=key, **where)
    value = obj[key]
    if not isinstance(value, dict):
        raise InputError(f"must be an object, got {type(value).__name__}", field=key, **where)
    return value


def validate_raw_sample(obj: Any, *, path: str | os.PathLike, sample: int, line: int | None = None,
                        require_output: bool = True) -> RawSample:
    """Check one raw sample against the document's format; the error names the field. Without
    ``require_output`` (a question about new code) its ``output`` may be absent: judgement and reason are None."""
    where = {"path": path, "sample": sample, "line": line}
    if not isinstance(obj, dict):
        raise InputError(f"a sample must be a JSON object, got {type(obj).__name__}", **where)
    instruction = obj.get("instruction")
    if "instruction" not in obj:
        raise InputError("required field is missing", field="instruction", **where)
    if not isinstance(instruction, list) or not instruction:
        raise InputError("must be a non-empty list like [{\"subtype\": \"...\"}]", field="instruction", **where)
    if not isinstance(instruction[0], dict):
        raise InputError("must be an object", field="instruction[0]", **where)
    subtype = _string_field(instruction[0], "subtype", "instruction[0].subtype", where)
    inputs = _object_field(obj, "input", where)
    values = {k: _string_field(inputs, k, f"input.{k}", where) for k in RAW_INPUT_FIELDS}
    if require_output or "output" in obj:
        outputs = _object_field(obj, "output", where)
        values |= {k: _string_field(outputs, k, f"output.{k}", where) for k in RAW_OUTPUT_FIELDS}
    else:
        values |= {"judgement": None, "reason": None}
    labels = {"instruction[0].subtype": subtype, "output.judgement": values["judgement"]}
    labels = {name: value for name, value in labels.items() if value is not None}
    cleaned = {name: clean_label(value, field=name, where=where) for name, value in labels.items()}
    stripped = tuple(name for name in labels if cleaned[name] != labels[name])
    values["judgement"] = cleaned.get("output.judgement")
    return RawSample(subtype=cleaned["instruction[0].subtype"], **values, pair_id=_pair_id(obj, where),
                     stripped=stripped)


def _pair_id(obj: dict, where: dict) -> str | None:
    """The optional ``pair_id``: a non-empty string when present."""
    if "pair_id" not in obj or obj["pair_id"] is None:
        return None
    value = obj["pair_id"]
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"must be a non-empty string, got {value!r}", field="pair_id", **where)
    return value


def raw_to_record(sample: RawSample, sample_id: str) -> Record:
    """The chat record of a raw sample; one without an answer (a question, ``require_output=False``) has no
    assistant turn."""
    user = {"role": "user", "content": format_user(sample.task, sample.event, sample.output_format)}
    answer = ({"role": "assistant", "content": format_assistant(sample.judgement, sample.reason)},
              ) if sample.judgement is not None else ()
    return Record(id=sample_id, subtype=sample.subtype, text=(user, *answer), pair_id=sample.pair_id)


# ----------------------------------------------------------- raw sample files

def read_data_text(path: Path) -> str:
    """A data file's text: UTF-8 (a BOM is fine) and not empty, else one line naming the file."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"not UTF-8 text ({error.reason} at byte {error.start}); save the file as UTF-8 "
                         f"(e.g. `iconv -f GBK -t UTF-8`)", path=path) from None
    if not text.strip():
        raise InputError("empty file", path=path)
    return text


def raw_objects(path: Path) -> Iterator[tuple[int, int | None, object]]:
    """(sample index, line, object) for each sample in one raw file: one a line in a ``.jsonl``; one object or a
    list of them in a ``.json``."""
    text = read_data_text(path)
    if path.suffix.lower() == ".jsonl":
        index = 0
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"invalid JSON: {error.msg} (column {error.colno})", path=path,
                                 line=line_number) from None
            yield index, line_number, obj
            index += 1
        return
    try:
        top = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"invalid JSON: {error.msg} (column {error.colno})", path=path, line=error.lineno) from None
    if isinstance(top, dict):
        yield 0, None, top
    elif isinstance(top, list):
        if not top:
            raise InputError("the list holds no samples", path=path)
        yield from ((i, None, obj) for i, obj in enumerate(top))
    else:
        raise InputError(f"the top level must be a sample object or a list of them, got {type(top).__name__}",
                         path=path)


def sample_id(relative: str, index: int) -> str:
    """Stable across runs and unique: the file (relative to input_dir) and the sample's position in it."""
    return f"{relative}#{index}"


# ------------------------------------------------------------- chat records

_ROLE_ORDERS = (("user", "assistant"), ("system", "user", "assistant"), ("user",), ("system", "user"))


def validate_record(obj: Any, *, path: str | os.PathLike, line: int, require_assistant: bool = True) -> Record:
    where = {"path": path, "line": line}
    if not isinstance(obj, dict):
        raise InputError(f"a record must be a JSON object, got {type(obj).__name__}", **where)
    record_id = obj.get("id")
    if record_id is None:
        # Files in the document's original format carry no id: the line stands in.
        record_id = f"{Path(path).name}:{line}"
    elif not isinstance(record_id, (str, int)) or isinstance(record_id, bool) or str(record_id) == "":
        raise InputError("must be a non-empty string", field="id", **where)
    subtype = obj.get("subtype")
    if not isinstance(subtype, str) or not subtype.strip():
        raise InputError("required non-empty string" if subtype is None else "must be a non-empty string",
                         field="subtype", **where)
    text = obj.get("text")
    if not isinstance(text, list) or not text:
        raise InputError("must be a non-empty list of {role, content} messages", field="text", **where)
    for i, message in enumerate(text):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise InputError("must be an object with string 'role' and 'content'", field=f"text[{i}]", **where)
    roles = tuple(m["role"] for m in text)
    if roles not in _ROLE_ORDERS:
        raise InputError(f"roles must be [system,] user, assistant in that order, got {list(roles)}",
                         field="text", **where)
    if require_assistant and roles[-1] != "assistant":
        raise InputError("has no assistant turn (the reference answer)", field="text", **where)
    label = clean_label(subtype, field="subtype", where=where)
    stripped = ("subtype",) if label != subtype else ()
    if roles[-1] == "assistant" and _judgement_padded(text[-1]["content"]):
        stripped += ("judgement",)
    return Record(id=str(record_id), subtype=label,
                  text=tuple({"role": m["role"], "content": m["content"]} for m in text),
                  pair_id=_pair_id(obj, where | {"sample": str(record_id)}), line=line, stripped=stripped)


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line; bad JSON names the line."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    with handle:
        try:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    yield number, json.loads(text)
                except json.JSONDecodeError as error:
                    raise InputError(f"invalid JSON: {error.msg} (column {error.colno})", path=path, line=number) from None
        except UnicodeDecodeError as error:
            raise InputError(f"not UTF-8 text ({error.reason} at byte {error.start})", path=path) from None


def read_records(path: str | os.PathLike, *, require_assistant: bool = True) -> list[Record]:
    """Read and validate a chat JSONL file; ids must be unique and the file non-empty."""
    records, seen = [], {}
    for line, obj in iter_jsonl(path):
        record = validate_record(obj, path=path, line=line, require_assistant=require_assistant)
        if record.id in seen:
            raise InputError(f"duplicate id {record.id!r} (first on line {seen[record.id]})",
                             path=path, line=line, field="id")
        seen[record.id] = line
        records.append(record)
    if not records:
        raise InputError("no records: the file is empty", path=path)
    report_stripped(records, path)
    return records
