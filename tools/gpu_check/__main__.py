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
runs it so this check never rots; its figures mean nothing. This script runs stages.py's stages; the figures
(machine, FLOPs, utilisation, decode speed) are measure.py's, the table report.py's.

  make gpu-check                               # python tools/gpu_check --json runs/gpu_check/gpu_check.json
  python tools/gpu_check --stages evaluate     # one stage
  python tools/gpu_check --tiny                # on a CPU
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

if not __package__:  # run as a folder (python tools/gpu_check): the repository root instead of this folder on the path
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from defect_judge.cli import Settings, parse_settings
from defect_judge.errors import InputError, run_main
from defect_judge.fileio import write_json_atomic
from defect_judge.train.launcher_settings import launcher_default
from tools.gpu_check import measure  # the figures: machine, FLOPs, utilisation, decode speed
from tools.gpu_check.report import report  # the printed table
from tools.gpu_check.stages import (attempt, evaluate, log, model_shape, release, save_model_folder, timed_build,
                                    train_full, train_lora_runs, train_trl)

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
seq_length = launcher_default("MAX_LENGTH", int)  # tokens per training sequence: run_training_lora.sh's MAX_LENGTH
train_steps = 8  # optimizer steps per LoRA run, one sequence each (the first one's warm-up is included)
full_steps = 4  # optimizer steps of the full-parameter run
lora_rank = launcher_default("LORA_RANK", int)  # LoRA rank: run_training_lora.sh's LORA_RANK
lora_alpha = launcher_default("LORA_ALPHA", int)  # LoRA alpha: run_training_lora.sh's LORA_ALPHA
learning_rate = launcher_default("LEARNING_RATE", float)  # learning rate: run_training_lora.sh's LEARNING_RATE
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
# --tiny: these settings (flags given explicitly still win) and stages.py's TINY_SHAPE.
TINY_SETTINGS = {"seq_length": 512, "train_steps": 2, "full_steps": 1, "eval_samples": 4, "max_new_tokens": 4,
                 "eval_batch_size": 2, "eval_repeats": 1, "naive_every": 2}


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
