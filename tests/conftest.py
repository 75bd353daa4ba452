"""Shared fixtures: the embedded tokenizer, a tiny real model built from a config (and loaded), a small
chat-JSONL split made from the shipped sample data, six of its test samples, and a training OUTPUT_DIR of LoRA
checkpoints; and one torch thread for the modules that ask for it. Plain helpers are in helpers.py."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from defect_judge.templates import parse_answer
from helpers import CONVERT, EMBEDDED_MODEL, REPO_ROOT, TRAIN, build_tiny_model, run_script, write_subset

# Tests never touch the network.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread here and in the scripts started, for a module that asks for it
    (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a CPU shared with other jobs two threads that wait
    on each other run many times slower. Correctness does not depend on it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    os.environ.pop("OMP_NUM_THREADS", None)


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    if not (EMBEDDED_MODEL / "model.safetensors").is_file():
        pytest.fail(f"{EMBEDDED_MODEL} is missing: run `make setup`")
    return EMBEDDED_MODEL


@pytest.fixture(scope="session")
def embedded_tokenizer(embedded_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_tokenizer) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), embedded_tokenizer)


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    """The tiny model loaded, once per test module (a test that trains it works on a copy)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.fixture(scope="session")
def shipped_split(tmp_path_factory) -> dict[str, Path]:
    """converted/train/dev/test JSONL made by the real converter from the shipped dataset/output."""
    out = tmp_path_factory.mktemp("split")
    files = {"converted_file": out / "converted_data.jsonl", "train_file": out / "train.jsonl",
             "dev_file": out / "dev.jsonl", "test_file": out / "test.jsonl"}
    args = [CONVERT, "--input_dir", REPO_ROOT / "dataset" / "output"]
    for name, path in files.items():
        args += [f"--{name}", path]
    run_script(*args, check=True)
    return files | {"stats": out / "split_stats.json"}


@pytest.fixture(scope="module")
def six_samples(shipped_split, tmp_path_factory) -> Path:
    """Six shipped test samples: three subtypes, each with a 是 and a 否 reference."""
    lines = shipped_split["test_file"].read_text(encoding="utf-8").splitlines()
    chosen, seen = [], set()
    for line in lines:
        record = json.loads(line)
        judgement = parse_answer(record["text"][-1]["content"]).judgement
        subtypes = {s for s, _ in seen}
        if (record["subtype"], judgement) in seen or (record["subtype"] not in subtypes and len(subtypes) == 3):
            continue
        seen.add((record["subtype"], judgement))
        chosen.append(line)
        if len(chosen) == 6:
            break
    assert len(chosen) == 6
    path = tmp_path_factory.mktemp("six") / "test.jsonl"
    path.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def training_output_dir(tiny_model_dir, tmp_path_factory, embedded_tokenizer) -> Path:
    """What training leaves: checkpoint-{step} adapters, the best adapter in OUTPUT_DIR, best_checkpoint.json."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path_factory.mktemp("run")
    for step, seed in ((2, 1), (4, 2)):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"],
                            init_lora_weights=False, task_type="CAUSAL_LM")
        adapter = get_peft_model(base, config)
        adapter.save_pretrained(run / f"checkpoint-{step}", safe_serialization=True)
        embedded_tokenizer.save_pretrained(run / f"checkpoint-{step}")
        if step == 4:  # the best one is also saved in OUTPUT_DIR itself
            adapter.save_pretrained(run, safe_serialization=True)
            embedded_tokenizer.save_pretrained(run)
    (run / "best_checkpoint.json").write_text(json.dumps(
        {"best_checkpoint": "checkpoint-4", "step": 4, "metric": "eval_loss", "value": 0.12,
         "greater_is_better": False, "finetuning_type": "lora", "base_model_path": str(tiny_model_dir)}))
    return run


@pytest.fixture(scope="module")
def head_model(tmp_path_factory, tiny_model_dir, shipped_split) -> Path:
    """A linear-probe run on the tiny model (train_lora.py --finetuning_type none, head mean@0.5,1.0 fitted on 24
    shipped training samples): a verdict head, and the judge card recorded with it."""
    folder = tmp_path_factory.mktemp("judge-head")
    train = write_subset(shipped_split["train_file"], folder / "train.jsonl", 24)
    dev = write_subset(shipped_split["dev_file"], folder / "dev.jsonl", 8)
    run_script(TRAIN, "--model_path", tiny_model_dir, "--train_data", train, "--eval_data", dev, "--output_dir",
               folder / "probe", "--finetuning_type", "none", "--verdict_head", "mean@0.5,1.0",
               "--verdict_head_c_grid", "0.1", "--report_to", "none", env={"OMP_NUM_THREADS": "1"}, check=True)
    return folder / "probe"
