"""The judge of new code's output folder: the names of what it holds, the rows of ``verdicts.jsonl``, the marks it
adds to a SARIF log, the SARIF log of a source run, and the summary.

    OUTPUT_DIR/
      verdicts.jsonl               one row a question: where (file, function, lines), the subtype, the verdict,
                                   P(defective), the reason, the mechanism, whether the code was cut, the prompt's
                                   sha256 (and, for a SARIF finding, its rule and place in the log)
      summary.md                   the counts, per subtype, and the findings not judged and why
      judged.sarif                 --sarif: the input log, every judged result marked (properties, rank, a
                                   suppression when clean); --source: one result per defective verdict
      judged.upload.sarif          --sarif: the same without the results judged clean (for GitHub code scanning,
                                   which ignores suppressions, rank and properties)
      verdicts.partial[.rankR].jsonl   prompts judged by an unfinished run (resumable)
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from defect_judge.data.subtypes import DefectSubtype
from defect_judge.evaluate.judges import Prompt, Verdict
from defect_judge.evaluate.verdicts import MECHANISMS, SCORED
from defect_judge.judge.questions import Question, Unjudged
from defect_judge.judge.sarif import PROPERTY_KEY, SARIF_VERSION, Annotation

VERDICTS_FILE = "verdicts.jsonl"
SUMMARY_FILE = "summary.md"
JUDGED_SARIF = "judged.sarif"
UPLOAD_SARIF = "judged.upload.sarif"
PARTIAL_STEM = "verdicts.partial"
OUTPUT_FILES = (VERDICTS_FILE, SUMMARY_FILE, JUDGED_SARIF, UPLOAD_SARIF)
TOOL_NAME = "defect-judge"
SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
ERROR_AT = 0.9  # a defective verdict at least this sure is an "error" in a source run's log, else a "warning"
NO_VERDICT = "no verdict: the model's answer gave no judgement"


@dataclass(frozen=True)
class JudgeInfo:
    """Who judged: written into every mark and the log's run properties."""
    model: str
    model_kind: str
    head: str | None          # the verdict head's spec, or None
    mode: str
    verdict_source: str
    threshold: float
    threshold_from: str
    positive: str
    negative: str

    def to_json(self) -> dict:
        return {"model": self.model, "modelKind": self.model_kind, "head": self.head, "mode": self.mode,
                "verdictSource": self.verdict_source, "threshold": self.threshold,
                "thresholdFrom": self.threshold_from, "judgements": [self.positive, self.negative]}


# ------------------------------------------------------------------ rows

def prompt_row(prompt: Prompt, verdict: Verdict, *, threshold: float | None, positive: str, negative: str) -> dict:
    """The partial file's row of one distinct prompt: its verdict (a scored one decided at ``threshold`` when
    there is one), the prompt's sha256 and how much of its code was cut."""
    prediction = verdict.prediction
    if verdict.source == SCORED and threshold is not None and verdict.p_defective is not None:
        prediction = positive if verdict.p_defective >= threshold else negative
    row = {"id": prompt.record.id, "prediction": prediction, "verdict_source": verdict.source,
           "p_defective": verdict.p_defective, "reason": verdict.reason,
           "prompt_sha256": hashlib.sha256(prompt.text.encode("utf-8")).hexdigest(), "cut_chars": prompt.cut_chars}
    return row | verdict.fields()


def verdict_row(question: Question, judged: dict, positive: str) -> dict:
    """The ``verdicts.jsonl`` row of a question, from its prompt's row."""
    prediction = judged["prediction"]
    row = {"id": question.id, "file": question.file, "function": question.function,
           "start_line": question.start_line, "end_line": question.end_line, "subtype": question.subtype,
           "verdict": prediction, "defective": None if prediction is None else prediction == positive,
           "p_defective": judged["p_defective"], "reason": judged["reason"],
           "verdict_source": judged["verdict_source"], "code_cut": judged["cut_chars"] > 0,
           "code_cut_chars": judged["cut_chars"], "prompt_sha256": judged["prompt_sha256"]}
    if question.finding is not None:
        row |= {"rule_id": question.rule_id, "sarif_result": list(question.finding),
                "subtype_from": question.subtype_from}
    if judged.get("response") is not None:
        row["response"] = judged["response"]
    return row


# ---------------------------------------------------------- SARIF marks

def _mark(row: dict, info: JudgeInfo) -> dict:
    return {"judged": True, "verdict": row["verdict"], "defective": row["defective"],
            "p_defective": row["p_defective"], "subtype": row["subtype"], "subtypeFrom": row.get("subtype_from"),
            "reason": row["reason"], "function": row["function"], "functionLines": [row["start_line"], row["end_line"]],
            "codeCut": row["code_cut"], "promptSha256": row["prompt_sha256"], "verdictSource": row["verdict_source"],
            "model": info.model, "head": info.head}


def clean_justification(row: dict, info: JudgeInfo) -> str:
    """Why a clean verdict suppresses its finding: the model's reason, or (score mode) who said so and how sure."""
    if row["reason"]:
        return row["reason"]
    sure = f", P(defective) = {row['p_defective']:.3f}" if row["p_defective"] is not None else ""
    return f"judged {info.negative} (no {row['subtype']}) by {info.model}{sure}"


def triage_annotations(rows: Sequence[dict], unjudged: Sequence[Unjudged], info: JudgeInfo, *,
                       accept_clean: bool = False) -> tuple[dict[tuple[int, int], Annotation], set[tuple[int, int]]]:
    """Each finding's mark (judged: the verdict, rank = round(100 P), a suppression when clean; not judged:
    why), and the findings judged clean."""
    annotations, clean = {}, set()
    for row in rows:
        where = tuple(row["sarif_result"])
        if row["defective"] is None:  # the model gave no verdict: the finding stays as the analyzer left it
            annotations[where] = Annotation({"judged": False, "notJudged": NO_VERDICT, "model": info.model})
            continue
        rank = round(100 * row["p_defective"]) if row["p_defective"] is not None else None
        suppress = None if row["defective"] else clean_justification(row, info)
        annotations[where] = Annotation(_mark(row, info), rank, suppress, accepted=accept_clean)
        if not row["defective"]:
            clean.add(where)
    for item in unjudged:
        annotations[item.finding] = Annotation({"judged": False, "notJudged": item.reason})
    return annotations, clean


# --------------------------------------------------------- a source run's log

def level(p_defective: float | None) -> str:
    return "error" if p_defective is not None and p_defective >= ERROR_AT else "warning"


def findings_log(rows: Sequence[dict], subtypes: Sequence[DefectSubtype], info: JudgeInfo) -> dict:
    """A SARIF 2.1.0 log of a source run: a rule per subtype asked (with its CWE tags), a result per defective
    verdict at its function's lines."""
    rules = [{"id": s.key, "name": s.name, "shortDescription": {"text": f"{s.name} ({s.key.replace('_', ' ')})"},
              "properties": {"tags": [f"external/cwe/cwe-{cwe}" for cwe in s.cwes]}} for s in subtypes]
    index = {s.name: i for i, s in enumerate(subtypes)}
    results = []
    for row in rows:
        if not row["defective"]:
            continue
        subtype = subtypes[index[row["subtype"]]]
        sure = f" (P = {row['p_defective']:.2f})" if row["p_defective"] is not None else ""
        text = f"{row['function'] or 'function'}: {subtype.name}{sure}" + (f": {row['reason']}" if row["reason"]
                                                                          else "")
        result = {"ruleId": subtype.key, "ruleIndex": index[row["subtype"]], "level": level(row["p_defective"]),
                  "message": {"text": text},
                  "locations": [{"physicalLocation": {"artifactLocation": {"uri": row["file"]}, "region": {
                      "startLine": row["start_line"], "endLine": row["end_line"]}}}],
                  "partialFingerprints": {"defectJudge/v1": row["prompt_sha256"]},
                  "properties": {PROPERTY_KEY: _mark(row, info)}}
        if row["p_defective"] is not None:
            result["rank"] = round(100 * row["p_defective"])
        results.append(result)
    return {"version": SARIF_VERSION, "$schema": SCHEMA_URI,
            "runs": [{"tool": {"driver": {"name": TOOL_NAME, "informationUri": "https://github.com/",
                                          "rules": rules}},
                      "results": results, "properties": {PROPERTY_KEY: info.to_json()}}]}


# ----------------------------------------------------------------- summary

def summary_markdown(rows: Sequence[dict], unjudged: Sequence[Unjudged], info: JudgeInfo, *, input_text: str,
                     seconds: float | None, prompts: int, findings: int | None = None) -> str:
    """The run's counts: questions and verdicts overall and per subtype, code cut, findings not judged by reason,
    speed."""
    def counts(part: Sequence[dict]) -> str:
        defective = sum(r["defective"] is True for r in part)
        clean = sum(r["defective"] is False for r in part)
        scores = [r["p_defective"] for r in part if r["p_defective"] is not None]
        mean = f"{sum(scores) / len(scores):.2f}" if scores else "–"
        return f"{len(part)} | {defective} | {clean} | {len(part) - defective - clean} | {mean}"

    lines = [f"# Judged: {input_text}", "",
             f"Model `{info.model}` ({info.model_kind}), {info.mode} mode; the verdict: "
             f"{MECHANISMS[info.verdict_source].description}{' ' + info.head if info.head else ''}; defective when "
             f"P({info.positive}) >= {info.threshold:.4g} ({info.threshold_from}).", ""]
    if findings is not None:
        defective, clean = sum(r["defective"] is True for r in rows), sum(r["defective"] is False for r in rows)
        lines += [f"Findings: {findings}; asked about: {len(rows)}; judged: {defective + clean} (defective "
                  f"{defective}, clean {clean}); not judged: {findings - defective - clean}.", ""]
    lines += ["| subtype | questions | defective | clean | no verdict | mean P(defective) |",
              "|---|---:|---:|---:|---:|---:|"]
    for subtype in sorted({r["subtype"] for r in rows}):
        lines.append(f"| {subtype} | {counts([r for r in rows if r['subtype'] == subtype])} |")
    lines.append(f"| **all** | {counts(rows)} |")
    cut = sum(r["code_cut"] for r in rows)
    lines += ["", f"Code cut to fit the model: {cut} of {len(rows)} question(s)."]
    reasons = Counter(item.reason for item in unjudged) + Counter(NO_VERDICT for r in rows if r["defective"] is None)
    if reasons:
        lines += ["", "| not judged, because | findings |", "|---|---:|"]
        lines += [f"| {reason} | {n} |" for reason, n in reasons.most_common()]
    if seconds:
        lines += ["", f"Judged {prompts} distinct prompt(s) in {seconds:.1f} s ({prompts / seconds:.2f} prompts/s; "
                      f"{len(rows)} question(s) asked them)."]
    return "\n".join(lines) + "\n"


def output_paths(output_dir: str | Path) -> dict[str, Path]:
    return {name: Path(output_dir) / name for name in OUTPUT_FILES}
