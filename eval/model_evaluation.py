#!/usr/bin/env python
"""模型评估程序 — evaluate a model on test.jsonl: accuracy per defect subtype.

Loads the model and the test set, asks the model every test prompt (rendered
with the tokenizer's chat template, exactly as training renders it), compares
its judgement with the reference and writes into OUTPUT_DIR (default
./eval/output under the repository root):

  evaluation_results.json  overall / per-subtype / per-judgement accuracy with Wilson
                           95% intervals, confusion matrix, precision/recall/F1,
                           every sample's answer (schema: defect_judge/results.py)
  subtype_accuracy.png     accuracy per subtype with error bars and sample counts

Modes:
  generate  greedy answers (the document's way), batched with left padding,
            samples sorted by prompt length, the prefix all prompts share
            (system prompt, task text) run once per batch, stopping at
            end-of-turn; the judgement is parsed from the answer (an
            unparsable one is wrong and counted as invalid_format)
  score     no generation: the log-probability of every candidate
            "判断:{judgement}" after the prompt; the prediction is the most
            probable; gives per-sample probabilities and ROC-AUC

MODEL_PATH may be a full model folder, a LoRA adapter folder (checkpoint-{step};
merged into its base before inference), a training OUTPUT_DIR (follows its
best_checkpoint.json) or a base model (the baseline); the log says which.
tokenizer_path: the tokenizer to use; when empty, or when it is the default and
does not exist on this machine, the model's own tokenizer is used. A path given
with --tokenizer_path that does not exist is an error.

Resumable: finished samples go to OUTPUT_DIR/evaluation_results.partial.jsonl;
run the same command again after a crash or Ctrl-C and it continues. Partial
results of other settings are refused (--overwrite starts over).
Data-parallel: torchrun --nproc_per_node N eval/model_evaluation.py ... (or
accelerate launch); every rank evaluates its share and rank 0 merges.

Examples:
  python eval/model_evaluation.py --model_path models/SmolLM2-135M-Instruct \\
      --test_dataset_path dataset/test.jsonl --output_dir eval/output/base
  python eval/model_evaluation.py --model_path runs/lora --mode score --output_dir eval/output/lora
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge import inference
from defect_judge.chat import render_prompt
from defect_judge.cli import parse_constants
from defect_judge.errors import InputError, run_main
from defect_judge.fileio import check_output_dir, write_json_atomic
from defect_judge.modeling import check_tokenizer_matches, load_tokenizer, pick_dtype
from defect_judge.plotting import subtype_accuracy_chart
from defect_judge.results import RESULTS_FILE, format_results_table, judgement_vocabulary, results_document
from defect_judge.resume import PartialWriter, file_sha256, load_finished, partial_path, remove_partials
from defect_judge.schema import Record, read_records
from defect_judge.templates import parse_answer

# ----------------------------------------------------------------------------
# 参数配置 (edit here, or override any of them with --name value, e.g. --model_path)
# 模型路径
MODEL_PATH = "/data/qwen_instruct_lora_finetuned_0401/checkpoint-140"
# 测试数据集路径
TEST_DATASET_PATH = "./dataset/test.jsonl"
# 分词器路径
tokenizer_path = "/data/Qwen2.5-Coder-7B-Instruct"
OUTPUT_DIR = "./eval/output"  # evaluation_results.json and subtype_accuracy.png
BASE_MODEL_PATH = ""  # base model of a LoRA adapter, when the one its adapter_config.json names is not here
MODE = "generate"  # generate | score
BATCH_SIZE = 32  # samples decoded together (prefill runs in low-padding groups); longest first, so an OOM shows at once
MAX_NEW_TOKENS = 256  # generate mode: enough for the judgement and its reason
LIMIT = 0  # evaluate only the first N samples of the test file (0: all)
TRUST_REMOTE_CODE = False  # run code shipped with the model folder (only for models you trust)
ALLOW_PICKLE = False  # load pickle (.bin) weights when a folder has no safetensors (only for folders you trust)
OVERWRITE = False  # discard the partial results of an earlier run instead of continuing it
SKIP_UNLABELLED = False  # skip (and count) test records whose reference has no 判断: instead of stopping
# ----------------------------------------------------------------------------
DEFAULTS = {"model_path": MODEL_PATH, "test_dataset_path": TEST_DATASET_PATH, "tokenizer_path": tokenizer_path,
            "output_dir": OUTPUT_DIR, "base_model_path": BASE_MODEL_PATH, "mode": MODE, "batch_size": BATCH_SIZE,
            "max_new_tokens": MAX_NEW_TOKENS, "limit": LIMIT, "trust_remote_code": TRUST_REMOTE_CODE,
            "allow_pickle": ALLOW_PICKLE, "overwrite": OVERWRITE, "skip_unlabelled": SKIP_UNLABELLED}
HELP = {
    "model_path": "model folder, LoRA adapter folder, training OUTPUT_DIR or base model",
    "test_dataset_path": "test JSONL written by dataset/convert_and_split.py",
    "tokenizer_path": "tokenizer folder; empty: the model's own",
    "output_dir": "folder for evaluation_results.json and subtype_accuracy.png",
    "base_model_path": "base model of a LoRA adapter (overrides the one in adapter_config.json)",
    "mode": "generate (greedy answers) or score (log-probability of each judgement)",
    "batch_size": "samples per batch",
    "max_new_tokens": "longest answer generated (generate mode)",
    "limit": "evaluate only the first N samples (0: all)",
    "trust_remote_code": "allow code from the model folder to run",
    "allow_pickle": "load pickle (.bin) weights of a model or adapter with no safetensors (tensors only, through "
                    "torch's weights-only unpickler)",
    "overwrite": "start over, deleting partial results of an earlier run",
    "skip_unlabelled": "skip test records whose reference answer has no judgement (判断:…) and count them in the "
                       "results, instead of stopping at the first (it is bad data)",
}
PATHS = ("model_path", "test_dataset_path", "tokenizer_path", "output_dir", "base_model_path")
MODES = ("generate", "score")
PLOT_FILE = "subtype_accuracy.png"

log = logging.getLogger("model_evaluation")


@dataclass(frozen=True)
class Item:
    """One test sample ready for the model."""
    record: Record
    prompt_text: str
    prompt_ids: list[int]


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    device: str

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def parse_args() -> argparse.Namespace:
    args = parse_constants(DEFAULTS, help=HELP, description=__doc__, path_names=PATHS)
    given = {arg[2:].split("=")[0] for arg in sys.argv[1:] if arg.startswith("--")}
    args.tokenizer_explicit = "tokenizer_path" in given
    if args.mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {args.mode!r}")
    for name in ("batch_size", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.limit < 0:
        raise InputError(f"--limit must be 0 (all) or a positive number, got {args.limit}")
    check_output_dir(args.output_dir)
    return args


def setup_logging() -> None:
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s {prefix}%(message)s", datefmt="%H:%M:%S")


def init_ranks() -> Ranks:
    """One process, or one rank of torchrun / accelerate launch (they set RANK, WORLD_SIZE, LOCAL_RANK)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = f"cuda:{local_rank}" if cuda else "cpu"
    if world > 1:
        import torch.distributed as dist

        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return Ranks(rank, world, device)


def read_test_set(path: str, limit: int, skip_unlabelled: bool = False) -> tuple[list[Record], list[str], list[str]]:
    """The test records, the judgement vocabulary (results.judgement_vocabulary of their references), and
    the ids skipped for a reference without a judgement: an error, unless ``skip_unlabelled``."""
    records = read_records(path)
    if limit:
        records = records[:limit]
    unlabelled = [r for r in records if r.judgement is None]
    if len(unlabelled) == len(records):
        raise InputError("no reference answer holds a judgement (判断:…), so nothing can be scored", path=path)
    if unlabelled and not skip_unlabelled:
        first = unlabelled[0]
        more = f" (and {len(unlabelled) - 1} more)" if len(unlabelled) > 1 else ""
        raise InputError(f"the reference answer has no judgement (判断:…){more}: fix the data, or pass "
                         f"--skip_unlabelled to skip such samples and count them in the results",
                         path=path, line=first.line, sample=first.id, field="text")
    if unlabelled:
        log.warning("skipping %d sample(s) whose reference has no judgement (判断:…) (--skip_unlabelled), e.g. %s",
                    len(unlabelled), ", ".join(r.id for r in unlabelled[:3]))
    records = [r for r in records if r.judgement is not None]
    references = sorted({r.judgement for r in records})
    vocabulary = judgement_vocabulary(references)
    log.info("test set %s: %d samples, %d subtypes, judgements %s (answers may give %s)", path, len(records),
             len({r.subtype for r in records}), "/".join(references), "/".join(vocabulary))
    if len(references) == 1:
        log.warning("the test set%s holds a single judgement (%s): accuracy then only says how often the model "
                    "gives it (always answering %s scores 100%%); any other well-formed judgement counts as wrong",
                    f" (its first {limit} samples, --limit)" if limit else "", references[0], references[0])
    return records, vocabulary, [r.id for r in unlabelled]


def resolve(args) -> tuple[inference.ResolvedModel, Path]:
    resolved = inference.resolve_model(args.model_path, base_model_path=args.base_model_path,
                                       tokenizer_path=args.tokenizer_path, allow_pickle=args.allow_pickle)
    log.info("model %s: %s", args.model_path, resolved.describe())
    for note in resolved.notes:
        log.warning(note)
    tokenizer_dir = inference.resolve_tokenizer_path(resolved, args.tokenizer_path, explicit=args.tokenizer_explicit)
    log.info("tokenizer %s", tokenizer_dir)
    return resolved, tokenizer_dir


def fingerprint_of(args, resolved: inference.ResolvedModel, tokenizer_dir: Path, dtype) -> dict:
    """The settings that change answers; partial results are only reused under the same ones."""
    return {"model_path": str(Path(args.model_path).resolve()), "model_kind": resolved.kind,
            "weights": inference.weights_fingerprint(resolved), "tokenizer_path": str(tokenizer_dir.resolve()),
            "test_dataset_sha256": file_sha256(args.test_dataset_path), "mode": args.mode,
            "max_new_tokens": args.max_new_tokens if args.mode == "generate" else None,
            "limit": args.limit, "dtype": str(dtype).removeprefix("torch.")}


def finished_samples(args, fingerprint: dict, ranks: Ranks) -> dict[str, dict]:
    """Samples an earlier, interrupted run with the same settings already finished."""
    if args.overwrite and ranks.rank == 0:
        remove_partials(args.output_dir)
    ranks.barrier()
    finished = load_finished(args.output_dir, fingerprint)
    ranks.barrier()  # everyone has read the partial files before anyone appends to them
    if finished:
        log.info("resuming: %d samples already evaluated in %s", len(finished), args.output_dir)
    return finished


def prepare_items(tokenizer, records: list[Record]) -> list[Item]:
    """Prompts as training renders them, longest first so an out-of-memory shows in the first batch."""
    items = []
    for record in records:
        text = render_prompt(tokenizer, record.prompt_messages)
        items.append(Item(record, text, inference.encode_prompt(tokenizer, text)))
    return sorted(items, key=lambda item: -len(item.prompt_ids))


def load_model(args, resolved: inference.ResolvedModel, tokenizer, tokenizer_dir: Path, ranks: Ranks, dtype):
    started = time.perf_counter()
    model = inference.load_model(resolved, dtype=dtype, device=ranks.device, trust_remote_code=args.trust_remote_code,
                                 allow_pickle=args.allow_pickle)
    check_tokenizer_matches(model, tokenizer, resolved.weights_path, tokenizer_dir)
    log.info("loaded in %.1f s on %s (%s)", time.perf_counter() - started, ranks.device, dtype)
    return model


def generate_rows(model, tokenizer, batch: list[Item], args, vocabulary: list[str], stop_ids: list[int]) -> list[dict]:
    answers = inference.generate_batch(model, tokenizer, [item.prompt_ids for item in batch],
                                       max_new_tokens=args.max_new_tokens, stop_ids=stop_ids)
    rows = []
    for item, answer in zip(batch, answers):
        prediction = parse_answer(answer["response"], vocabulary).judgement
        rows.append({"id": item.record.id, "subtype": item.record.subtype, "reference": item.record.judgement,
                     "prediction": prediction, "correct": prediction == item.record.judgement, **answer})
    return rows


def score_rows(model, tokenizer, batch: list[Item], vocabulary: list[str]) -> list[dict]:
    candidates = [inference.candidate_sequences(tokenizer, item.prompt_text, vocabulary) for item in batch]
    logprobs = inference.score_batch(model, candidates, pad_id=tokenizer.pad_token_id)
    rows = []
    for item, values in zip(batch, logprobs):
        probabilities = inference.probabilities(values)
        prediction = vocabulary[max(range(len(vocabulary)), key=lambda i: values[i])]
        rows.append({"id": item.record.id, "subtype": item.record.subtype, "reference": item.record.judgement,
                     "prediction": prediction, "correct": prediction == item.record.judgement,
                     "probabilities": dict(zip(vocabulary, probabilities)), "logprobs": dict(zip(vocabulary, values))})
    return rows


def evaluate_share(model, tokenizer, share: list[Item], args, vocabulary: list[str], ranks: Ranks,
                   fingerprint: dict) -> None:
    """Run this rank's samples batch by batch, appending each finished batch to the partial file."""
    from tqdm import tqdm

    stop_ids = inference.stop_token_ids(tokenizer, model)
    with PartialWriter(partial_path(args.output_dir, ranks.rank), fingerprint) as writer, \
            tqdm(total=len(share), unit="sample", desc=args.mode, disable=ranks.rank != 0, dynamic_ncols=True) as bar:
        for start in range(0, len(share), args.batch_size):
            batch = share[start:start + args.batch_size]
            if args.mode == "generate":
                rows = generate_rows(model, tokenizer, batch, args, vocabulary, stop_ids)
            else:
                rows = score_rows(model, tokenizer, batch, vocabulary)
            writer.append(rows)
            bar.update(len(batch))


def build_results(args, resolved: inference.ResolvedModel, tokenizer_dir: Path, records: list[Record],
                  vocabulary: list[str], finished: dict[str, dict], skipped: list[str], ranks: Ranks, dtype) -> dict:
    missing = [r.id for r in records if r.id not in finished]
    if missing:
        raise InputError(f"{len(missing)} samples have no result after all ranks finished (e.g. {missing[0]!r}); "
                         f"run the same command again to complete them", path=args.output_dir)
    samples = [finished[r.id] for r in records]  # the test file's order, every id once
    settings = {k: getattr(args, k) for k in DEFAULTS} | {"dtype": str(dtype).removeprefix("torch."),
                                                            "device": ranks.device, "world_size": ranks.world}
    return results_document(model_path=str(args.model_path), model_kind=resolved.kind,
                            test_dataset_path=str(args.test_dataset_path), mode=args.mode, settings=settings,
                            judgements=vocabulary, samples=samples,
                            extra={"model": resolved.to_json(), "tokenizer_path": str(tokenizer_dir),
                                   "skipped_no_reference": skipped})


def main() -> None:
    args = parse_args()
    setup_logging()
    records, vocabulary, skipped = read_test_set(args.test_dataset_path, args.limit, args.skip_unlabelled)
    if args.mode == "score" and len(vocabulary) == 1:
        log.warning("score mode with a single judgement (%s): every prediction will be it", vocabulary[0])
    resolved, tokenizer_dir = resolve(args)
    ranks = init_ranks()
    dtype = pick_dtype(ranks.device)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    fingerprint = fingerprint_of(args, resolved, tokenizer_dir, dtype)
    finished = finished_samples(args, fingerprint, ranks)

    tokenizer = load_tokenizer(tokenizer_dir, trust_remote_code=args.trust_remote_code)
    items = prepare_items(tokenizer, [r for r in records if r.id not in finished])
    share = items[ranks.rank::ranks.world]  # strided over the length-sorted samples: every rank gets long and short
    if share:
        model = load_model(args, resolved, tokenizer, tokenizer_dir, ranks, dtype)
        started = time.perf_counter()
        evaluate_share(model, tokenizer, share, args, vocabulary, ranks, fingerprint)
        seconds = time.perf_counter() - started
        log.info("evaluated %d samples in %.1f s (%.2f s/sample)", len(share), seconds, seconds / len(share))
    ranks.barrier()
    if ranks.rank == 0:
        results = build_results(args, resolved, tokenizer_dir, records, vocabulary,
                                load_finished(args.output_dir, fingerprint), skipped, ranks, dtype)
        output_dir = Path(args.output_dir)
        write_json_atomic(output_dir / RESULTS_FILE, results)
        subtype_accuracy_chart(output_dir / PLOT_FILE, results)
        remove_partials(output_dir)
        print(format_results_table(results))
        log.info("wrote %s and %s", output_dir / RESULTS_FILE, output_dir / PLOT_FILE)
    ranks.barrier()
    if ranks.world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


if __name__ == "__main__":
    run_main(main)
