"""The GPU check's table for the README, from its result (``gpu_check.json``'s content): the machine, the
training runs, the TRL anchor, evaluation.

``__main__.py`` (and the tests) import it.
"""
from __future__ import annotations

from pathlib import Path

GIB = 2 ** 30


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
        targets = anchor["targets"]
        lines.append(f"\ntoolkit/TRL: tokens/s {anchor['tokens_per_second_vs_trl']:.2f}x (target >= "
                     f"{targets['tokens_per_second_vs_trl']:.1f}: "
                     f"{'met' if met['tokens_per_second_vs_trl'] else 'NOT met'}), peak memory "
                     f"{anchor['peak_memory_vs_trl']:.2f}x (target <= {targets['peak_memory_vs_trl']:.1f}: "
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
