"""Shared fixtures: the embedded tokenizer, a tiny real model built from a config,
and a small chat-JSONL split made from the shipped sample data."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_MODEL = REPO_ROOT / "models" / "SmolLM2-135M-Instruct"
PYTHON = sys.executable

# Tests never touch the network.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_script(*args: str | os.PathLike, cwd: str | os.PathLike = REPO_ROOT, env: dict | None = None,
               timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """Run a command (a script of this repo when the first arg ends in .py) and capture its output."""
    argv = [str(a) for a in args]
    if argv[0].endswith(".py"):
        argv = [PYTHON] + argv
    full_env = dict(os.environ) | (env or {})
    result = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    if not (EMBEDDED_MODEL / "model.safetensors").is_file():
        pytest.fail(f"{EMBEDDED_MODEL} is missing: run `make setup`")
    return EMBEDDED_MODEL


@pytest.fixture(scope="session")
def embedded_tokenizer(embedded_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


def build_tiny_model(folder: Path, tokenizer, *, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A tiny Llama (the embedded model's architecture) with the embedded tokenizer, saved as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_tokenizer) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), embedded_tokenizer)


@pytest.fixture(scope="session")
def shipped_split(tmp_path_factory) -> dict[str, Path]:
    """converted/train/dev/test JSONL made by the real converter from the shipped dataset/output."""
    out = tmp_path_factory.mktemp("split")
    files = {"converted_file": out / "converted_data.jsonl", "train_file": out / "train.jsonl",
             "dev_file": out / "dev.jsonl", "test_file": out / "test.jsonl"}
    args = [REPO_ROOT / "dataset" / "convert_and_split.py", "--input_dir", REPO_ROOT / "dataset" / "output"]
    for name, path in files.items():
        args += [f"--{name}", path]
    run_script(*args, check=True)
    return files | {"stats": out / "split_stats.json"}


def write_subset(source: Path, target: Path, n: int) -> Path:
    """The first ``n`` lines of a JSONL file."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:n]
    target.write_text("".join(lines), encoding="utf-8")
    return target


def load_script(relative: str):
    """Import a repo script (e.g. ``dataset/convert_and_split.py``) as a module, to call its functions."""
    import importlib.util

    path = REPO_ROOT / relative
    name = path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, exactly one `prog: error: ...` line holding every fragment, no traceback; returns that line."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, (result.returncode, output[-3000:])
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def free_port() -> int:
    """A free TCP port on the loopback, for a launcher's rendezvous (tests run launchers side by side)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
