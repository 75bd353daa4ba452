#!/usr/bin/env python
"""模型评估程序 — evaluate a model on test.jsonl: accuracy per defect subtype.

Loads the model and the test set, asks the model every test prompt (rendered
with the tokenizer's chat template, exactly as training renders it), compares
its judgement with the reference and writes into OUTPUT_DIR (default
./eval/output under the repository root):

  evaluation_results.json  overall / per-subtype / per-judgement accuracy with Wilson
                           95% intervals, balanced accuracy, MCC, confusion matrix,
                           precision/recall/F1, pair outcomes (PrimeVul's P-C/P-V/P-B/P-R,
                           when the test records carry pair_id), ROC-AUC and VD-S (score
                           mode), every sample's answer (schema: defect_judge/evaluate/results.py)
  subtype_accuracy.png     accuracy per subtype with error bars and sample counts
  pair_outcomes.png        the four pair outcomes overall and per subtype (twin pairs only)
  roc_curve.png            ROC with AUC and the VD-S points, and the precision-recall curve
                           (score mode, or any mode with a verdict head)

Modes:
  generate  greedy answers (the document's way), batched with left padding,
            samples sorted by prompt length, the prefix all prompts share
            (system prompt, task text) run once per batch, stopping at
            end-of-turn; the judgement is parsed from the answer (an
            unparsable one is wrong and counted as invalid_format)
  score     no generation: the log-probability of every candidate
            "判断:{judgement}" after the prompt; the prediction is the most
            probable; gives per-sample probabilities, ROC-AUC and VD-S.
            --threshold_from DEV decides by a threshold on P(defective) chosen
            on the dev split instead (the highest balanced accuracy there):
            DEV is that split's evaluation_results.json of the same model (or
            the folder holding it), or the dev .jsonl itself, which is then
            scored first into OUTPUT_DIR/threshold_dev/

Verdict head: when the model folder carries one (a run trained with --verdict_head:
every checkpoint, its best model and its OUTPUT_DIR hold verdict_head.json), or
--verdict_head names one, the head decides: P(defective) from the prompt's hidden
states. In score mode the model's own scored answer is kept beside it
(model_prediction); in generate mode the answer starts with 判断:{the head's verdict}
and the model writes 原因：… after it (--model_answer false: score mode runs only the head's
pass, which stops at its highest layer). --verdict_head none judges without it. A head
trained with --verdict_head_reads_base reads the base model: the adapter is then
kept unmerged and switched off while the head reads (refused beside a fully
fine-tuned model, which has no adapter to switch off).

A prompt longer than the model takes (--max_length; by default the training's max_length
recorded with the model, else its context) has the end of its code cut, as training cuts it;
the log names those samples and each records event_cut_chars.

MODEL_PATH may be a full model folder, a LoRA adapter folder (checkpoint-{step};
merged into its base before inference), a training OUTPUT_DIR (follows its
best_checkpoint.json), a linear-probe run's OUTPUT_DIR (the frozen base model
and its head) or a base model (the baseline); the log says which.
tokenizer_path: the tokenizer to use; empty (the default): the model's own
tokenizer. A path given with --tokenizer_path that does not exist is an error.

Resumable: finished samples go to OUTPUT_DIR/evaluation_results.partial.jsonl;
run the same command again after a crash or Ctrl-C and it continues. Partial
results of other settings are refused (--overwrite starts over), and so is an
OUTPUT_DIR that holds finished results (--overwrite replaces them).
Data-parallel: torchrun --nproc_per_node N eval/model_evaluation.py ... (or
accelerate launch); every rank evaluates its share and rank 0 merges.

Examples:
  python eval/model_evaluation.py --model_path models/SmolLM2-135M-Instruct \\
      --test_dataset_path dataset/test.jsonl --output_dir eval/output/base
  python eval/model_evaluation.py --model_path runs/lora --mode score --output_dir eval/output/lora
"""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge.cli import Settings, parse_settings
from defect_judge.data.labels import (check_record_judgements, judgement_vocabulary, labelled_records,
                                      positive_judgement)
from defect_judge.data.schema import Record, read_records
from defect_judge.data.splitting import spread_subset
from defect_judge.distributed import from_rank_zero, init_ranks, setup_rank_logging
from defect_judge.errors import InputError, RunError, run_main
from defect_judge.evaluate import judges, verdicts
from defect_judge.evaluate.dev_threshold import EvaluatedModel, dev_threshold, threshold_source
from defect_judge.evaluate.head_choice import choose_head
from defect_judge.evaluate.pairs import check_record_pairs
from defect_judge.evaluate.partial import load_finished, remove_partials
from defect_judge.fileio import file_sha256
from defect_judge.evaluate.results import results_document
from defect_judge.evaluate.results_folder import RESULTS_FILE, THRESHOLD_DEV_FOLDER, partial_file
from defect_judge.evaluate.results_table import format_results_table
from defect_judge.evaluate.session import JudgeSession, finished_rows, judge_share, report_cuts, resolve_model
from defect_judge.fileio import check_output_dir, write_json_atomic
from defect_judge.report.result_charts import result_charts

# ----------------------------------------------------------------------------
# 参数配置 (edit here, or override any of them with --name value, e.g. --model_path)

# 模型路径: a model folder, LoRA adapter folder, training OUTPUT_DIR (its best checkpoint) or base model
MODEL_PATH = "/data/qwen_instruct_lora_finetuned_0401/checkpoint-140"
# 测试数据集路径: the test JSONL written by dataset/convert_and_split.py
TEST_DATASET_PATH = "./dataset/test.jsonl"
# 分词器路径 (the design document names /data/Qwen2.5-Coder-7B-Instruct, the base model's own); empty: the tokenizer
# that comes with the model (its folder, or an adapter's base model)
tokenizer_path = ""
OUTPUT_DIR = "./eval/output"  # folder for evaluation_results.json and subtype_accuracy.png
# base model of a LoRA adapter, when the one its adapter_config.json names is not here (overrides it)
BASE_MODEL_PATH = ""
MODE = "generate"  # generate (greedy answers) or score (log-probability of each judgement)
# samples decoded together (prefill runs in low-padding groups); longest first, so an OOM shows at once
BATCH_SIZE = 32
MAX_NEW_TOKENS = 256  # longest answer generated (generate mode): enough for the judgement and its reason
# longest prompt and verdict in tokens: a longer prompt has the end of its code cut, as training cuts it (0: the
# training's max_length recorded with the model, else the model's context)
MAX_LENGTH = 0
# evaluate at most N samples of the test file, whole twin pairs spread over the subtypes and judgements (0: all)
LIMIT = 0
TRUST_REMOTE_CODE = False  # run code shipped with the model folder (only for models you trust)
# load pickle (.bin) weights of a model or adapter with no safetensors, through torch's weights-only
# unpickler (only for folders you trust)
ALLOW_PICKLE = False
# start over: replace the finished results of an earlier run in OUTPUT_DIR (and the charts and threshold_dev/ that
# came with them), or delete its partial results instead of continuing it
OVERWRITE = False
# skip test records whose reference answer has no judgement (判断:…) and count them in the results, instead of
# stopping at the first (it is bad data)
SKIP_UNLABELLED = False
# the verdict head: empty: the one that comes with the model, if any; a folder holding verdict_head.json (or the
# file); none: judge without a head
VERDICT_HEAD = ""
# score mode with a verdict head: also score what the model alone answers (model_prediction beside the head's;
# one more forward pass through every layer)
MODEL_ANSWER = True
# score mode, or any mode with a verdict head: the dev split to choose the decision threshold on (highest balanced
# accuracy), applied to the test split: its evaluation_results.json of this model (or the folder holding it), or
# the dev .jsonl file, scored first into OUTPUT_DIR/threshold_dev; empty: argmax
THRESHOLD_FROM = ""
# VD-S (the miss rate at a false-positive rate of at most this) is reported at this level and at PrimeVul's 0.005
VDS_FPR = 0.05
# ----------------------------------------------------------------------------
PATHS = ("model_path", "test_dataset_path", "tokenizer_path", "output_dir", "base_model_path", "threshold_from",
         "verdict_head")
MODES = ("generate", "score")

log = logging.getLogger("model_evaluation")


def parse_args() -> tuple[Settings, bool]:
    """The settings (the results record every one, with the value the run used), and whether --tokenizer_path
    was given (then a path that does not exist is an error)."""
    args, given = parse_settings(globals(), paths=PATHS)
    if args.mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {args.mode!r}")
    if args.max_length < 0:
        raise InputError(f"--max_length must be 0 (the training's, else the model's context) or a number of tokens, "
                         f"got {args.max_length}")
    for name in ("batch_size", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.limit < 0:
        raise InputError(f"--limit must be 0 (all) or a positive number, got {args.limit}")
    if not 0 < args.vds_fpr < 1:
        raise InputError(f"--vds_fpr must be a false-positive rate between 0 and 1, got {args.vds_fpr}")
    check_output_dir(args.output_dir)
    finished = Path(args.output_dir) / RESULTS_FILE
    if finished.exists() and not args.overwrite:
        raise InputError("holds the finished results of an earlier evaluation: pass --overwrite to replace them (and "
                         "the charts beside them), or choose another --output_dir", path=finished, field="output_dir")
    return args, "tokenizer_path" in given


def read_test_set(path: str, limit: int, skip_unlabelled: bool = False) -> tuple[list[Record], list[str], list[str]]:
    """The test records, the judgement vocabulary of their references, and the ids skipped for a reference
    without a judgement: an error, unless ``skip_unlabelled`` (data/labels.py's rules)."""
    records = read_records(path)
    if limit and limit < len(records):
        records = spread_subset(records, limit)
        log.info("--limit %d: %d of the samples, whole twin pairs spread over the subtypes and judgements", limit,
                 len(records))
    records, unlabelled = labelled_records(records, path, skip=skip_unlabelled, skip_flag="--skip_unlabelled")
    check_record_judgements((records, path))
    references = sorted({r.judgement for r in records})
    vocabulary = judgement_vocabulary(references)
    check_record_pairs(records, path, positive_judgement(vocabulary)[0])
    log.info("test set %s: %d samples, %d subtypes, judgements %s (answers may give %s)", path, len(records),
             len({r.subtype for r in records}), "/".join(references), "/".join(vocabulary))
    if len(references) == 1:
        log.warning("the test set%s holds a single judgement (%s): accuracy then only says how often the model "
                    "gives it (always answering %s scores 100%%); any other well-formed judgement counts as wrong",
                    f" (the {len(records)} samples --limit {limit} chose)" if limit else "", references[0], references[0])
    return records, vocabulary, [r.id for r in unlabelled]


def fingerprint_of(args, session: JudgeSession, threshold: dict | None, budget: int | None) -> dict:
    """The settings that change answers; partial results are only reused under the same ones."""
    fingerprint = session.fingerprint(args.model_path) | {
        "test_dataset_sha256": file_sha256(args.test_dataset_path), "mode": args.mode,
        "max_new_tokens": args.max_new_tokens if args.mode == "generate" else None, "limit": args.limit}
    fingerprint["prompt_budget"] = budget
    if session.head.head is not None:
        if args.mode == "generate":  # the head's verdict opens each answer: its threshold changes the text
            fingerprint["head_threshold"] = threshold["threshold"] if threshold else 0.5
        else:
            fingerprint["model_answer"] = args.model_answer
    return fingerprint


def build_results(args, session: JudgeSession, records: list[Record], vocabulary: list[str],
                  finished: dict[str, dict], skipped: list[str], threshold: dict | None = None) -> dict:
    missing = [r.id for r in records if r.id not in finished]
    if missing:
        raise RunError(f"{len(missing)} samples have no result after all ranks finished (e.g. {missing[0]!r}); "
                         f"run the same command again to complete them", path=args.output_dir)
    # The test file's order, every id once; the pair_id comes from the record, so partial rows of any
    # earlier run get it too.
    samples = [with_pair_id(finished[r.id], r) for r in records]
    settings = dict(vars(args))
    settings |= {"dtype": str(session.dtype).removeprefix("torch."), "device": session.ranks.device,
                 "world_size": session.ranks.world}
    return results_document(model_path=str(args.model_path), model_kind=session.resolved.model_kind,
                            test_dataset_path=str(args.test_dataset_path), mode=args.mode, settings=settings,
                            judgements=vocabulary, samples=samples, threshold=threshold, vds_fpr=args.vds_fpr,
                            verdict_source=verdicts.source_for(args.mode, head=session.head.head is not None),
                            verdict_head=session.head.to_json(),
                            extra={"model": session.resolved.to_json(), "tokenizer_path": str(session.tokenizer_dir),
                                   "skipped_no_reference": skipped})


def with_pair_id(row: dict, record: Record) -> dict:
    """A sample row with its record's pair_id right after the subtype (absent when the record has none)."""
    if record.pair_id is None:
        return row
    keys = list(row)
    at = keys.index("subtype") + 1 if "subtype" in keys else len(keys)
    return {k: row[k] for k in keys[:at]} | {"pair_id": record.pair_id} | {k: row[k] for k in keys[at:]}


def evaluate_split(args, session: JudgeSession, records: list[Record], vocabulary: list[str], skipped: list[str],
                   threshold: dict | None = None) -> dict | None:
    """Evaluate ``records`` (args.test_dataset_path) into args.output_dir: results file and charts.
    Returns the results on rank 0, None on the other ranks."""
    ranks = session.ranks
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    budget, why = session.prompt_budget(max_length=args.max_length, mode=args.mode,
                                        max_new_tokens=args.max_new_tokens, vocabulary=vocabulary)
    fingerprint = fingerprint_of(args, session, threshold, budget)
    finished = finished_rows(args.output_dir, fingerprint, ranks, overwrite=args.overwrite)
    prompts = judges.prompts_longest_first(session.tokenizer, [r for r in records if r.id not in finished], budget)
    report_cuts(prompts, budget, why)
    share = prompts[ranks.rank::ranks.world]  # strided over the length-sorted samples: every rank gets long and short
    if share:
        judge = session.judge(vocabulary, args.mode, threshold=threshold["threshold"] if threshold else 0.5,
                              max_new_tokens=args.max_new_tokens, model_answer=args.model_answer)
        judge_share(judge, share, batch_size=args.batch_size, partial_path=partial_file(args.output_dir, ranks.rank),
                    fingerprint=fingerprint, rank=ranks.rank)
    ranks.barrier()
    results = None
    if ranks.rank == 0:
        results = build_results(args, session, records, vocabulary, load_finished(args.output_dir, fingerprint),
                                skipped, threshold)
        output_dir = Path(args.output_dir)
        write_json_atomic(output_dir / RESULTS_FILE, results)
        charts = result_charts(output_dir, results)
        remove_partials(output_dir)
        log.info("wrote %s", ", ".join(str(p) for p in [output_dir / RESULTS_FILE, *charts]))
    ranks.barrier()
    return results


def main() -> None:
    args, tokenizer_explicit = parse_args()
    setup_rank_logging()
    records, vocabulary, skipped = read_test_set(args.test_dataset_path, args.limit, args.skip_unlabelled)
    if args.mode == "score" and len(vocabulary) == 1:
        log.warning("score mode with a single judgement (%s): every prediction will be it", vocabulary[0])
    resolved, tokenizer_dir = resolve_model(args.model_path, base_model_path=args.base_model_path,
                                            tokenizer_path=args.tokenizer_path, tokenizer_explicit=tokenizer_explicit,
                                            allow_pickle=args.allow_pickle)
    head = choose_head(args.verdict_head, resolved, vocabulary, trust_remote_code=args.trust_remote_code)
    evaluated = EvaluatedModel(resolved.weights_path, (head.to_json() or {}).get("weights_sha256"), head.path)
    source = threshold_source(args, records, vocabulary, evaluated, has_head=head.head is not None,
                              read_split=read_test_set)
    ranks = init_ranks()
    session = JudgeSession(resolved, tokenizer_dir, ranks, head, trust_remote_code=args.trust_remote_code,
                           allow_pickle=args.allow_pickle)

    def evaluate_dev(dev_args: Settings, dev_records: list[Record], dev_skipped: list[str]) -> dict | None:
        return evaluate_split(dev_args, session, dev_records, vocabulary, dev_skipped)

    # rank 0's threshold on every rank: a head's verdict at it opens the answers each rank generates
    threshold = from_rank_zero(dev_threshold(args, source, vocabulary, rank=ranks.rank,
                                             evaluate_split=evaluate_dev)) if source else None
    results = evaluate_split(args, session, records, vocabulary, skipped, threshold)
    if results is not None:
        stale_dev = Path(args.output_dir) / THRESHOLD_DEV_FOLDER
        if stale_dev.is_dir() and not (source and source.records is not None):  # an earlier run's, not this one's
            shutil.rmtree(stale_dev)
        print(format_results_table(results))
    ranks.finish()


if __name__ == "__main__":
    run_main(main)
