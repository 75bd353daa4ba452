"""The GPU check's stages (``tools/gpu_check``): the model built with random weights from its config and saved, the
training runs (bench_train.py's pieces: train_lora.py under the deepspeed launcher with and without gradient
checkpointing, the TRL anchor, full fine-tuning under ZeRO-3) and evaluation (bench_eval.py's benchmark on the model
in memory), each with its figures from ``measure.py``.

``__main__.py`` runs them in order with its settings (``cfg``); a failed run is recorded and the check goes on. The
benchmark scripts they drive are loaded when a stage runs them, not when this module is imported.
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import time
from pathlib import Path

from defect_judge import load_script
from defect_judge.errors import ToolkitError
from tools.gpu_check import measure

# --tiny's model shape, over the config's numbers (__main__.py's TINY_SETTINGS shrink the rest)
TINY_SHAPE = {"num_hidden_layers": 2, "max_window_layers": 2, "hidden_size": 64, "intermediate_size": 128,
              "num_attention_heads": 4, "num_key_value_heads": 2}


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
