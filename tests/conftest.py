"""Shared fixtures: the embedded tokenizer, a tiny real model built from a config (and loaded),
and a small chat-JSONL split made from the shipped sample data. Plain helpers are in helpers.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import CONVERT, EMBEDDED_MODEL, REPO_ROOT, build_tiny_model, run_script

# Tests never touch the network.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
