#!/usr/bin/env python
"""Benchmark of eval/model_evaluation.py: naive per-sample generate vs its generate and score modes.

On the first NUM_SAMPLES samples of the test split, in one process with one
loaded model, it times:

  naive     the document's way: one model.generate per sample (greedy, batch 1)
  generate  model_evaluation.py's generate mode (length-sorted batches, left
            padding, the prefix all prompts share run once, low-padding
            prefill groups, one decode batch)
  score     model_evaluation.py's score mode (log-probability of each judgement)

with the same MAX_NEW_TOKENS for both generation paths. Given a model that carries a verdict head (a
training OUTPUT_DIR of a run with --verdict_head, e.g. the demo's runs/demo/latest/train), also:

  head                    the head's score mode as the evaluation and the judge of new code run it
                          without the model's own answer: one pass per prompt that stops at the head's
                          highest layer (the adapter switched off for a head that reads the base model)
  probe_features          the features training's linear probe fits the head on, computed as training
                          computes them (hidden_states.prompt_features over the same prompts)
  prefill_to_head_layer   their floor: the same prompts prefilled as the modes prefill them (the shared
                          prefix once, low-padding groups) through the head's layers only

Two more timings say where the time goes and how fast any method could be on this hardware:

  prefill        one forward pass over every prompt, batched as the modes do it
                 (the prefix all prompts share once, the rest in low-padding
                 groups, logits of the last position only): the work any
                 method that reads each prompt must do, so naive / prefill
                 bounds the speed-up of score mode and of anything else
  naive prefill  the same forward pass, one sample at a time: with the naive
                 loop's generated-token count it gives its cost per decode step

The work is split into length-sorted chunks of BATCH_SIZE samples; the methods take turns on
each chunk and every timing is the best of REPEATS, so background load on a
shared machine distorts them as little as possible. It prints a table and
writes seconds per sample, speed-ups and the naive-vs-batched agreement to --json.

Example:
  python eval/bench_eval.py --test_dataset_path dataset/test.jsonl --json bench_eval.json
"""
from __future__ import annotations

import logging
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge.cli import parse_settings
from defect_judge.data.labels import judgement_vocabulary, labelled_records
from defect_judge.data.schema import Record, read_records
from defect_judge.errors import InputError, run_main
from defect_judge.distributed import Ranks
from defect_judge.evaluate import judges
from defect_judge.evaluate.head_choice import choose_head
from defect_judge.evaluate.metrics import summary
from defect_judge.evaluate.session import JudgeSession, resolve_model
from defect_judge.evaluate.verdicts import GENERATED
from defect_judge.fileio import write_json_atomic
from defect_judge.model import inference
from defect_judge.model.hidden_states import layers_up_to, prompt_features
from defect_judge.model.verdict_head import adapter_disabled
from defect_judge.templates import parse_answer

# ----------------------------------------------------------------------------
# model folder (the embedded model), or a training OUTPUT_DIR whose verdict head is timed too
MODEL_PATH = "./models/SmolLM2-135M-Instruct"
TEST_DATASET_PATH = "./dataset/test.jsonl"  # test JSONL (the shipped split)
NUM_SAMPLES = 32  # the first N samples of the test file
MAX_NEW_TOKENS = 64  # answer length limit of both generation paths
BATCH_SIZE = 32  # samples per batch of the batched modes (model_evaluation.py's default)
THREADS = 0  # torch CPU threads (0: torch's default); on a CPU shared with other jobs 1 can be many times faster
REPEATS = 3  # each measurement is the best of this many (other jobs on a shared machine only add time)
# Time the naive loop on every k-th sample of each length-sorted chunk only (1: all). Its figure is a mean per
# sample, so a sample of the prompts estimates it; on a 7B model 256 tokens one sample at a time take seconds.
NAIVE_EVERY = 1
JSON = ""  # write the figures here too
SKIP_GENERATION = False  # time score mode and the head only (no naive or batched generation)
# skip test records whose reference answer has no judgement (判断:…) and count them, instead of stopping at the first
# (it is bad data): model_evaluation.py's rule
SKIP_UNLABELLED = False
# ----------------------------------------------------------------------------
TARGETS = {"generate_speedup": 5.0, "generate_judgement_agreement": 0.95, "score_speedup": 12.0}
# A verdict head's work over its floor, the prefill of the same prompts through the layers it reads: at most.
HEAD_TARGETS = {"head_vs_prefill_to_head_layer": 1.2, "probe_features_vs_prefill_to_head_layer": 1.3}
GENERATION_METHODS = ("naive", "generate", "naive_prefill")

log = logging.getLogger("bench_eval")


def naive_one(model, tokenizer, prompt: judges.Prompt, vocabulary, config) -> dict:
    """One generate call for one sample, as the document's evaluation loop does."""
    import torch

    input_ids = torch.tensor([prompt.ids], device=model.device)
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                generation_config=config)
    # cut and decoded as the batched path does, so the two compare batching alone
    tokens, stopped = inference.cut_at_stop(output[0, input_ids.shape[1]:].tolist(), config.eos_token_id)
    response = inference.decoded_answer(tokenizer, tokens, stopped)
    return judges.result_row(prompt.record, judges.Verdict(parse_answer(response, vocabulary).judgement, GENERATED,
                                                           response=response, generated_tokens=len(tokens),
                                                           stopped=stopped))


def prefill_chunk(model, prompts: list[judges.Prompt], batched: bool) -> dict:
    """One forward pass over each prompt (logits of its last position only): as the batched modes run it, or one
    prompt at a time as the naive loop does."""
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        if not batched:
            for prompt in prompts:
                model(input_ids=torch.tensor([prompt.ids], device=device), logits_to_keep=1)
        else:
            for _ in inference.prefill_passes(model, [prompt.ids for prompt in prompts], device, logits_to_keep=1):
                pass
    if device.type == "cuda":
        torch.cuda.synchronize()  # the other methods end in a host copy; this one must wait as well
    return {}


def prefill_to_head_layer(model, prompts: list[judges.Prompt], head) -> dict:
    """The head's floor: the prompts prefilled as the batched modes prefill them, through the head's layers only
    (on the base model, the adapter off, for a head that reads it)."""
    import contextlib

    import torch

    device = next(model.parameters()).device
    with torch.inference_mode(), adapter_disabled(model) if head.reads_base else contextlib.nullcontext(), \
            layers_up_to(model, max(head.layers)):
        for _ in inference.prefill_passes(model, [prompt.ids for prompt in prompts], device, logits_to_keep=1):
            pass
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {}


def probe_features(model, prompts: list[judges.Prompt], head) -> dict:
    """The features training's linear probe reads, computed as training computes them (the frozen base model)."""
    import contextlib

    with adapter_disabled(model) if head.reads_base else contextlib.nullcontext():
        prompt_features(model, [prompt.ids for prompt in prompts], head.layers, head.pooling)
    return {}


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {row["id"]: row for row in rows}


def rows_of(batch: list[judges.Prompt], verdicts: list[judges.Verdict]) -> dict[str, dict]:
    return by_id(judges.result_rows(batch, verdicts))


def measure(model, tokenizer, ordered: list[judges.Prompt], vocabulary, args, stop_ids,
            head=None) -> tuple[dict, dict, dict]:
    """Best-of-REPEATS seconds per unit of work (a sample for naive, a chunk for the batched modes), the
    answers, and the first pass's seconds.

    On a shared machine other jobs only ever add time, so the minimum over
    repeats is the estimate least disturbed by them; the methods take turns
    on every chunk so a burst of load cannot favour one of them. The first
    pass is kept too: on a GPU it includes what a short evaluation pays once
    (transformers compiles generate's forward pass for each new cache shape).
    """
    config = inference.greedy_config(model, max_new_tokens=args.max_new_tokens, stop_ids=stop_ids,
                                     pad_id=tokenizer.pad_token_id)
    best: dict[tuple, float] = {}  # (method, unit) -> fastest seconds seen
    first: dict[tuple, float] = {}  # (method, unit) -> seconds of the first pass
    methods = [m for m in ("naive", "generate", "score", "prefill", "naive_prefill")
               if not (getattr(args, "skip_generation", False) and m in GENERATION_METHODS)]
    methods += ["head", "probe_features", "prefill_to_head_layer"] if head is not None else []
    answers: dict[str, dict] = {name: {} for name in methods}
    head_judge = judges.Judge(model, tokenizer, vocabulary, "score", head=head, model_answer=False)

    def record_time(method: str, unit, run) -> dict:
        began = time.perf_counter()
        value = run()
        seconds = time.perf_counter() - began
        best[method, unit] = min(best.get((method, unit), float("inf")), seconds)
        first.setdefault((method, unit), seconds)
        return value

    for repeat in range(args.repeats):
        for start in range(0, len(ordered), args.batch_size):
            chunk = ordered[start:start + args.batch_size]
            runs = {
                "naive": lambda: {p.record.id: record_time("naive", p.record.id,
                                                           lambda: naive_one(model, tokenizer, p, vocabulary, config))
                                  for p in chunk[min(args.naive_every // 2, len(chunk) - 1)::args.naive_every]},
                "generate": lambda: record_time("generate", start, lambda: rows_of(chunk, judges.generated_verdicts(
                    model, tokenizer, chunk, vocabulary, max_new_tokens=args.max_new_tokens, stop_ids=stop_ids))),
                "score": lambda: record_time("score", start, lambda: rows_of(chunk, judges.scored_verdicts(
                    model, tokenizer, chunk, vocabulary))),
                "prefill": lambda: record_time("prefill", start, lambda: prefill_chunk(model, chunk, True)),
                "naive_prefill": lambda: record_time("naive_prefill", start,
                                                     lambda: prefill_chunk(model, chunk, False)),
                "head": lambda: record_time("head", start, lambda: rows_of(chunk, head_judge.verdicts(chunk))),
                "probe_features": lambda: record_time("probe_features", start,
                                                      lambda: probe_features(model, chunk, head)),
                "prefill_to_head_layer": lambda: record_time("prefill_to_head_layer", start,
                                                             lambda: prefill_to_head_layer(model, chunk, head)),
            }
            runs = {name: runs[name] for name in methods}
            order = list(runs)[repeat % len(runs):] + list(runs)[:repeat % len(runs)]  # rotate who goes first
            for name in order:
                answers[name] |= runs[name]()
            log.info("repeat %d, samples %d-%d done", repeat + 1, start, start + len(chunk) - 1)

    def totals(seconds: dict[tuple, float]) -> dict[str, float]:
        return {name: sum(value for (method, _), value in seconds.items() if method == name) for name in answers}

    return totals(best), answers, totals(first)


def labelled_samples(path, skip_unlabelled: bool = False) -> tuple[list[Record], list[str]]:
    """The file's records with a reference judgement, and the ids of those skipped without one: the evaluation's
    rule (data/labels.py), so an unlabelled sample is an error unless ``skip_unlabelled``."""
    records, skipped = labelled_records(read_records(path), path, skip=skip_unlabelled, skip_flag="--skip_unlabelled")
    return records, [r.id for r in skipped]


def first_samples(records: list[Record], num_samples: int, path) -> tuple[list[Record], list[str]]:
    """The first ``num_samples`` records and the judgement vocabulary of their references, as the evaluation
    derives it for the samples it judges."""
    records = records[:num_samples]
    if not records:
        raise InputError("no sample with a reference judgement", path=path)
    return records, judgement_vocabulary(r.judgement for r in records)


def read_samples(path, num_samples: int) -> tuple[list[Record], list[str]]:
    """The first ``num_samples`` samples of a file whose every sample has a reference judgement, and their
    judgement vocabulary."""
    return first_samples(labelled_samples(path)[0], num_samples, path)


def benchmark(model, tokenizer, records, vocabulary: list[str], args, head=None) -> dict:
    """Times every method on ``records`` with a loaded model; returns the figures main() prints and writes.

    ``args`` holds max_new_tokens, batch_size, repeats, naive_every, model_path and test_dataset_path (and
    optionally skip_generation; tools/gpu_check/ calls this with the model it built in memory); ``head``: the
    model's verdict head, timed against its floor.
    """
    import torch

    stop_ids = inference.stop_token_ids(tokenizer, model)
    ordered = judges.prompts_longest_first(tokenizer, records)
    judges.generated_verdicts(model, tokenizer, ordered[:2], vocabulary, max_new_tokens=2,
                              stop_ids=stop_ids)  # warm-up: first calls allocate

    load_before = os.getloadavg()
    seconds, answers, first_pass = measure(model, tokenizer, ordered, vocabulary, args, stop_ids, head)

    n = len(records)
    ids = [r.id for r in records]
    naive_ids = [i for i in ids if i in answers.get("naive", {})]  # all of them unless naive_every > 1

    def per_sample_of(totals: dict[str, float]) -> dict[str, float]:
        return {name: value / (len(naive_ids) if name == "naive" else n) for name, value in totals.items()}

    per_sample, first_per_sample = per_sample_of(seconds), per_sample_of(first_pass)
    methods = [name for name in ("naive", "generate", "score", "head") if name in answers]
    # Counted as the evaluation counts them (metrics.summary): an invalid answer is wrong and invalid.
    counts = {name: summary([answers[name][i] for i in (naive_ids if name == "naive" else ids)]) for name in methods}
    device = next(model.parameters()).device.type
    result = {
        "model_path": str(args.model_path), "test_dataset_path": str(args.test_dataset_path), "samples": n,
        "naive_samples": len(naive_ids),
        "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "repeats": args.repeats, "device": device,
        "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "seconds_total": seconds, "seconds_per_sample": per_sample, "first_pass_seconds_per_sample": first_per_sample,
        "bounds": {"prefill_s_per_sample": per_sample["prefill"],
                   "score_vs_prefill": per_sample["score"] / per_sample["prefill"]},
        "accuracy": {name: counts[name]["accuracy"] for name in methods},
        "targets": {}, "targets_met": {},
    }
    if "naive" in answers:
        result = result | generation_figures(answers, per_sample, ids, naive_ids, counts, result["bounds"])
    if head is not None:
        result["verdict_head"] = {"spec": head.spec, "layers": list(head.layers), "reads_base": head.reads_base}
        result["bounds"] |= {"prefill_to_head_layer_s_per_sample": per_sample["prefill_to_head_layer"],
                             name_of("head"): per_sample["head"] / per_sample["prefill_to_head_layer"],
                             name_of("probe_features"):
                                 per_sample["probe_features"] / per_sample["prefill_to_head_layer"]}
        result["targets"] |= HEAD_TARGETS
        result["targets_met"] |= {name: result["bounds"][name] <= target for name, target in HEAD_TARGETS.items()}
    return result


def name_of(method: str) -> str:
    return f"{method}_vs_prefill_to_head_layer"


def generation_figures(answers: dict, per_sample: dict, ids: list[str], naive_ids: list[str], counts: dict,
                       bounds: dict) -> dict:
    """Speed-ups over the naive loop, where its time goes, and how far the batched answers agree with it."""
    def agree(a: str, b: str, key: str) -> float:
        return sum(answers[a][i][key] == answers[b][i][key] for i in naive_ids) / len(naive_ids)

    naive_new_tokens = sum(answers["naive"][i]["generated_tokens"] for i in naive_ids) / len(naive_ids)
    # Where the time goes: the naive loop is one prefill plus a decode step per new token; score mode is
    # one batched prefill, so naive / prefill is the most any method that reads every prompt can gain.
    bounds |= {"naive_prefill_s_per_sample": per_sample["naive_prefill"],
               "naive_mean_new_tokens": naive_new_tokens,
               "naive_decode_step_s": (per_sample["naive"] - per_sample["naive_prefill"]) / max(naive_new_tokens, 1),
               "generate_mean_new_tokens": sum(answers["generate"][i]["generated_tokens"] for i in ids) / len(ids),
               "generate_decode_s_per_sample": per_sample["generate"] - per_sample["prefill"],
               "max_speedup_reading_every_prompt": per_sample["naive"] / per_sample["prefill"]}
    speedup = {"generate_vs_naive": per_sample["naive"] / per_sample["generate"],
               "score_vs_naive": per_sample["naive"] / per_sample["score"]}
    agreement = {"generate_vs_naive_judgement": agree("generate", "naive", "prediction"),
                 "generate_vs_naive_response": agree("generate", "naive", "response"),
                 "score_vs_naive_judgement": agree("score", "naive", "prediction")}
    met = {"generate_speedup": speedup["generate_vs_naive"] >= TARGETS["generate_speedup"],
           "generate_judgement_agreement":
               agreement["generate_vs_naive_judgement"] >= TARGETS["generate_judgement_agreement"],
           "score_speedup": speedup["score_vs_naive"] >= TARGETS["score_speedup"]}
    return {"speedup": speedup, "bounds": bounds, "agreement": agreement,
            "invalid_format_rate": {name: counts[name]["invalid_format_rate"] for name in ("naive", "generate")},
            "targets": dict(TARGETS), "targets_met": met}


def print_report(result: dict) -> None:
    per_sample, accuracy, bounds = result["seconds_per_sample"], result["accuracy"], result["bounds"]
    naive_note = ("" if result["naive_samples"] in (0, result["samples"])
                  else f" (naive timed on {result['naive_samples']})")
    print(f"\n{result['samples']} samples{naive_note}, max_new_tokens {result['max_new_tokens']}, "
          f"batch {result['batch_size']}, {result['device']}, {result['torch_threads']} threads")
    print(f"{'method':<10}{'s/sample':>10}{'speed-up':>10}{'accuracy':>10}")
    for name in accuracy:
        speedup = f"{per_sample['naive'] / per_sample[name]:>9.1f}x" if "naive" in per_sample else f"{'':>10}"
        print(f"{name:<10}{per_sample[name]:>10.3f}{speedup}{accuracy[name]:>10.1%}")
    if "speedup" in result:
        print(f"prefill of every prompt, batched: {bounds['prefill_s_per_sample']:.3f} s/sample "
              f"(one at a time: {bounds['naive_prefill_s_per_sample']:.3f}); naive decode: "
              f"{bounds['naive_mean_new_tokens']:.1f} tokens x {bounds['naive_decode_step_s'] * 1000:.1f} ms\n"
              f"score mode costs {bounds['score_vs_prefill']:.2f}x that prefill; no method that reads every prompt "
              f"this way can beat naive by more than {bounds['max_speedup_reading_every_prompt']:.1f}x here")
        print(f"judgement agreement naive vs generate: {result['agreement']['generate_vs_naive_judgement']:.1%} "
              f"(identical responses {result['agreement']['generate_vs_naive_response']:.1%}); "
              f"naive vs score: {result['agreement']['score_vs_naive_judgement']:.1%}")
    if "verdict_head" in result:
        print(f"verdict head {result['verdict_head']['spec']}: prefill to its highest layer "
              f"{bounds['prefill_to_head_layer_s_per_sample']:.3f} s/sample; the head's score mode costs "
              f"{bounds[name_of('head')]:.2f}x that (target <= {HEAD_TARGETS[name_of('head')]}), training's probe "
              f"features {bounds[name_of('probe_features')]:.2f}x (target <= "
              f"{HEAD_TARGETS[name_of('probe_features')]})")
    skipped = result.get("skipped_no_reference")
    if skipped:
        print(f"skipped: {len(skipped)} sample(s) whose reference has no judgement (判断:…), not counted above "
              f"(--skip_unlabelled), e.g. {skipped[0]}")


def main() -> None:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args, _ = parse_settings(globals(), paths=("model_path", "test_dataset_path", "json"))
    if args.threads:
        torch.set_num_threads(args.threads)
    labelled, skipped = labelled_samples(args.test_dataset_path, args.skip_unlabelled)
    records, vocabulary = first_samples(labelled, args.num_samples, args.test_dataset_path)
    resolved, tokenizer_dir = resolve_model(args.model_path)
    head = choose_head("", resolved, vocabulary)  # the head that comes with the model, as the evaluation's
    session = JudgeSession(resolved, tokenizer_dir, Ranks(0, 1, "cuda" if torch.cuda.is_available() else "cpu"), head)
    result = benchmark(session.model, session.tokenizer, records, vocabulary, args, head.head)
    print_report(result | {"skipped_no_reference": skipped})
    if args.json:
        write_json_atomic(args.json, result | {"skipped_no_reference": skipped})
        log.info("wrote %s", args.json)


if __name__ == "__main__":
    run_main(main)
