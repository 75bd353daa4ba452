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
runs it so this script never rots; its figures mean nothing.

  make gpu-check                                  # python tools/gpu_check.py --json runs/gpu_check/gpu_check.json
  python tools/gpu_check.py --stages evaluate     # one stage
  python tools/gpu_check.py --tiny                # on a CPU
"""
from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge import load_script
from defect_judge.cli import parse_settings
from defect_judge.errors import InputError, run_main
from defect_judge.fileio import write_json_atomic

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
TARGETS = {"tokens_per_second_vs_trl": 1.0, "peak_memory_vs_trl": 0.8}  # >= and <=, as bench_train.py
# NVIDIA datasheet figures per GPU: dense bf16 tensor TFLOP/s and HBM TB/s. torch names the card
# ("NVIDIA H100 80GB HBM3" is the SXM H100); the first pattern that matches wins.
GPU_SPECS = (
    (r"\bH200 NVL\b", 835.5, 4.8), (r"\bH200\b", 989.4, 4.8),
    (r"\bH100 NVL\b", 835.5, 3.9), (r"\bH100 PCIe\b", 756.5, 2.0), (r"\bH100\b", 989.4, 3.35),
    (r"\bH800\b", 989.4, 3.35),
    (r"\bA100\b.*80GB.*PCIe", 312.0, 1.935), (r"\bA100\b.*80GB", 312.0, 2.039), (r"\bA100\b", 312.0, 1.555),
    (r"\bL40S\b", 362.05, 0.864), (r"\bL4\b", 121.0, 0.3), (r"\bA10\b", 125.0, 0.6),
)
PACKAGES = ("torch", "transformers", "peft", "deepspeed", "trl", "accelerate", "datasets")
GIB = 2 ** 30


def parse_args() -> argparse.Namespace:
    cfg, given = parse_settings(globals(), paths=PATHS, description=__doc__.split("\n\n")[0],
                                flags=FLAGS)
    if cfg.tiny:  # the toy sizes, where no flag gave a value
        for name, value in TINY_SETTINGS.items():
            if name not in given:
                setattr(cfg, name, value)
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


# ------------------------------------------------------------------ machine

def describe_machine() -> dict:
    """GPU, driver, datasheet peaks and package versions: what the figures were measured with."""
    import torch

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    machine = {"versions": versions, "python": sys.version.split()[0], "cuda": torch.cuda.is_available(),
               "torch_cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        return machine | {"device": "cpu", "gpu": None, "peak_bf16_tflops": None, "hbm_tb_per_s": None}
    properties = torch.cuda.get_device_properties(0)
    name = torch.cuda.get_device_name(0)
    spec = gpu_spec(name)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.split("\n")[0].strip() or None
    except (OSError, subprocess.SubprocessError):
        driver = None
    return machine | {"device": "cuda", "gpu": name, "gpus": torch.cuda.device_count(),
                      "capability": f"sm_{properties.major}{properties.minor}",
                      "memory_bytes": properties.total_memory, "driver": driver,
                      "peak_bf16_tflops": spec[0], "hbm_tb_per_s": spec[1]}


def gpu_spec(name: str) -> tuple[float | None, float | None]:
    """Datasheet dense bf16 TFLOP/s and HBM TB/s of a GPU by its torch name; (None, None) when not in the table."""
    return next(((tflops, tbps) for pattern, tflops, tbps in GPU_SPECS if re.search(pattern, name)), (None, None))


def calibrate(device: str, small: bool) -> dict:
    """What the device reaches: a bf16 matrix product (TFLOP/s) and a copy (TB/s, bytes read plus written).
    MFU is also given against the first, since no program reaches the datasheet peak."""
    import torch

    def timed(run, repeats: int) -> float:
        for _ in range(3):
            run()
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(repeats):
            run()
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - began) / repeats

    n = 256 if small else 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    matmul_s = timed(lambda: a @ b, 10)
    source = torch.empty((16 if small else 2048) << 20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    copy_s = timed(lambda: target.copy_(source), 10)
    return {"matmul_size": n, "matmul_bf16_tflops": 2 * n ** 3 / matmul_s / 1e12,
            "copy_bytes": source.numel(), "copy_tb_per_s": 2 * source.numel() / copy_s / 1e12}


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


def parameter_counts(numbers: dict, lora_rank: int) -> dict:
    """Weights of the layers' linear maps (what costs FLOPs per token), LoRA adapter parameters on all of them,
    and the total."""
    h, inter, layers = numbers["hidden_size"], numbers["intermediate_size"], numbers["num_hidden_layers"]
    head_dim = numbers.get("head_dim") or h // numbers["num_attention_heads"]
    q, kv = numbers["num_attention_heads"] * head_dim, numbers["num_key_value_heads"] * head_dim
    shapes = [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]  # (in, out) per layer
    linear = layers * sum(i * o for i, o in shapes)
    embeddings = numbers["vocab_size"] * h * (1 if numbers.get("tie_word_embeddings") else 2)
    return {"linear": linear, "lora": layers * lora_rank * sum(i + o for i, o in shapes),
            "total": linear + embeddings + layers * (q + 2 * kv + 2 * h) + h,  # + q/k/v biases and norms
            "q_dim": q, "layers": layers}


def training_flops(counts: dict, lengths: list[int], full: bool) -> float:
    """Model FLOPs of one pass over the sequences (recomputation by checkpointing not counted, as MFU asks).

    Linear maps: 2 FLOPs per weight and token forward, 2 backward for the input gradients and, in full
    fine-tuning only, 2 more for the weight gradients (LoRA's frozen weights get none); the adapters cost 6
    per parameter and token. Causal attention: 2 * q_dim * T^2 forward per layer and sequence, twice that
    backward. The output layer is left out: both tools apply it to the trained (answer) tokens only.
    """
    per_token = (6 if full else 4) * counts["linear"] + (0 if full else 6 * counts["lora"])
    attention = 6 * counts["layers"] * counts["q_dim"] * sum(t * t for t in lengths)
    return per_token * sum(lengths) + attention


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
    # A decode step reads every weight once (the input embedding only row by row, unless it is the output
    # layer too); the KV cache of a few hundred tokens adds well under 1% at 7B.
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    if embedding is not model.get_output_embeddings().weight:
        weight_bytes -= embedding.numel() * embedding.element_size()
    bound_step_s = weight_bytes / (machine["hbm_tb_per_s"] * 1e12) if machine.get("hbm_tb_per_s") else None
    seconds, bounds = result["seconds_total"], result["bounds"]
    chunks = math.ceil(result["samples"] / cfg.eval_batch_size)
    # generate mode: everything after the prefill is decoding, chunk by chunk; a random model rarely stops
    # early, so each chunk runs max_new_tokens steps (generate_mean_new_tokens shows whether it did).
    decode_s = max(seconds["generate"] - seconds["prefill"], 1e-9)
    batched_step_s = decode_s / (chunks * cfg.max_new_tokens)
    decode = {
        "weight_bytes_per_step": weight_bytes, "bandwidth_bound_step_s": bound_step_s,
        "naive_step_s": bounds["naive_decode_step_s"],
        "naive_tokens_per_s": 1 / max(bounds["naive_decode_step_s"], 1e-9),
        "generate_step_s": batched_step_s,
        "generate_tokens_per_s": result["samples"] * bounds["generate_mean_new_tokens"] / decode_s,
        "naive_share_of_bound": bound_step_s / bounds["naive_decode_step_s"] if bound_step_s else None,
        "generate_share_of_bound": bound_step_s / batched_step_s if bound_step_s else None,
    }
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return result | {"decode": decode, "peak_gpu_memory_bytes": peak, "compiled_graphs": compiled_graphs()}


def compiled_graphs() -> int | None:
    """How many graphs torch.compile built in this process (transformers' auto-compilation of generate)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["stats"]["unique_graphs"])


# ----------------------------------------------------------------- training

def bench_config(cfg, model_folder: Path, steps: int, gradient_checkpointing: bool, ds_config: str,
                 toolkit_args: str = "") -> argparse.Namespace:
    """The settings bench_train.py's pieces read."""
    return argparse.Namespace(model_path=str(model_folder), data=cfg.train_data, seq_length=cfg.seq_length,
                              steps=steps, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                              learning_rate=cfg.learning_rate, gradient_checkpointing=gradient_checkpointing,
                              toolkit_args=toolkit_args, deepspeed=ds_config)


def sequence_lengths(trl_file: Path) -> list[int]:
    """Token count of every training sequence (bench_train.py writes the ids it expects both tools to see)."""
    return [len(json.loads(line)["input_ids_expected"])
            for line in trl_file.read_text(encoding="utf-8").splitlines()]


def with_utilisation(run: dict, flops: float, machine: dict, calibration: dict) -> dict:
    """Achieved model TFLOP/s and MFU against the datasheet peak and against the measured matrix product."""
    achieved = flops / run["train_runtime_s"] / 1e12
    peak = machine.get("peak_bf16_tflops")
    measured = calibration.get("matmul_bf16_tflops")
    return run | {"model_flops": flops, "model_tflops_per_s": achieved,
                  "mfu": achieved / peak if peak else None,
                  "mfu_vs_measured_matmul": achieved / measured if measured else None}


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
    lengths = sequence_lengths(trl_file)
    flops = training_flops(counts, lengths, full=False)
    runs = {"sequences": {"count": len(lengths), "tokens": tokens, "min": min(lengths), "max": max(lengths)}}
    for checkpointing in (False, True):
        name = "toolkit_lora_checkpointing" if checkpointing else "toolkit_lora"
        run_cfg = bench_config(cfg, folder, cfg.train_steps, checkpointing, ds_config)
        run = attempt(name, lambda: bench_train.run_toolkit(run_cfg, toolkit_file, tokens, work, name))
        runs[name] = run if "error" in run else with_utilisation(run, flops, machine, calibration)
    runs["trl_file"] = str(trl_file)
    return runs


def train_trl(cfg, folder: Path, counts: dict, machine: dict, calibration: dict, trl_file: str | None) -> dict:
    """TRL's SFTTrainer + PEFT on the same sequences as the train stage (built here when it did not run): the
    anchor (bench_train.py's worker, one plain process)."""
    bench_train = load_script("instruct_fine_tuning/bench_train.py")
    try:
        version = bench_train.check_trl()
    except InputError:
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
    flops = training_flops(counts, sequence_lengths(trl_file), full=False)
    return with_utilisation(run, flops, machine, calibration) | {"trl": version,
                                                                 "gradient_checkpointing":
                                                                     cfg.trl_gradient_checkpointing}


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
    counts = parameter_counts(numbers, cfg.lora_rank)
    if "error" not in run:
        run = with_utilisation(run, training_flops(counts, sequence_lengths(trl_file), full=True), machine,
                               calibration)
    if not cfg.keep_models:
        shutil.rmtree(folder, ignore_errors=True)
    return run | {"config": str(cfg.full_config), "parameters": counts["total"], "model_bytes": saved["bytes"]}


def anchor_ratios(training: dict, trl: dict, cfg) -> dict | None:
    """Toolkit / TRL at the same gradient-checkpointing setting: tokens/s and peak memory (GPU, else RSS)."""
    name = "toolkit_lora_checkpointing" if cfg.trl_gradient_checkpointing else "toolkit_lora"
    toolkit = training.get(name) or {}
    if "tokens_per_second" not in toolkit or "tokens_per_second" not in trl:
        return None
    memory = "peak_gpu_memory_bytes" if toolkit.get("peak_gpu_memory_bytes") else "peak_rss_bytes"
    ratios = {"compared": name, "memory": memory,
              "tokens_per_second_vs_trl": toolkit["tokens_per_second"] / trl["tokens_per_second"],
              "peak_memory_vs_trl": toolkit[memory] / trl[memory]}
    return ratios | {"targets": TARGETS, "meets_targets": {
        "tokens_per_second_vs_trl": ratios["tokens_per_second_vs_trl"] >= TARGETS["tokens_per_second_vs_trl"],
        "peak_memory_vs_trl": ratios["peak_memory_vs_trl"] <= TARGETS["peak_memory_vs_trl"]}}


# ------------------------------------------------------------------- report

def report(result: dict) -> str:
    """The table for the README: machine, training runs, the TRL anchor, evaluation."""
    machine, cfg = result["machine"], result["settings"]
    versions = ", ".join(f"{k} {v or 'not installed'}" for k, v in machine["versions"].items())
    gpu = (f"{machine['gpu']} ({machine['capability']}, {machine['memory_bytes'] / GIB:.0f} GiB, driver "
           f"{machine['driver'] or '?'}, CUDA {machine['torch_cuda']})" if machine["gpu"] else
           "no GPU: CPU (--tiny figures mean nothing)")
    lines = [f"gpu_check {result['date']}: {gpu}", f"versions: python {machine['python']}, {versions}"]
    if machine["gpu"] and machine["peak_bf16_tflops"] is None:
        lines.append(f"unknown GPU '{machine['gpu']}': no datasheet peak or bandwidth; MFU only against the "
                     "measured matrix product")
    calibration = result.get("calibrate") or {}
    if "matmul_bf16_tflops" in calibration:
        lines.append(f"measured: bf16 matrix product {calibration['matmul_bf16_tflops']:.4g} TFLOP/s "
                     f"(datasheet {machine['peak_bf16_tflops'] or '?'}), device copy "
                     f"{calibration['copy_tb_per_s']:.3g} TB/s (datasheet {machine['hbm_tb_per_s'] or '?'}; "
                     "bytes read + written)")
    model = result.get("model") or {}
    if "parameters" in model:
        saved = f", saved ({model['bytes'] / 1e9:.1f} GB) in {model['save_s']:.0f} s" if "save_s" in model else ""
        lines.append(f"model: {Path(cfg['model_config']).stem} shape, {model['parameters'] / 1e9:.2f}B parameters, "
                     f"{model['dtype']}, random weights built on the device in {model['build_s']:.1f} s{saved}")

    def memory(run: dict) -> str:
        if run.get("peak_gpu_memory_bytes"):
            return f"{run['peak_gpu_memory_bytes'] / GIB:.1f} GiB"
        return f"{run['peak_rss_bytes'] / GIB:.2f} GiB RSS" if run.get("peak_rss_bytes") else "-"

    def percent(value) -> str:
        return "-" if value is None else f"{value:.1%}"

    training, full, trl = result.get("train") or {}, result.get("full") or {}, result.get("trl") or {}
    rows = [("toolkit LoRA r=%d, ZeRO-2" % cfg["lora_rank"], training.get("toolkit_lora")),
            ("toolkit LoRA, gradient checkpointing", training.get("toolkit_lora_checkpointing")),
            ("TRL SFTTrainer + PEFT (anchor%s)" % (", checkpointing" if cfg["trl_gradient_checkpointing"] else ""),
             trl or None),
            (f"toolkit full, ZeRO-3, {Path(cfg['full_config']).stem} shape", full or None)]
    rows = [(label, run) for label, run in rows if run is not None]
    if rows:
        lines += ["", f"| training ({cfg['seq_length']:,}-token sequences, one a step) | steps | tokens/s | "
                      "peak memory | MFU (datasheet) | MFU (measured matmul) |", "|---|---:|---:|---:|---:|---:|"]
    for label, run in rows:
        steps = cfg["full_steps"] if "full" in label else cfg["train_steps"]
        if "tokens_per_second" in run:
            lines.append(f"| {label} | {steps} | {run['tokens_per_second']:,.0f} | {memory(run)} | "
                         f"{percent(run['mfu'])} | {percent(run['mfu_vs_measured_matmul'])} |")
        else:
            why = run.get("skipped") or (run.get("error") or "").splitlines()[0][:100]
            lines.append(f"| {label} | - | {'skipped' if 'skipped' in run else 'FAILED'}: {why} | | | |")
    anchor = result.get("anchor")
    if anchor:
        met = anchor["meets_targets"]
        lines.append(f"\ntoolkit/TRL: tokens/s {anchor['tokens_per_second_vs_trl']:.2f}x (target >= 1.0: "
                     f"{'met' if met['tokens_per_second_vs_trl'] else 'NOT met'}), peak memory "
                     f"{anchor['peak_memory_vs_trl']:.2f}x (target <= 0.8: "
                     f"{'met' if met['peak_memory_vs_trl'] else 'NOT met'})")
    evaluation = result.get("evaluate") or {}
    if "seconds_per_sample" in evaluation:
        per_sample, decode = evaluation["seconds_per_sample"], evaluation["decode"]
        bound = decode["bandwidth_bound_step_s"]
        first = evaluation["first_pass_seconds_per_sample"]
        lines += ["", f"| evaluation ({evaluation['samples']} prompts, {evaluation['max_new_tokens']} new tokens, "
                      f"batch {evaluation['batch_size']}) | s/sample (best of {evaluation['repeats']}) | speed-up | "
                      "first pass: s/sample, speed-up | decode tokens/s | decode speed / bandwidth bound |",
                  "|---|---:|---:|---:|---:|---:|"]
        naive_label = "naive `generate` per sample" + (
            f" ({evaluation['naive_samples']} timed)" if evaluation["naive_samples"] != evaluation["samples"] else "")
        rows = [(naive_label, "naive", f"{decode['naive_tokens_per_s']:,.1f}", decode["naive_share_of_bound"]),
                ("`generate` mode", "generate", f"{decode['generate_tokens_per_s']:,.0f}",
                 decode["generate_share_of_bound"]),
                ("`score` mode", "score", "-", None)]
        for label, key, tokens_per_s, share in rows:
            step = "-" if share is None else f"{share:.0%}"
            lines.append(f"| {label} | {per_sample[key]:.3f} | {per_sample['naive'] / per_sample[key]:.1f}x | "
                         f"{first[key]:.3f}, {first['naive'] / first[key]:.1f}x | {tokens_per_s} | {step} |")
        lines.append(f"\ngraphs compiled during evaluation: {evaluation['compiled_graphs']} (on a GPU transformers "
                     "compiles generate's forward pass for a static cache, once per shape: the first pass pays it)")
        if bound:
            lines.append(f"bandwidth bound: {decode['weight_bytes_per_step'] / 1e9:.2f} GB of weights read per "
                         f"decode step / {machine['hbm_tb_per_s']} TB/s = {bound * 1000:.2f} ms a step (batch 1: "
                         f"{1 / bound:,.0f} tokens/s at most)")
    failed = [stage for stage, value in result.items() if isinstance(value, dict) and "error" in value]
    if failed:
        lines.append(f"\nFAILED stages: {', '.join(failed)} (see the JSON's 'error' fields)")
    return "\n".join(lines)


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
              "machine": describe_machine()}
    save = (lambda: write_json_atomic(cfg.json, result)) if cfg.json else (lambda: None)
    log(f"{result['machine'].get('gpu') or 'no GPU (CPU)'}; stages {', '.join(cfg.stages)}; work folder "
        f"{cfg.work_dir}")
    if device == "cpu" and not cfg.tiny:
        log("warning: no GPU: a 7B model on a CPU takes hours; --tiny runs the toy size")
    if "calibrate" in cfg.stages:
        result["calibrate"] = attempt("calibrate", lambda: calibrate(device, small=cfg.tiny))
        save()
    tokenizer = load_tokenizer(cfg.tokenizer_path)
    numbers = model_shape(cfg.model_config, cfg.tiny)
    counts = parameter_counts(numbers, cfg.lora_rank)
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
        result["anchor"] = anchor_ratios(result.get("train") or {}, result["trl"], cfg)
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
    print("\n" + report(result), flush=True)
    if cfg.json:
        log(f"wrote {cfg.json}")
    failed = [stage for stage in STAGES if "error" in (result.get(stage) or {})]
    failed += [f"train.{name}" for name, run in (result.get("train") or {}).items()
               if isinstance(run, dict) and "error" in run]
    if failed:
        raise SystemExit(f"gpu_check: failed: {', '.join(failed)}")


if __name__ == "__main__":
    run_main(main)
