"""The questions the judge of new code asks, from its three inputs: a static analyzer's findings (SARIF), the
functions of source files, or samples without an answer. A question is one function and one subtype, asked in
the training format (the catalogue's task phrase, the function as the event, the output format in the model's
own judgement words), so it reads like a training sample.

A SARIF finding that cannot be asked about (no subtype, its file missing or outside the source root, no
enclosing function, a binary file, a rule meaning "not analysed") is never dropped: it becomes an ``Unjudged``
with its reason, kept in place in the judged log and counted in the summary.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from defect_judge.data.schema import Record, raw_objects, raw_to_record, read_records, sample_id, validate_raw_sample
from defect_judge.data.subtypes import DefectSubtype, output_formats, question_task
from defect_judge.errors import InputError
from defect_judge.judge import sarif, sources
from defect_judge.judge.rules import RuleMap, finding_subtype
from defect_judge.templates import format_user

log = logging.getLogger(__name__)

NO_FUNCTION = "no enclosing function"
BINARY = "binary file"
NO_LINE = "no line"


@dataclass(frozen=True)
class Question:
    """One function and one subtype (or an input sample), as a chat record without an answer."""
    id: str
    subtype: str                         # the subtype's name, as the samples write it
    record: Record
    file: str | None = None              # as the input names it (the SARIF URI, the path given, the input file)
    function: str | None = None
    start_line: int | None = None
    end_line: int | None = None
    finding: tuple[int, int] | None = None   # the SARIF result it answers: (run, index)
    subtype_from: str | None = None      # what decided the subtype of a finding ("CWE-476", "rule table: ...")
    rule_id: str | None = None

    @property
    def prompt_key(self) -> str:
        """Equal for questions with one prompt (two findings in one function): such a prompt is judged once."""
        text = "\u0000".join(f"{m['role']}\u0000{m['content']}" for m in self.record.prompt_messages)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Unjudged:
    """A SARIF finding no question was asked about, and why."""
    finding: tuple[int, int]
    reason: str
    rule_id: str | None = None
    file: str | None = None
    line: int | None = None


def question_record(question_id: str, subtype: DefectSubtype, language: str, code: str, positive: str,
                    negative: str) -> Record:
    """The prompt about ``code``: the catalogue's task for its subtype and language, the code as the event, the
    output format in the model's own judgement words."""
    user = format_user(question_task(subtype.name, language), code, output_formats(positive, negative)[0])
    return Record(question_id, subtype.name, ({"role": "user", "content": user},))


def function_question(question_id: str, subtype: DefectSubtype, source: sources.SourceFile, function: sources.Function,
                      file: str, positive: str, negative: str, **finding) -> Question:
    record = question_record(question_id, subtype, source.language, function.code, positive, negative)
    return Question(question_id, subtype.name, record, file, function.name, function.start_line, function.end_line,
                    **finding)


class SourceCache:
    """Source files read once each, with one warning per file read with replacement characters."""

    def __init__(self):
        self.files: dict[Path, sources.SourceFile | None] = {}

    def read(self, path: Path, language: str) -> sources.SourceFile | None:
        if path not in self.files:
            source = sources.read_source(path, language)
            if source is not None and source.replaced:
                log.warning("%s is not UTF-8: read with replacement characters (U+FFFD) where its bytes are not",
                            path)
            self.files[path] = source
        return self.files[path]


# ------------------------------------------------------------------- SARIF

def finding_question(finding: sarif.Finding, log_: dict, source_root: Path, rule_map: RuleMap | None,
                     positive: str, negative: str, cache: SourceCache) -> Question | Unjudged:
    """The question a finding asks (about the function enclosing its defect site and its subtype), or why none."""
    where = (finding.run, finding.index)
    match = finding_subtype(finding.rule_id, finding.cwes, finding.message, rule_map)
    unjudged = {"rule_id": finding.rule_id, "file": finding.uri, "line": finding.line}
    if match.subtype is None:
        return Unjudged(where, match.how, **unjudged)
    path, why = sarif.artifact_path(finding, log_, source_root)
    if path is None:
        return Unjudged(where, why, **unjudged)
    language = sources.language_of(path)
    if language is None:
        return Unjudged(where, f"not C, C++ or Java (by its extension, {path.suffix or 'none'})", **unjudged)
    if finding.line is None:
        return Unjudged(where, NO_LINE, **unjudged)
    source = cache.read(path, language)
    if source is None:
        return Unjudged(where, BINARY, **unjudged)
    function = sources.enclosing_function(source, finding.line)
    if function is None:
        return Unjudged(where, NO_FUNCTION, **unjudged)
    return function_question(f"run{finding.run}/result{finding.index}", match.subtype, source, function,
                             finding.uri, positive, negative, finding=where, subtype_from=match.how,
                             rule_id=finding.rule_id)


def sarif_questions(log_: dict, source_root: Path, rule_map: RuleMap | None, positive: str,
                    negative: str) -> tuple[list[Question], list[Unjudged]]:
    """A question for every finding that can be asked about, and every other finding with its reason."""
    cache = SourceCache()
    asked, unjudged = [], []
    for finding in sarif.findings(log_):
        outcome = finding_question(finding, log_, source_root, rule_map, positive, negative, cache)
        (asked if isinstance(outcome, Question) else unjudged).append(outcome)
    return asked, unjudged


# ------------------------------------------------------------------ sources

def display_path(path: Path, root: Path | None) -> str:
    """A file as results name it: relative to ``root`` (posix) when inside it, else as given."""
    if root is not None and path.resolve().is_relative_to(root.resolve()):
        return path.resolve().relative_to(root.resolve()).as_posix()
    return path.as_posix()


def source_questions(paths: Sequence[str | os.PathLike], subtypes: Sequence[DefectSubtype], positive: str,
                     negative: str, root: Path | None = None) -> tuple[list[Question], list[str]]:
    """A question for every function of the files (folders walked) and every subtype asked, in file and line
    order; and the files skipped (binary ones, those with no function), said once each."""
    cache = SourceCache()
    asked, skipped = [], []
    for path in sources.source_files(paths):
        name = display_path(path, root)
        source = cache.read(path, sources.language_of(path))
        if source is None:
            skipped.append(f"{name} ({BINARY})")
            continue
        found = sources.functions(source)
        if not found:
            skipped.append(f"{name} (no function)")
        for function in found:
            for subtype in subtypes:
                question_id = f"{name}:{function.start_line}:{function.name or '?'}#{subtype.key}"
                asked.append(function_question(question_id, subtype, source, function, name, positive, negative))
    if skipped:
        log.warning("skipped %d file(s): %s", len(skipped), ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5
                                                                                      else ""))
    return asked, skipped


# -------------------------------------------------------------------- input

def input_questions(path: str | os.PathLike) -> list[Question]:
    """The samples of an input file as questions: chat records (``.jsonl`` lines with ``text``) or raw samples
    (the data format's ``instruction`` / ``input``; a ``.json`` file or ``.jsonl`` lines), with or without an
    answer (an answer is ignored: the judge does not read it)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("input file not found" if not path.exists() else "not a file", path=path, field="input")
    if path.suffix.lower() not in (".json", ".jsonl"):
        raise InputError("the input must be a .json or .jsonl file of samples", path=path, field="input")
    objects = list(raw_objects(path))
    if all(isinstance(obj, dict) and "text" in obj for _, _, obj in objects) and path.suffix.lower() == ".jsonl":
        records = read_records(path, require_assistant=False)
    else:
        records = [raw_to_record(validate_raw_sample(obj, path=path, sample=index, line=line, require_output=False),
                                 sample_id(path.name, index)) for index, line, obj in objects]
    answered = sum(r.assistant is not None for r in records)
    if answered:
        log.info("%d of %d samples carry an answer: the judge ignores it (eval/model_evaluation.py scores them "
                 "against it)", answered, len(records))
    return [Question(r.id, r.subtype, Record(r.id, r.subtype, tuple(r.prompt_messages), r.pair_id), path.as_posix())
            for r in records]
