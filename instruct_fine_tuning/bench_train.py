"""Benchmark: this toolkit's training (train_lora.py) against TRL's SFTTrainer.

Both train the same model with the same LoRA adapters (rank lora_rank on every
linear layer), on the same token sequences (shipped samples whose events are
joined until each conversation fills seq_length tokens, then cut to fit, so
the answer is the only trained part), one sequence per optimizer step, for the
same number of steps, with the same precision (the toolkit's choice: float32
on a CPU) and the same activation-checkpointing setting. Runs alternate
(toolkit, TRL, toolkit, TRL, ...), each in its own process, so each run's peak
RSS is its own. Reported: training tokens/s (from the Trainer's train_runtime,
model loading excluded), peak RSS, and the toolkit/TRL ratios. Targets:
tokens/s >= 1.0x TRL and peak RSS <= 0.8x TRL.

TRL is a benchmark-only dependency:  pip install trl

Examples:
  python instruct_fine_tuning/bench_train.py --steps 4 --json bench_train.json
  python instruct_fine_tuning/bench_train.py --rounds 1 --steps 2 --seq_length 1024
"""
from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge import REPO_ROOT, free_port
from defect_judge.cli import parse_settings
from defect_judge.errors import RunError, run_main
from defect_judge.fileio import write_json_atomic, write_jsonl_atomic
from defect_judge.model.run_folder import TRAINER_STATE_FILE
from defect_judge.train.launcher_settings import launcher_default
from defect_judge.train.targets import PEAK_MEMORY_VS_TRL, TOKENS_PER_SECOND_VS_TRL

# ----------------------------------------------------------------------------
# 参数配置 (edit here, or override any of them with --NAME VALUE)

model_path = "models/SmolLM2-135M-Instruct"  # base model folder (the embedded model)
# chat JSONL whose samples are packed into sequences (python dataset/convert_and_split.py writes it)
data = "dataset/train.jsonl"
seq_length = 2048  # tokens of every training sequence
steps = 4  # optimizer steps per run (one sequence each)
rounds = 2  # toolkit/TRL run pairs, run alternately
lora_rank = launcher_default("LORA_RANK", int)  # LoRA rank: run_training_lora.sh's LORA_RANK
lora_alpha = launcher_default("LORA_ALPHA", int)  # LoRA alpha: run_training_lora.sh's LORA_ALPHA
learning_rate = launcher_default("LEARNING_RATE", float)  # learning rate: run_training_lora.sh's LEARNING_RATE
gradient_checkpointing = False  # activation checkpointing in both tools (the toolkit's default is off, TRL's on)
toolkit_args = ""  # extra train_lora.py flags, e.g. --toolkit_args="--cpu_heap_mmap_threshold_mb 0"
deepspeed = ""  # a DeepSpeed config: train_lora.py runs under the deepspeed launcher on one rank (empty: one process)
json_path = ""  # write the results as JSON here (the flag is --json)
work_dir = ""  # folder for sequences and run outputs; empty: a temporary folder
# ----------------------------------------------------------------------------
FLAGS = {"json_path": "json"}  # json would hide the json module
PATHS = ("model_path", "data", "json", "work_dir", "deepspeed")
TARGETS = {"tokens_per_second_ratio": TOKENS_PER_SECOND_VS_TRL, "peak_rss_ratio": PEAK_MEMORY_VS_TRL}  # >= and <=
SCRIPT = Path(__file__).resolve().parent / "train_lora.py"


def parse_args():
    args, _ = parse_settings(globals(), paths=PATHS, description=__doc__.split("\n\n")[0],
                             flags=FLAGS)
    return args


def check_trl() -> str:
    try:
        import trl
    except ImportError:
        raise RunError("TRL is not installed; it is a benchmark-only dependency: pip install trl") from None
    return trl.__version__


def build_sequences(cfg, folder: Path) -> tuple[Path, Path, int]:
    """``cfg.steps`` conversations of ~seq_length tokens: the events of consecutive
    samples joined into one, then cut to fit (the answer is the first sample's).
    Written as the toolkit's chat JSONL and as TRL's prompt/completion JSONL."""
    from defect_judge.model.loading import load_tokenizer
    from defect_judge.data.schema import Record, read_records
    from defect_judge.templates import event_char_span
    from defect_judge.train.samples import fit_sample

    tokenizer = load_tokenizer(cfg.model_path)
    records = read_records(cfg.data)
    chat, prompt_completion, tokens, cursor = [], [], 0, 0
    for n in range(cfg.steps):
        first = records[cursor % len(records)]
        start, end = event_char_span(first.user)
        events = [first.user[start:end]]
        while True:
            cursor += 1
            user = first.user[:start] + "\n\n".join(events) + first.user[end:]
            candidate = Record(f"bench-{n}", first.subtype, ({"role": "user", "content": user},
                                                             {"role": "assistant", "content": first.assistant}))
            fitted = fit_sample(tokenizer, candidate, cfg.seq_length, path=cfg.data)
            if fitted.truncated:
                break
            other = records[cursor % len(records)]
            events.append(other.user[slice(*event_char_span(other.user))])
        messages = [dict(m) for m in fitted.messages]
        chat.append({"id": candidate.id, "subtype": candidate.subtype, "text": messages})
        prompt_completion.append({"prompt": messages[:-1], "completion": messages[-1:],
                                  "input_ids_expected": fitted.encoded.input_ids})
        tokens += len(fitted.encoded.input_ids)
    toolkit_file, trl_file = folder / "sequences.jsonl", folder / "sequences.trl.jsonl"
    write_jsonl_atomic(toolkit_file, chat)
    write_jsonl_atomic(trl_file, prompt_completion)
    return toolkit_file, trl_file, tokens


def toolkit_command(cfg, sequences: Path, output_dir: Path) -> list[str]:
    # `python -m deepspeed.launcher.runner` is the `deepspeed` command, found without PATH (a --target install).
    launcher = ([sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", "--master_port",
                 str(free_port())] if cfg.deepspeed else [sys.executable])
    command = launcher + [str(SCRIPT), "--model_path", cfg.model_path, "--train_data", str(sequences),
               "--output_dir", str(output_dir), "--max_length", str(cfg.seq_length), "--max_steps", str(cfg.steps),
               "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
               "--lora_rank", str(cfg.lora_rank), "--lora_alpha", str(cfg.lora_alpha),
               "--learning_rate", str(cfg.learning_rate), "--lr_scheduler_type", "linear", "--logging_steps", "1",
               "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
               "--seed", "42"]
    if cfg.gradient_checkpointing:
        command += ["--gradient_checkpointing", "true"]
    if cfg.deepspeed:
        command += ["--deepspeed", str(cfg.deepspeed)]
    return command + shlex.split(cfg.toolkit_args)


def trl_worker(config_path: str) -> None:
    """One TRL SFTTrainer run (a subprocess of the benchmark); writes its metrics beside its config."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from defect_judge.model.loading import pick_dtype

    cfg = json.loads(Path(config_path).read_text())
    rows = [json.loads(line) for line in Path(cfg["sequences"]).read_text(encoding="utf-8").splitlines()]
    expected = [row.pop("input_ids_expected") for row in rows]
    tokenizer = AutoTokenizer.from_pretrained(cfg["model_path"])
    dtype = pick_dtype()  # as the toolkit loads it: float32 on a CPU, bf16 (mixed precision) on a GPU
    model = AutoModelForCausalLM.from_pretrained(cfg["model_path"], dtype=dtype)
    args = SFTConfig(output_dir=cfg["output_dir"], max_steps=cfg["steps"], per_device_train_batch_size=1,
                     gradient_accumulation_steps=1, learning_rate=cfg["learning_rate"], lr_scheduler_type="linear",
                     logging_steps=1, save_strategy="no", report_to="none", max_length=cfg["seq_length"],
                     bf16=dtype == torch.bfloat16, gradient_checkpointing=cfg["gradient_checkpointing"],
                     disable_tqdm=True, seed=42, use_cpu=not torch.cuda.is_available())
    lora = LoraConfig(task_type="CAUSAL_LM", r=cfg["lora_rank"], lora_alpha=cfg["lora_alpha"], lora_dropout=0.0,
                      target_modules="all-linear")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora)
    processed = [list(ids) for ids in trainer.train_dataset["input_ids"]]
    metrics = trainer.train().metrics
    write_json_atomic(Path(cfg["output_dir"]) / "bench_metrics.json",
                      {"train_runtime": metrics["train_runtime"], "tokens": sum(map(len, processed)),
                       "same_tokens_as_toolkit": sorted(processed) == sorted(expected),
                       # what train_lora.py records (trainer.LogPeakGpuMemoryCallback): the process's peak
                       "peak_gpu_memory_bytes": (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
                                                 else None)})


def measure(command: list[str], log_file: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process, from its own rusage."""
    with log_file.open("w", encoding="utf-8") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                   env=dict(os.environ, TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled"))
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
    if process.returncode != 0:
        tail = log_file.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RunError(f"benchmark run failed (exit {process.returncode}):\n{tail}", path=log_file)
    return seconds, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def run_toolkit(cfg, sequences: Path, tokens: int, folder: Path, index: int) -> dict:
    output_dir = folder / f"toolkit-{index}"
    wall, rss = measure(toolkit_command(cfg, sequences, output_dir), folder / f"toolkit-{index}.log")
    history = json.loads((output_dir / TRAINER_STATE_FILE).read_text())["log_history"]
    final = next(entry for entry in history if "train_runtime" in entry)
    runtime = final["train_runtime"]
    return {"tool": "toolkit", "train_runtime_s": runtime, "tokens": tokens, "tokens_per_second": tokens / runtime,
            "peak_rss_bytes": rss, "peak_gpu_memory_bytes": final.get("train_peak_gpu_memory_bytes"), "wall_s": wall}


def run_trl(cfg, sequences: Path, folder: Path, index: int) -> dict:
    output_dir = folder / f"trl-{index}"
    config = output_dir / "bench_config.json"
    write_json_atomic(config, {"sequences": str(sequences), "model_path": cfg.model_path, "output_dir": str(output_dir),
                               "steps": cfg.steps, "seq_length": cfg.seq_length, "lora_rank": cfg.lora_rank,
                               "lora_alpha": cfg.lora_alpha, "learning_rate": cfg.learning_rate,
                               "gradient_checkpointing": cfg.gradient_checkpointing})
    wall, rss = measure([sys.executable, str(Path(__file__).resolve()), "--trl_worker", str(config)],
                        folder / f"trl-{index}.log")
    metrics = json.loads((output_dir / "bench_metrics.json").read_text())
    if not metrics["same_tokens_as_toolkit"]:
        raise RunError("TRL tokenized the sequences differently from the toolkit: the comparison would be unfair",
                         path=output_dir)
    return {"tool": "trl", "train_runtime_s": metrics["train_runtime"], "tokens": metrics["tokens"],
            "tokens_per_second": metrics["tokens"] / metrics["train_runtime"], "peak_rss_bytes": rss,
            "peak_gpu_memory_bytes": metrics.get("peak_gpu_memory_bytes"), "wall_s": wall}


def summarize(runs: list[dict], cfg, trl_version: str) -> dict:
    def median(tool: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["tool"] == tool)

    tools = {tool: {"tokens_per_second": median(tool, "tokens_per_second"),
                    "peak_rss_bytes": median(tool, "peak_rss_bytes")} for tool in ("toolkit", "trl")}
    ratios = {"tokens_per_second_ratio": tools["toolkit"]["tokens_per_second"] / tools["trl"]["tokens_per_second"],
              "peak_rss_ratio": tools["toolkit"]["peak_rss_bytes"] / tools["trl"]["peak_rss_bytes"]}
    import torch
    import transformers

    return {"config": {k: getattr(cfg, k) for k in ("model_path", "data", "seq_length", "steps", "rounds",
                                                     "lora_rank", "lora_alpha", "learning_rate",
                                                     "gradient_checkpointing", "toolkit_args")},
            "versions": {"trl": trl_version, "transformers": transformers.__version__, "torch": torch.__version__},
            "machine": {"cpus": os.cpu_count(), "cuda": torch.cuda.is_available()},
            "runs": runs, "median": tools, "ratios": ratios, "targets": TARGETS,
            "meets_targets": {"tokens_per_second_ratio": ratios["tokens_per_second_ratio"] >= TARGETS[
                "tokens_per_second_ratio"], "peak_rss_ratio": ratios["peak_rss_ratio"] <= TARGETS["peak_rss_ratio"]}}


def report(result: dict) -> str:
    gib = 1024 ** 3
    lines = ["| tool | tokens/s (median) | peak RSS GiB (median) | runs: tokens/s | runs: peak RSS GiB |",
             "| --- | ---: | ---: | --- | --- |"]
    for tool in ("toolkit", "trl"):
        runs = [r for r in result["runs"] if r["tool"] == tool]
        lines.append(f"| {tool} | {result['median'][tool]['tokens_per_second']:.1f} | "
                     f"{result['median'][tool]['peak_rss_bytes'] / gib:.2f} | "
                     f"{', '.join(format(r['tokens_per_second'], '.1f') for r in runs)} | "
                     f"{', '.join(format(r['peak_rss_bytes'] / gib, '.2f') for r in runs)} |")
    ratios, meets = result["ratios"], result["meets_targets"]
    lines.append(f"\ntoolkit/TRL: tokens/s {ratios['tokens_per_second_ratio']:.2f}x (target >= 1.0: "
                 f"{'met' if meets['tokens_per_second_ratio'] else 'NOT met'}), peak RSS "
                 f"{ratios['peak_rss_ratio']:.2f}x (target <= 0.8: {'met' if meets['peak_rss_ratio'] else 'NOT met'})")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--trl_worker":
        return trl_worker(sys.argv[2])
    cfg = parse_args()
    trl_version = check_trl()
    folder = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="bench_train-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"bench_train: sequences of {cfg.seq_length} tokens, {cfg.steps} steps, {cfg.rounds} round(s); "
          f"work folder {folder}", flush=True)
    toolkit_file, trl_file, tokens = build_sequences(cfg, folder)
    runs = []
    for index in range(cfg.rounds):
        for tool in ("toolkit", "trl"):
            print(f"bench_train: round {index + 1}/{cfg.rounds}: {tool} ...", flush=True)
            run = (run_toolkit(cfg, toolkit_file, tokens, folder, index) if tool == "toolkit"
                   else run_trl(cfg, trl_file, folder, index))
            print(f"bench_train:   {run['tokens_per_second']:.1f} tokens/s, peak RSS "
                  f"{run['peak_rss_bytes'] / 1024 ** 3:.2f} GiB, {run['wall_s']:.0f} s in all", flush=True)
            runs.append(run)
    result = summarize(runs, cfg, trl_version)
    print(report(result))
    if cfg.json:
        write_json_atomic(cfg.json, result)
        print(f"bench_train: wrote {cfg.json}")


if __name__ == "__main__":
    run_main(main)
