"""The figures of the GPU check (``tools/gpu_check``): what the machine is and reaches, what the model costs
(parameters, training FLOPs, decode bytes), and what a run achieved against both (MFU, the bandwidth bound, the
toolkit/TRL ratios).

``stages.py`` and ``__main__.py`` (and the tests) import it; nothing here runs a stage.
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

from defect_judge.train.targets import PEAK_MEMORY_VS_TRL, TOKENS_PER_SECOND_VS_TRL

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
# The toolkit/TRL targets (>= for tokens/s, <= for peak memory; bench_train.py's too), under this check's names.
TARGETS = {"tokens_per_second_vs_trl": TOKENS_PER_SECOND_VS_TRL, "peak_memory_vs_trl": PEAK_MEMORY_VS_TRL}


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


def sequence_lengths(trl_file: Path) -> list[int]:
    """Token count of every training sequence (bench_train.py writes the ids it expects both tools to see)."""
    return [len(json.loads(line)["input_ids_expected"])
            for line in trl_file.read_text(encoding="utf-8").splitlines()]


# -------------------------------------------------------------- achievement

def with_utilisation(run: dict, flops: float, machine: dict, calibration: dict) -> dict:
    """Achieved model TFLOP/s and MFU against the datasheet peak and against the measured matrix product."""
    achieved = flops / run["train_runtime_s"] / 1e12
    peak = machine.get("peak_bf16_tflops")
    measured = calibration.get("matmul_bf16_tflops")
    return run | {"model_flops": flops, "model_tflops_per_s": achieved,
                  "mfu": achieved / peak if peak else None,
                  "mfu_vs_measured_matmul": achieved / measured if measured else None}


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


def decode_speed(model, result: dict, batch_size: int, max_new_tokens: int, hbm_tb_per_s: float | None) -> dict:
    """Decode speed of bench_eval.py's ``result`` on ``model``: the naive loop's and generate mode's tokens/s, and
    each against the memory-bandwidth bound (the weights read once per decode step; None without a datasheet)."""
    # A decode step reads every weight once (the input embedding only row by row, unless it is the output
    # layer too); the KV cache of a few hundred tokens adds well under 1% at 7B.
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    if embedding is not model.get_output_embeddings().weight:
        weight_bytes -= embedding.numel() * embedding.element_size()
    bound_step_s = weight_bytes / (hbm_tb_per_s * 1e12) if hbm_tb_per_s else None
    seconds, bounds = result["seconds_total"], result["bounds"]
    chunks = math.ceil(result["samples"] / batch_size)
    # generate mode: everything after the prefill is decoding, chunk by chunk; a random model rarely stops
    # early, so each chunk runs max_new_tokens steps (generate_mean_new_tokens shows whether it did).
    decode_s = max(seconds["generate"] - seconds["prefill"], 1e-9)
    batched_step_s = decode_s / (chunks * max_new_tokens)
    return {
        "weight_bytes_per_step": weight_bytes, "bandwidth_bound_step_s": bound_step_s,
        "naive_step_s": bounds["naive_decode_step_s"],
        "naive_tokens_per_s": 1 / max(bounds["naive_decode_step_s"], 1e-9),
        "generate_step_s": batched_step_s,
        "generate_tokens_per_s": result["samples"] * bounds["generate_mean_new_tokens"] / decode_s,
        "naive_share_of_bound": bound_step_s / bounds["naive_decode_step_s"] if bound_step_s else None,
        "generate_share_of_bound": bound_step_s / batched_step_s if bound_step_s else None,
    }

def compiled_graphs() -> int | None:
    """How many graphs torch.compile built in this process (transformers' auto-compilation of generate)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["stats"]["unique_graphs"])
