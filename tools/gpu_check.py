#!/usr/bin/env python
"""GPU check: this toolkit's training and evaluation at 7B scale on one GPU, from a model config only.

Builds Qwen2.5-Coder-7B-Instruct's architecture (tools/gpu_check_configs/: its config.json, numbers only)
with random weights directly on the GPU in bf16, saves it with the embedded model's tokenizer (the same
ChatML template; its ids are a subset of the model's 152,064) and measures, stage by stage, in this order:

  calibrate  a bf16 matrix product and a device-to-device copy: what this GPU really reaches
  train      train_lora.py under the deepspeed launcher with ds_config_lora.json, LoRA r=32 on every linear
             layer, 4,096-token sequences packed from the shipped samples (bench_train.py's), a few optimizer
             steps, without and with gradient checkpointing: tokens/s, peak GPU memory, MFU
  trl        TRL's SFTTrainer + PEFT on the same model, sequences and length: the anchor (skipped, and said
             so, when trl is not installed)
  full       full-parameter training under ds_config_full_zero3.json on Qwen2.5-Coder-0.5B's shape
  evaluate   the first 64 prompts of the test split, 256 new tokens: the naive per-sample generate,
             model_evaluation.py's generate mode and its score mode (eval/bench_eval.py's benchmark, on the
             same weights built again in memory): seconds per sample, speed-ups, decode tokens/s against the
             memory-bandwidth bound (the weights read once per decode step)

Random weights cost exactly what real ones cost per token, so the speed and memory figures are the real
ones; what the model answers is noise (accuracies and agreements mean nothing here). It prints a table
and writes --json after every stage, so a run cut short keeps what it measured. --tiny shrinks the model,
the sequences and the counts to a toy that runs every stage on a CPU in about a minute: the test suite
runs it so this script never rots; its figures mean nothing. This script runs the stages; the figures
(machine, FLOPs, utilisation, decode speed) are gpu_check_measure.py's, the table gpu_check_report.py's.

  make gpu-check                                  # python tools/gpu_check.py --json runs/gpu_check/gpu_check.json
  python tools/gpu_check.py --stages evaluate     # one stage
  python tools/gpu_check.py --tiny                # on a CPU
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge import load_script
from defect_judge.cli import Settings, parse_settings
from defect_judge.errors import InputError, ToolkitError, run_main
from defect_judge.fileio import write_json_atomic

measure = load_script("tools/gpu_check_measure.py")  # the figures: machine, FLOPs, utilisation, decode speed
tables = load_script("tools/gpu_check_report.py")  # the printed table

# ----------------------------------------------------------------------------
# 参数配置 (edit here, or override any of them with --NAME VALUE)

# config.json of the model to evaluate and LoRA-train
model_config = "tools/gpu_check_configs/Qwen2.5-Coder-7B-Instruct.json"
# config.json of the model to train in full under ZeRO-3
full_config = "tools/gpu_check_configs/Qwen2.5-Coder-0.5B-Instruct.json"
# tokenizer folder (a chat template): the embedded model's (make setup exports it)
tokenizer_path = "models/SmolLM2-135M-Instruct"
# chat JSONL packed into training sequences (python dataset/convert_and_split.py)
train_data = "dataset/train.jsonl"
test_data = "dataset/test.jsonl"  # chat JSONL of the evaluation prompts
lora_ds_config = "ds_config_lora.json"  # DeepSpeed config of the LoRA runs
full_ds_config = "ds_config_full_zero3.json"  # DeepSpeed config of the full-parameter run
seq_length = 4096  # tokens per training sequence: MAX_LENGTH of run_training_lora.sh
train_steps = 8  # optimizer steps per LoRA run, one sequence each (the first one's warm-up is included)
full_steps = 4  # optimizer steps of the full-parameter run
lora_rank = 32  # LoRA rank
lora_alpha = 32  # LoRA alpha
learning_rate = 3e-5  # learning rate
# activation checkpointing in the TRL anchor (compared with the toolkit run of the same setting)
trl_gradient_checkpointing = False
eval_samples = 64  # evaluation prompts: the first N of test_data
max_new_tokens = 256  # answer length of both generation paths
eval_batch_size = 32  # batch of the generate and score modes (model_evaluation.py's default)
# each evaluation timing is the best of this many passes. Best of 2: on a GPU transformers compiles the forward
# pass for generate mode's static cache, once per shape; the first pass pays that, the second shows the steady
# state (the compiled-graph count is in the JSON).
eval_repeats = 2
# time the naive loop on every k-th prompt only: at 7B it costs several seconds a prompt for 256 tokens, so all
# 64 would take most of the time this check is given; its figure is a mean per sample, which 4 prompts estimate
# (every prompt decodes the same 256 steps, which is where its time goes).
naive_every = 16
stages = ["calibrate", "train", "trl", "full", "evaluate"]  # which stages run (always in this order)
tiny = False  # a toy size for a CPU (the tests): every stage and code path, figures meaningless
work_dir = "runs/gpu_check/work"  # folder for the model folders (15 GB at 7B), sequences, training outputs
keep_models = False  # keep the built model folders in work_dir afterwards
seed = 0  # seed of the random weights
json_path = ""  # write the results as JSON here (the flag is --json)
# ----------------------------------------------------------------------------
FLAGS = {"json_path": "json"}  # json would hide the json module
PATHS = ("model_config", "full_config", "tokenizer_path", "train_data", "test_data", "lora_ds_config",
         "full_ds_config", "work_dir", "json")
STAGES = ("calibrate", "train", "trl", "full", "evaluate")
# --tiny: these settings (flags given explicitly still win) and this model shape.
TINY_SETTINGS = {"seq_length": 512, "train_steps": 2, "full_steps": 1, "eval_samples": 4, "max_new_tokens": 4,
                 "eval_batch_size": 2, "eval_repeats": 1, "naive_every": 2}
TINY_SHAPE = {"num_hidden_layers": 2, "max_window_layers": 2, "hidden_size": 64, "intermediate_size": 128,
              "num_attention_heads": 4, "num_key_value_heads": 2}


def parse_args() -> Settings:
    cfg, given = parse_settings(globals(), paths=PATHS, description=__doc__.split("\n\n")[0],
                                flags=FLAGS)
    if cfg.tiny:  # the toy sizes, where no flag gave a value
        cfg = replace(cfg, **{name: value for name, value in TINY_SETTINGS.items() if name not in given})
    unknown = sorted(set(cfg.stages) - set(STAGES))
    if unknown:
        raise InputError(f"--stages: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    for name, hint in (("tokenizer_path", "run `make setup`, which exports the embedded model"),
                       ("train_data", "run python dataset/convert_and_split.py"),
                       ("test_data", "run python dataset/convert_and_split.py")):
        if not Path(getattr(cfg, name)).exists():
            raise InputError(f"--{name} not found ({hint})", path=getattr(cfg, name))
    return cfg


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} gpu_check: {message}", flush=True)


# -------------------------------------------------------------------- model

def model_shape(config_file: str | Path, shrink: bool) -> dict:
    """The config's numbers (with --tiny's shape over them), as a dict for transformers and the FLOP counts."""
    numbers = json.loads(Path(config_file).read_text(encoding="utf-8"))
    return numbers | (TINY_SHAPE if shrink else {})


def build_model(numbers: dict, tokenizer, device: str, seed: int):
    """Random weights, created directly on the device in the dtype the toolkit loads (bf16 on a GPU):
    no full-size copy is ever made elsewhere, so 7B takes seconds."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from defect_judge.model.loading import pick_dtype

    numbers = dict(numbers)
    config = AutoConfig.for_model(numbers.pop("model_type"), **numbers)
    # The tokenizer's special tokens, so stopping and padding work as with a real model of this tokenizer.
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=pick_dtype(device))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()


def save_model_folder(model, tokenizer, folder: Path) -> dict:
    """The model as a Hugging Face folder (safetensors) with the tokenizer, for train_lora.py to load."""
    if folder.exists():
        shutil.rmtree(folder)
    began = time.perf_counter()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"folder": str(folder), "save_s": time.perf_counter() - began,
            "bytes": sum(f.stat().st_size for f in folder.iterdir() if f.is_file())}


# --------------------------------------------------------------- evaluation

def evaluate(model, tokenizer, cfg, machine: dict) -> dict:
    """bench_eval.py's three methods on the model in memory, plus decode speed against the bandwidth bound."""
    import torch

    bench_eval = load_script("eval/bench_eval.py")
    records, vocabulary = bench_eval.read_samples(cfg.test_data, cfg.eval_samples)
    args = argparse.Namespace(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size,
                              repeats=cfg.eval_repeats, naive_every=cfg.naive_every,
                              model_path=str(cfg.model_config), test_dataset_path=cfg.test_data)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = bench_eval.benchmark(model, tokenizer, records, vocabulary, args)
    bench_eval.print_report(result)
    decode = measure.decode_speed(model, result, cfg.eval_batch_size, cfg.max_new_tokens,
                                  machine.get("hbm_tb_per_s"))
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return result | {"decode": decode, "peak_gpu_memory_bytes": peak, "compiled_graphs": measure.compiled_graphs()}


# ----------------------------------------------------------------- training

def bench_config(cfg, model_folder: Path, steps: int, gradient_checkpointing: bool, ds_config: str,
                 toolkit_args: str = "") -> argparse.Namespace:
    """The settings bench_train.py's pieces read."""
    return argparse.Namespace(model_path=str(model_folder), data=cfg.train_data, seq_length=cfg.seq_length,
                              steps=steps, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                              learning_rate=cfg.learning_rate, gradient_checkpointing=gradient_checkpointing,
                              toolkit_args=toolkit_args, deepspeed=ds_config)


def attempt(name: str, run) -> dict:
    """One run; a failure (an out-of-memory, say) is recorded with the end of its log, and the check goes on."""
    log(f"{name} ...")
    began = time.perf_counter()
    try:
        result = run()
    except Exception as error:  # noqa: BLE001 - every failure is a finding of this check
        text = str(error).strip()
        log(f"{name} FAILED: {text.splitlines()[-1] if text else type(error).__name__}")
        return {"error": f"{type(error).__name__}: {text[-4000:]}"}
    log(f"{name}: done in {time.perf_counter() - began:.0f} s")
    return result


def train_lora_runs(cfg, folder: Path, counts: dict, machine: dict, calibration: dict) -> dict:
    """train_lora.py under the deepspeed launcher, without and with gradient checkpointing."""
    bench_train = load_script("instruct_fine_tuning/bench_train.py")
    work = Path(cfg.work_dir) / "lora"
    work.mkdir(parents=True, exist_ok=True)
    ds_config = cfg.lora_ds_config
    toolkit_file, trl_file, tokens = bench_train.build_sequences(
        bench_config(cfg, folder, cfg.train_steps, False, ds_config), work)
    lengths = measure.sequence_lengths(trl_file)
    flops = measure.training_flops(counts, lengths, full=False)
    runs = {"sequences": {"count": len(lengths), "tokens": tokens, "min": min(lengths), "max": max(lengths)}}
    for checkpointing in (False, True):
        name = "toolkit_lora_checkpointing" if checkpointing else "toolkit_lora"
        run_cfg = bench_config(cfg, folder, cfg.train_steps, checkpointing, ds_config)
        run = attempt(name, lambda: bench_train.run_toolkit(run_cfg, toolkit_file, tokens, work, name))
        runs[name] = run if "error" in run else measure.with_utilisation(run, flops, machine, calibration)
    runs["trl_file"] = str(trl_file)
    return runs


def train_trl(cfg, folder: Path, counts: dict, machine: dict, calibration: dict, trl_file: str | None) -> dict:
    """TRL's SFTTrainer + PEFT on the same sequences as the train stage (built here when it did not run): the
    anchor (bench_train.py's worker, one plain process)."""
    bench_train = load_script("instruct_fine_tuning/bench_train.py")
    try:
        version = bench_train.check_trl()
    except ToolkitError:  # check_trl's one failure: TRL is not installed
        log('trl: SKIPPED: TRL is not installed (pip install "trl>=1.16.0" "datasets==4.8.5"); the anchor was '
            'not run')
        return {"skipped": "TRL is not installed (pip install trl): the anchor was not run"}
    if trl_file is None:
        work = Path(cfg.work_dir) / "lora"
        work.mkdir(parents=True, exist_ok=True)
        _, trl_file, _ = bench_train.build_sequences(bench_config(cfg, folder, cfg.train_steps, False, ""), work)
    trl_file = Path(trl_file)
    run_cfg = bench_config(cfg, folder, cfg.train_steps, cfg.trl_gradient_checkpointing, "")
    run = attempt("trl", lambda: bench_train.run_trl(run_cfg, trl_file, trl_file.parent, "anchor"))
    if "error" in run:
        return run | {"trl": version}
    flops = measure.training_flops(counts, measure.sequence_lengths(trl_file), full=False)
    return measure.with_utilisation(run, flops, machine, calibration) | {
        "trl": version, "gradient_checkpointing": cfg.trl_gradient_checkpointing}


def train_full(cfg, tokenizer, device: str, machine: dict, calibration: dict) -> dict:
    """Full-parameter training under ZeRO-3 on the smaller shape: the path that 7B full fine-tuning takes."""
    bench_train = load_script("instruct_fine_tuning/bench_train.py")
    numbers = model_shape(cfg.full_config, cfg.tiny)
    work = Path(cfg.work_dir) / "full"
    work.mkdir(parents=True, exist_ok=True)
    model = build_model(numbers, tokenizer, device, cfg.seed)
    saved = save_model_folder(model, tokenizer, work / "model")
    del model
    release(device)
    folder = Path(saved["folder"])
    seq_cfg = bench_config(cfg, folder, cfg.full_steps, False, cfg.full_ds_config, "--finetuning_type full")
    toolkit_file, trl_file, tokens = bench_train.build_sequences(seq_cfg, work)
    run = attempt("full", lambda: bench_train.run_toolkit(seq_cfg, toolkit_file, tokens, work, "zero3"))
    counts = measure.parameter_counts(numbers, cfg.lora_rank)
    if "error" not in run:
        flops = measure.training_flops(counts, measure.sequence_lengths(trl_file), full=True)
        run = measure.with_utilisation(run, flops, machine, calibration)
    if not cfg.keep_models:
        shutil.rmtree(folder, ignore_errors=True)
    return run | {"config": str(cfg.full_config), "parameters": counts["total"], "model_bytes": saved["bytes"]}


# --------------------------------------------------------------------- main

def timed_build(cfg, numbers: dict, tokenizer, device: str) -> tuple[object, dict]:
    import torch

    log(f"building {Path(cfg.model_config).stem}'s shape on {device} with random weights")
    began = time.perf_counter()
    model = build_model(numbers, tokenizer, device, cfg.seed)
    if device == "cuda":
        torch.cuda.synchronize()
    return model, {"config": str(cfg.model_config), "parameters": sum(p.numel() for p in model.parameters()),
                   "dtype": str(model.dtype).replace("torch.", ""), "build_s": time.perf_counter() - began}


def release(device: str) -> None:
    """Give a deleted model's memory back: the next stage is another process, or another model."""
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    import torch

    from defect_judge.model.loading import load_tokenizer

    cfg = parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {"date": time.strftime("%Y-%m-%d"),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
              "machine": measure.describe_machine()}
    save = (lambda: write_json_atomic(cfg.json, result)) if cfg.json else (lambda: None)
    log(f"{result['machine'].get('gpu') or 'no GPU (CPU)'}; stages {', '.join(cfg.stages)}; work folder "
        f"{cfg.work_dir}")
    if device == "cpu" and not cfg.tiny:
        log("warning: no GPU: a 7B model on a CPU takes hours; --tiny runs the toy size")
    if "calibrate" in cfg.stages:
        result["calibrate"] = attempt("calibrate", lambda: measure.calibrate(device, small=cfg.tiny))
        save()
    tokenizer = load_tokenizer(cfg.tokenizer_path)
    numbers = model_shape(cfg.model_config, cfg.tiny)
    counts = measure.parameter_counts(numbers, cfg.lora_rank)
    folder = Path(cfg.work_dir) / "model"
    calibration = result.get("calibrate") or {}
    # Training first: its figures are what this check is mostly for, and if time runs out, evaluation (the
    # least predictable stage) is what is lost. The training runs are processes of their own, loading the
    # saved folder; evaluation then builds the same weights again (same seed) in memory, in seconds.
    if {"train", "trl"} & set(cfg.stages):
        model, result["model"] = timed_build(cfg, numbers, tokenizer, device)
        result["model"] |= save_model_folder(model, tokenizer, folder)
        log(f"saved {result['model']['bytes'] / 1e9:.1f} GB in {result['model']['save_s']:.0f} s")
        del model
        release(device)
        save()
        if importlib.util.find_spec("deepspeed") is None:
            log("warning: deepspeed is not installed: the toolkit's training runs will fail (README: GPU check)")
    if "train" in cfg.stages:
        result["train"] = attempt("train stage", lambda: train_lora_runs(cfg, folder, counts, result["machine"],
                                                                         calibration))
        save()
    if "trl" in cfg.stages:
        result["trl"] = attempt("trl stage", lambda: train_trl(cfg, folder, counts, result["machine"], calibration,
                                                               (result.get("train") or {}).get("trl_file")))
        result["anchor"] = measure.anchor_ratios(result.get("train") or {}, result["trl"], cfg)
        save()
    if not cfg.keep_models and folder.exists():
        shutil.rmtree(folder)
    if "full" in cfg.stages:
        result["full"] = attempt("full stage", lambda: train_full(cfg, tokenizer, device, result["machine"],
                                                                  calibration))
        save()
    if "evaluate" in cfg.stages:
        model, built = timed_build(cfg, numbers, tokenizer, device)
        result.setdefault("model", built)["eval_build_s"] = built["build_s"]
        result["evaluate"] = attempt("evaluate", lambda: evaluate(model, tokenizer, cfg, result["machine"]))
        del model
        release(device)
        save()
    print("\n" + tables.report(result), flush=True)
    if cfg.json:
        log(f"wrote {cfg.json}")
    failed = [stage for stage in STAGES if "error" in (result.get(stage) or {})]
    failed += [f"train.{name}" for name, run in (result.get("train") or {}).items()
               if isinstance(run, dict) and "error" in run]
    if failed:
        raise SystemExit(f"gpu_check: failed: {', '.join(failed)}")


if __name__ == "__main__":
    run_main(main)
