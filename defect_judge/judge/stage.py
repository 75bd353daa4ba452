"""The judge of new code, stage by stage: the questions its input asks, the decision threshold, the judging
(distinct prompts only, batched longest first, shared over the ranks, resumable) and the output folder.
``judge/judge_code.py`` runs them in order.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from defect_judge.data.labels import labelled_records
from defect_judge.data.schema import Record, read_records
from defect_judge.data.subtypes import DefectSubtype
from defect_judge.distributed import Ranks, all_ranks
from defect_judge.errors import InputError, RunError
from defect_judge.evaluate import judges
from defect_judge.evaluate.dev_threshold import EvaluatedModel, check_dev_results
from defect_judge.evaluate.head_choice import HeadChoice
from defect_judge.evaluate.partial import load_finished, remove_partials
from defect_judge.evaluate.results import load_results
from defect_judge.evaluate.results_folder import partial_file, results_file
from defect_judge.evaluate.session import JudgeSession, finished_rows, judge_share, report_cuts
from defect_judge.evaluate.thresholds import choose_threshold, positive_scores, threshold_text
from defect_judge.fileio import write_jsonl_atomic, write_text_atomic
from defect_judge.judge import outputs, sarif
from defect_judge.judge.questions import Question, Unjudged, input_questions, sarif_questions, source_questions
from defect_judge.judge.rules import RuleMap
from defect_judge.model.judge_card import JudgeCard

log = logging.getLogger(__name__)

RECORDED = "model"  # --threshold_from model: the threshold recorded with the model (chosen on dev in training)
NO_THRESHOLD = ("", "none")


@dataclass(frozen=True)
class Questions:
    """What the input asks, and what it holds besides: the SARIF log and its findings not asked about."""
    asked: list[Question]
    unjudged: list[Unjudged]
    described: str                    # the input in a few words, for the summary
    log: dict | None = None           # --sarif: the input log
    subtypes: tuple[DefectSubtype, ...] = ()  # --source: the subtypes asked

    @property
    def findings(self) -> int | None:
        return len(self.asked) + len(self.unjudged) if self.log is not None else None


def sarif_input(path: str, source_root: str, rule_map: RuleMap | None, card: JudgeCard) -> Questions:
    log_ = sarif.read_log(path)
    root = Path(source_root or ".")
    if not root.is_dir():
        raise InputError("not a folder" if root.exists() else "source root not found", path=root,
                         field="source_root")
    asked, unjudged = sarif_questions(log_, root, rule_map, card.positive, card.negative)
    log.info("%s: %d finding(s); %d asked about, %d not judged", path, len(asked) + len(unjudged), len(asked),
             len(unjudged))
    return Questions(asked, unjudged, f"SARIF `{path}` (source root `{root}`)", log_)


def source_input(paths: Sequence[str], subtypes: Sequence[DefectSubtype], source_root: str,
                 card: JudgeCard) -> Questions:
    asked, skipped = source_questions(paths, subtypes, card.positive, card.negative,
                                      Path(source_root) if source_root else None)
    if not asked:
        raise InputError(f"no function found in {', '.join(paths)}" + (f" (skipped: {', '.join(skipped)})" if skipped
                                                                       else ""), field="source")
    log.info("%d question(s): %d function(s) x %d subtype(s)", len(asked), len(asked) // len(subtypes), len(subtypes))
    return Questions(asked, [], f"sources {', '.join(f'`{p}`' for p in paths)}, {len(subtypes)} subtype(s)",
                     subtypes=tuple(subtypes))


def samples_input(path: str) -> Questions:
    asked = input_questions(path)
    return Questions(asked, [], f"samples `{path}`")


def warn_untrained_subtypes(questions: Questions, card: JudgeCard) -> None:
    """Say once which subtypes asked about the model never saw in training (its verdicts there are a guess)."""
    if not card.subtypes:
        return
    unseen = sorted({q.subtype for q in questions.asked} - set(card.subtypes))
    if unseen:
        log.warning("asked about %s, which the model was not trained on (it was on %s)", ", ".join(unseen),
                    ", ".join(card.subtypes))


# -------------------------------------------------------------- threshold

def recorded_threshold(card: JudgeCard, head: HeadChoice, own_head: Path | None) -> tuple[float | None, str]:
    """The threshold training chose on dev for the model's own head, when it recorded one."""
    chosen = card.dev_threshold
    if chosen is None or head.head is None or head.path is None or own_head is None or \
            head.path.resolve() != own_head.resolve():
        return None, "argmax: no dev threshold recorded for this judge"
    return chosen["threshold"], f"chosen on dev in training ({chosen.get('chosen_on')}, step {chosen.get('step')})"


def dev_scores(session: JudgeSession, path: Path, card: JudgeCard, ranks: Ranks,
               budget: int | None = None) -> tuple[list[int], list[float]]:
    """(1 for a defective reference, P(defective)) of every sample of a dev .jsonl, scored here by this judge (each
    rank a share), each prompt cut to ``budget`` tokens as the questions it decides are."""
    records, _ = labelled_records(read_records(path), path)
    judge = session.judge(card.judgements, "score", model_answer=False)
    prompts = judges.prompts_longest_first(session.tokenizer, records, budget)
    share = prompts[ranks.rank::ranks.world]
    mine = [(int(p.record.judgement == card.positive), v.p_defective) for p, v in zip(share, judge.verdicts(share))]
    pairs = [pair for part in all_ranks(mine) for pair in part]
    return [label for label, _ in pairs], [score for _, score in pairs]


def judge_threshold(threshold_from: str, mode: str, session: JudgeSession, card: JudgeCard, ranks: Ranks,
                    budget: int | None = None) -> tuple[float | None, str]:
    """--threshold_from: the recorded dev threshold (``model``), none, a dev evaluation_results.json of this model
    (or its folder), or a dev .jsonl scored here first, its prompts cut to ``budget`` tokens (``judge_questions``
    cuts the questions so). None: argmax (P(defective) >= 0.5)."""
    head = session.head
    if threshold_from.strip().lower() in NO_THRESHOLD:
        return None, "argmax"
    if threshold_from.strip().lower() == RECORDED:
        return recorded_threshold(card, head, session.resolved.head_path)
    if mode != "score" and head.head is None:
        raise InputError("--threshold_from needs --mode score (or a verdict head): a threshold applies to scores, "
                         "and generated answers have none", field="threshold_from")
    path = results_file(threshold_from)
    if not path.exists():
        raise InputError("--threshold_from not found (model, the dev split's evaluation_results.json, or dev .jsonl)",
                         path=path, field="threshold_from")
    if path.suffix.lower() == ".jsonl":
        labels, scores = dev_scores(session, path, card, ranks, budget)
    else:
        results = load_results(path)
        evaluated = EvaluatedModel(session.resolved.weights_path, (head.to_json() or {}).get("weights_sha256"),
                                   head.path)
        check_dev_results(path, results, set(), list(card.judgements), evaluated)  # scored: positive_scores has them
        labels, scores = positive_scores(results["samples"], card.positive)
    chosen = choose_threshold(labels, scores)
    if chosen is None:
        raise InputError("the dev split holds one judgement only: no threshold can be chosen on it", path=path,
                         field="threshold_from")
    threshold = chosen["threshold"]
    log.info("decision threshold P(%s) >= %s, chosen on %s", card.positive, threshold_text(threshold), path)
    return threshold, f"chosen on {path}"


# ----------------------------------------------------------------- judging

def distinct_records(asked: Sequence[Question]) -> list[Record]:
    """One record per distinct prompt, named by its prompt key, in the order the questions first ask it."""
    records: dict[str, Record] = {}
    for question in asked:
        records.setdefault(question.prompt_key, Record(question.prompt_key, question.subtype, question.record.text))
    return list(records.values())


def judge_questions(questions: Questions, session: JudgeSession, card: JudgeCard, *, output_dir: str, mode: str,
                    batch_size: int, max_new_tokens: int, max_length: int, model_answer: bool,
                    threshold: float | None, overwrite: bool) -> tuple[list[dict] | None, float, int]:
    """Every distinct prompt judged once (this rank its share), finished ones kept in the partial files; on
    rank 0 the ``verdicts.jsonl`` rows of every question (None elsewhere), the seconds spent and the prompts
    judged now."""
    ranks = session.ranks
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    budget, why = session.prompt_budget(max_length=max_length, mode=mode, max_new_tokens=max_new_tokens,
                                        vocabulary=card.judgements)
    fingerprint = session.fingerprint() | {
        "mode": mode, "max_new_tokens": max_new_tokens if mode == "generate" else None, "threshold": threshold,
        "prompt_budget": budget, "model_answer": model_answer, "judgements": list(card.judgements)}
    finished = finished_rows(output_dir, fingerprint, ranks, overwrite=overwrite, stem=outputs.PARTIAL_STEM,
                             what="prompts already judged")
    prompts = judges.prompts_longest_first(session.tokenizer, [r for r in distinct_records(questions.asked)
                                                               if r.id not in finished], budget)
    report_cuts(prompts, budget, why, noun="question")
    share = prompts[ranks.rank::ranks.world]  # strided over the length-sorted prompts: every rank gets long and short
    seconds = 0.0
    if share:
        judge = session.judge(card.judgements, mode, threshold=0.5 if threshold is None else threshold,
                              max_new_tokens=max_new_tokens, model_answer=model_answer)
        started = time.perf_counter()  # the judging alone, not the model's loading

        def to_rows(batch, verdicts):
            return [outputs.prompt_row(p, v, threshold=threshold, positive=card.positive, negative=card.negative)
                    for p, v in zip(batch, verdicts)]

        judge_share(judge, share, batch_size=batch_size, unit="question", fingerprint=fingerprint, rank=ranks.rank,
                    partial_path=partial_file(output_dir, ranks.rank, outputs.PARTIAL_STEM), to_rows=to_rows)
        seconds = time.perf_counter() - started
    seconds = max(all_ranks(seconds))
    ranks.barrier()
    if ranks.rank != 0:
        return None, seconds, len(prompts)
    judged = load_finished(output_dir, fingerprint, outputs.PARTIAL_STEM)
    missing = [q.id for q in questions.asked if q.prompt_key not in judged]
    if missing:
        raise RunError(f"{len(missing)} question(s) have no verdict after all ranks finished (e.g. {missing[0]!r}); "
                       f"run the same command again to complete them", path=output_dir)
    return [outputs.verdict_row(q, judged[q.prompt_key], card.positive) for q in questions.asked], seconds, len(prompts)


# ------------------------------------------------------------------ output

def write_outputs(output_dir: str, questions: Questions, rows: list[dict], info: outputs.JudgeInfo, *,
                  accept_clean: bool, seconds: float, prompts: int) -> str:
    """verdicts.jsonl, the judged SARIF log(s) and summary.md (each written whole, or not at all); the partial
    files and an earlier run's outputs this one does not write are removed. Returns the summary."""
    paths = outputs.output_paths(output_dir)
    write_jsonl_atomic(paths[outputs.VERDICTS_FILE], rows)
    written = {outputs.VERDICTS_FILE, outputs.SUMMARY_FILE}
    if questions.log is not None:
        annotations, clean = outputs.triage_annotations(rows, questions.unjudged, info, accept_clean=accept_clean)
        run_properties = {run: info.to_json() for run in range(len(questions.log["runs"]))}
        judged = sarif.annotated_log(questions.log, annotations, run_properties)
        sarif.write_log(paths[outputs.JUDGED_SARIF], judged)
        sarif.write_log(paths[outputs.UPLOAD_SARIF], sarif.upload_log(judged, clean))
        written |= {outputs.JUDGED_SARIF, outputs.UPLOAD_SARIF}
    elif questions.subtypes:
        sarif.write_log(paths[outputs.JUDGED_SARIF], outputs.findings_log(rows, questions.subtypes, info))
        written.add(outputs.JUDGED_SARIF)
    summary = outputs.summary_markdown(rows, questions.unjudged, info, input_text=questions.described,
                                       seconds=seconds, prompts=prompts, findings=questions.findings)
    write_text_atomic(paths[outputs.SUMMARY_FILE], summary)
    for name, path in paths.items():
        if name not in written:
            path.unlink(missing_ok=True)
    remove_partials(output_dir, outputs.PARTIAL_STEM)
    log.info("wrote %s", ", ".join(str(paths[name]) for name in outputs.OUTPUT_FILES if name in written))
    return summary
