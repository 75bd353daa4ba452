"""tools/gpu_check (the package: __main__.py, stages.py, measure.py, report.py) at toy size on the CPU (--tiny):
every stage through the code paths it takes on a GPU (the model built from the shipped config and saved with
the embedded tokenizer, train_lora.py under the deepspeed launcher with and without gradient checkpointing, full
fine-tuning under ZeRO-3, the TRL anchor when trl is installed, bench_eval.py's three methods), so the GPU check
cannot rot. Its figures mean nothing here; the accounting behind them (parameters, FLOPs, datasheet peaks) is
checked exactly."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys

import pytest

import tools.gpu_check.__main__ as gpu_check
from defect_judge.cli import script_settings
from helpers import REPO_ROOT, run_script
from tools.gpu_check import measure
from tools.gpu_check.report import report
from tools.gpu_check.stages import model_shape

CHECK = REPO_ROOT / "tools" / "gpu_check"  # run as a folder: python tools/gpu_check
CONFIGS = REPO_ROOT / "tools" / "gpu_check_configs"


def test_shipped_configs_give_the_qwen_parameter_counts():
    """The model cards' sizes, to the parameter, as transformers builds them (7.62B untied, 0.49B tied)."""
    seven = model_shape(CONFIGS / "Qwen2.5-Coder-7B-Instruct.json", shrink=False)
    assert {k: seven[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                  "num_key_value_heads", "vocab_size", "tie_word_embeddings", "rope_theta",
                                  "rms_norm_eps")} == {
        "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False, "rope_theta": 1e6,
        "rms_norm_eps": 1e-6}
    counts = measure.parameter_counts(seven, lora_rank=32)
    assert counts["total"] == 7_615_616_512 and counts["lora"] == 80_740_352
    half = model_shape(CONFIGS / "Qwen2.5-Coder-0.5B-Instruct.json", shrink=False)
    assert (half["hidden_size"], half["intermediate_size"], half["num_hidden_layers"], half["num_attention_heads"],
            half["num_key_value_heads"], half["vocab_size"], half["tie_word_embeddings"]) == \
        (896, 4864, 24, 14, 2, 151936, True)
    assert measure.parameter_counts(half, lora_rank=32)["total"] == 494_032_768


def test_flops_and_datasheet_peaks():
    counts = {"linear": 10, "lora": 1, "layers": 2, "q_dim": 3}
    # LoRA: 4 per frozen weight and token + 6 per adapter parameter; attention 6 * layers * q_dim * T^2
    assert measure.training_flops(counts, [4, 2], full=False) == (4 * 10 + 6) * 6 + 6 * 2 * 3 * (16 + 4)
    assert measure.training_flops(counts, [4], full=True) == 6 * 10 * 4 + 6 * 2 * 3 * 16
    assert measure.gpu_spec("NVIDIA H100 80GB HBM3") == (989.4, 3.35)  # the SXM card's torch name
    assert measure.gpu_spec("NVIDIA H200") == (989.4, 4.8)
    assert measure.gpu_spec("NVIDIA A100-SXM4-80GB") == (312.0, 2.039)
    assert measure.gpu_spec("NVIDIA GH200 480GB") == (None, None)  # not taken for an H200
    assert measure.gpu_spec("Some Future GPU") == (None, None)


def test_tiny_check_runs_every_stage_on_the_cpu(embedded_model_dir, shipped_split, tmp_path):
    out, work = tmp_path / "gpu_check.json", tmp_path / "work"
    result = run_script(sys.executable, CHECK, "--tiny", "--tokenizer_path", embedded_model_dir,
                        "--train_data", shipped_split["train_file"], "--test_data", shipped_split["test_file"],
                        "--work_dir", work, "--json", out)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    data = json.loads(out.read_text())
    assert data["machine"]["versions"]["torch"] and data["machine"]["versions"]["deepspeed"]
    assert data["model"]["config"].endswith("Qwen2.5-Coder-7B-Instruct.json") and data["model"]["bytes"] > 0

    train = data["train"]
    assert train["sequences"]["count"] == 2 and train["sequences"]["max"] <= 512
    for name in ("toolkit_lora", "toolkit_lora_checkpointing"):
        run = train[name]
        assert run["tokens_per_second"] > 0 and run["peak_rss_bytes"] > 0 and run["model_flops"] > 0
        log = (work / "lora" / f"toolkit-{name}.log").read_text()
        assert "deepspeed.launcher.launch" in log and "ds_config_lora.json" in log and "(lora, " in log
    assert "--gradient_checkpointing true" in (work / "lora" / "toolkit-toolkit_lora_checkpointing.log").read_text()
    assert data["full"]["tokens_per_second"] > 0
    full_log = (work / "full" / "toolkit-zero3.log").read_text()
    assert "ds_config_full_zero3.json" in full_log and "(full, " in full_log

    evaluation = data["evaluate"]
    assert set(evaluation["seconds_per_sample"]) == {"naive", "generate", "score", "prefill", "naive_prefill"}
    assert evaluation["samples"] == 4 and evaluation["naive_samples"] == 2
    assert evaluation["decode"]["weight_bytes_per_step"] > 0 and evaluation["decode"]["bandwidth_bound_step_s"] is None

    if importlib.util.find_spec("trl") is None:  # not installed by make setup; make bench installs it
        assert "TRL is not installed" in data["trl"]["skipped"] and "SKIPPED: TRL is not installed" in result.stdout
    else:
        assert data["trl"]["tokens_per_second"] > 0 and data["anchor"]["tokens_per_second_vs_trl"] > 0
    for row in ("| toolkit LoRA r=32, ZeRO-2 |", "| toolkit LoRA, gradient checkpointing |",
                "| toolkit full, ZeRO-3, Qwen2.5-Coder-0.5B-Instruct shape |", "| `generate` mode |",
                "| `score` mode |"):
        assert row in result.stdout
    assert "versions: python" in result.stdout and "deepspeed 0." in result.stdout
    assert not (work / "model").exists() and not (work / "full" / "model").exists()  # model folders removed


def test_report_of_a_gpu_run_names_the_card_the_anchor_and_the_bound():
    """The GPU-only branches of the table (datasheet MFU, GPU memory, bandwidth bound), on made-up figures."""
    run = {"tokens_per_second": 9000.0, "peak_gpu_memory_bytes": 40 * 2 ** 30, "peak_rss_bytes": 2 ** 30,
           "mfu": 0.41, "mfu_vs_measured_matmul": 0.5}
    trl = run | {"tokens_per_second": 6000.0, "peak_gpu_memory_bytes": 60 * 2 ** 30}
    settings = {s.flag: s.default for s in script_settings(vars(gpu_check), gpu_check.FLAGS)}
    per_sample = {"naive": 6.4, "generate": 0.4, "score": 0.05, "prefill": 0.03, "naive_prefill": 0.04}
    result = {
        "date": "2026-11-26", "settings": settings,
        "machine": {"versions": {"torch": "2.11.0", "trl": None}, "python": "3.12.3", "gpu": "NVIDIA H100 80GB HBM3",
                    "capability": "sm_90", "memory_bytes": 80 * 2 ** 30, "driver": "580.159.04", "torch_cuda": "13.0",
                    "peak_bf16_tflops": 989.4, "hbm_tb_per_s": 3.35},
        "calibrate": {"matmul_bf16_tflops": 790.0, "copy_tb_per_s": 3.0},
        "model": {"parameters": 7_615_616_512, "dtype": "bfloat16", "build_s": 4.0, "bytes": 15.2e9, "save_s": 20.0},
        "train": {"toolkit_lora": run, "toolkit_lora_checkpointing": {"error": "InputError: CUDA out of memory"}},
        "trl": trl, "full": run,
        "evaluate": {"samples": 64, "naive_samples": 4, "max_new_tokens": 256, "batch_size": 32, "repeats": 2,
                     "seconds_per_sample": per_sample, "first_pass_seconds_per_sample": per_sample,
                     "compiled_graphs": 3,
                     "decode": {"naive_tokens_per_s": 40.0, "naive_share_of_bound": 0.17,
                                "generate_tokens_per_s": 900.0, "generate_share_of_bound": 0.12,
                                "bandwidth_bound_step_s": 0.0042,
                                "weight_bytes_per_step": 14.1e9}},
    }
    result["anchor"] = measure.anchor_ratios(result["train"], trl, argparse.Namespace(**settings))
    assert result["anchor"]["tokens_per_second_vs_trl"] == pytest.approx(1.5)
    assert result["anchor"]["peak_memory_vs_trl"] == pytest.approx(40 / 60)
    text = report(result)
    assert "NVIDIA H100 80GB HBM3 (sm_90, 80 GiB, driver 580.159.04, CUDA 13.0)" in text
    assert "| toolkit LoRA r=32, ZeRO-2 | 8 | 9,000 | 40.0 GiB | 41.0% | 50.0% |" in text
    assert "| toolkit LoRA, gradient checkpointing | - | FAILED: InputError: CUDA out of memory |" in text
    assert "toolkit/TRL: tokens/s 1.50x (target >= 1.0: met), peak memory 0.67x (target <= 0.8: met)" in text
    assert "| `generate` mode | 0.400 | 16.0x | 0.400, 16.0x | 900 | 12% |" in text
    assert "= 4.20 ms a step" in text


def test_help_of_the_folder_entry_lists_the_settings():
    text = run_script(sys.executable, CHECK, "--help", check=True).stdout
    assert text.startswith("usage: gpu_check ") and "--stages" in text and "--tiny" in text and "--json" in text
