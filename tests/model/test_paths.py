"""defect_judge/model/paths.py on what training leaves: which model a path names (base model, LoRA adapter,
a training OUTPUT_DIR and its best checkpoint, a full model), its tokenizer, and an adapter's base model."""
from __future__ import annotations

import json
import shutil

import pytest

from defect_judge.errors import InputError
from defect_judge.model import paths as model_paths
from helpers import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread


def test_model_path_kinds(training_output_dir, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    resolved = model_paths.resolve_model(tiny_model_dir)
    assert resolved.kind == resolved.model_kind == "base_model" and not resolved.is_adapter
    assert not resolved.from_output_dir
    adapter = model_paths.resolve_model(training_output_dir / "checkpoint-2")
    assert adapter.kind == "lora_adapter" and adapter.base_model_path == tiny_model_dir
    assert "adapter_config.json" in adapter.base_model_source
    best = model_paths.resolve_model(training_output_dir)
    assert best.kind == "lora_adapter" and best.from_output_dir and best.is_adapter
    assert best.model_kind == best.to_json()["kind"] == "output_dir/lora_adapter"
    assert best.weights_path == training_output_dir / "checkpoint-4"
    assert "checkpoint-4" in best.describe() and "eval_loss" in best.describe()
    assert model_paths.resolve_tokenizer_path(best, "", explicit=False) == training_output_dir / "checkpoint-4"
    assert model_paths.resolve_tokenizer_path(best, "/nonexistent/default", explicit=False) == best.weights_path
    with pytest.raises(InputError, match="tokenizer path does not exist"):
        model_paths.resolve_tokenizer_path(best, "/nonexistent/given", explicit=True)

    full = tmp_path / "full"
    build_tiny_model(full, AutoTokenizer.from_pretrained(tiny_model_dir))
    (full / "trainer_state.json").write_text("{}")
    assert model_paths.resolve_model(full).kind == "full_model"


def test_output_dir_without_the_best_checkpoint_folder_uses_its_own_model(training_output_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(training_output_dir, run, ignore=shutil.ignore_patterns("checkpoint-4"))
    resolved = model_paths.resolve_model(run)
    assert resolved.model_kind == "output_dir/lora_adapter" and resolved.weights_path == run
    assert resolved.notes and "checkpoint-4 no longer exists" in resolved.notes[0]


def test_adapter_base_model_lookup(training_output_dir, tiny_model_dir, tmp_path):
    moved = tmp_path / "checkpoint-2"
    shutil.copytree(training_output_dir / "checkpoint-2", moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/data/Qwen2.5-Coder-7B-Instruct"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="cannot find the base model.*--base_model_path"):
        model_paths.resolve_model(moved)
    assert model_paths.resolve_model(moved, base_model_path=str(tiny_model_dir)).base_model_path == tiny_model_dir
    via_tokenizer = model_paths.resolve_model(moved, tokenizer_path=str(tiny_model_dir))
    assert via_tokenizer.base_model_path == tiny_model_dir and via_tokenizer.base_model_source == "tokenizer_path"
    with pytest.raises(InputError, match="--base_model_path does not exist"):
        model_paths.resolve_model(moved, base_model_path=str(tmp_path / "nowhere"))
