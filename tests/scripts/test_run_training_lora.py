"""run_training_lora.sh end to end: the real deepspeed launcher with 1 and 2 CPU
ranks, a tiny real Llama, LoRA and full fine-tuning, wandb offline, refusing to
overwrite a run, and resuming one."""
from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from defect_judge import free_port
from defect_judge.fileio import file_sha256
from helpers import LAUNCHER, REPO_ROOT, make_records, write_records

SCRIPT = LAUNCHER
# Small and quick: 2 training samples (one needs its event cut at 256 tokens), 4 optimizer steps,
# a checkpoint and an evaluation every 2.
ARGS = ("--max_steps", "4", "--save_steps", "2", "--max_length", "256", "--logging_steps", "1",
        "--learning_rate", "1e-2", "--per_device_eval_batch_size", "4")
LARGEST_CHECKPOINT_FILE = 1_000_000  # bytes; the tiny base model's embedding alone is 12.6 MB


def launch(*args: str, cwd: Path, env: dict[str, str], drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in drop} | {"MASTER_PORT": str(free_port())} | env
    result = subprocess.run([str(SCRIPT), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)
    result.output = result.stdout + result.stderr
    result.master_port = full_env["MASTER_PORT"]
    return result


def shared_memory_left(result: subprocess.CompletedProcess) -> list[str]:
    """DeepSpeed's CPU all-reduce buffers (64 MiB per rank in /dev/shm) that the run left behind."""
    return [path.name for path in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{result.master_port}_*")]


def check_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.output[-6000:]


def check_learning_curve(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 800 and image.height >= 600


def log_history(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


def losses(output_dir: Path, key: str = "loss") -> dict[int, float]:
    return {entry["step"]: entry[key] for entry in log_history(output_dir) if key in entry}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("train-data")
    write_records(folder / "train.jsonl", make_records(1, event_repeat=4) + make_records(1, start=1))
    write_records(folder / "test.jsonl", make_records(3, start=2))
    write_records(folder / "dev.jsonl", make_records(2, start=5))  # beside train.jsonl: the default EVAL_DATA
    return folder


@pytest.fixture(scope="module")
def lora_run(data, tiny_model_dir):
    """One rank, gradient accumulation 2, started from the data folder with relative paths, no wandb
    key configured (so it must go offline by itself)."""
    env = {"MODEL_PATH": os.path.relpath(tiny_model_dir, data), "TRAIN_DATA": "train.jsonl",
           "TEST_DATA": "test.jsonl", "OUTPUT_DIR": "lora-1rank", "NUM_GPUS": "1", "LORA_RANK": "4",
           "GRADIENT_ACCUMULATION_STEPS": "2", "NETRC": str(data / "no-netrc")}
    result = launch(*ARGS, cwd=data, env=env, drop=("WANDB_MODE", "WANDB_API_KEY"))
    check_ok(result)
    return result, data / "lora-1rank", env


def test_lora_run_leaves_adapter_checkpoints_the_best_model_and_wandb_offline(lora_run, tiny_model_dir):
    result, output_dir, _ = lora_run
    # What the run shows: the sample with its trained span, the length statistics, the wandb hint.
    assert "<|im_start|>assistant\n[[判断:{{" in result.output
    assert "tokens min" in result.output and "truncated to max_length 256 (event cut): 1" in result.output
    assert "wandb: no API key" in result.output and "wandb sync " in result.output
    assert "FutureWarning" not in result.output  # a library's deprecation the user cannot act on
    for step in (2, 4):
        checkpoint = output_dir / f"checkpoint-{step}"
        names = {p.name for p in checkpoint.iterdir()}
        assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "trainer_state.json",
                "checkpoint_complete.json"} <= names
        assert "model.safetensors" not in names
        # Only the adapter (and optimizer state), never a copy of the base weights.
        big = [p for p in checkpoint.rglob("*") if p.is_file() and p.name != "tokenizer.json"
               and p.stat().st_size > LARGEST_CHECKPOINT_FILE]
        assert not big, big
    adapter = load_file(output_dir / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    config = json.loads((output_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    assert config["r"] == 4
    # best_checkpoint.json names the checkpoint with the lowest eval_loss on the dev split (dev.jsonl beside
    # train.jsonl, found without EVAL_DATA), and OUTPUT_DIR holds it.
    evals = losses(output_dir, "eval_loss")
    assert set(evals) == {2, 4}
    assert all(0 <= e["eval_judgement_accuracy"] <= 1 for e in log_history(output_dir) if "eval_loss" in e)
    best_step = min(evals, key=evals.get)
    best = json.loads((output_dir / "best_checkpoint.json").read_text())
    dev = output_dir.parent / "dev.jsonl"
    # the judge card: what the model needs to judge new code (its words, what it was trained on)
    assert best.pop("judge") == {"judgements": ["否", "是"], "positive": "是", "negative": "否",
                                 "subtypes": ["空指针解引用"], "max_length": 256, "dev_threshold": None}
    assert best == {"best_checkpoint": f"checkpoint-{best_step}", "step": best_step, "metric": "eval_loss",
                    "value": pytest.approx(evals[best_step]), "greater_is_better": False,
                    "finetuning_type": "lora", "base_model_path": str(tiny_model_dir.resolve()),
                    "eval_data": str(dev.resolve()), "eval_data_sha256": file_sha256(dev), "eval_samples": 2,
                    "eval_is_test_data": False, "verdict_head": None}
    assert "optimistic" not in result.output
    check_learning_curve(output_dir / "learning_curve.png")
    best_adapter = load_file(output_dir / f"checkpoint-{best_step}" / "adapter_model.safetensors")
    assert best_adapter.keys() == adapter.keys()
    assert all((best_adapter[k] == adapter[k]).all() for k in adapter)
    runs = list((output_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))


def test_two_ranks_train_exactly_like_one_rank_with_accumulation(lora_run, data, tiny_model_dir):
    """2 ranks x 1 micro-batch = 1 rank x 2 micro-batches: same loss at every step, since the loss is
    normalised by the weight sum of the whole accumulated batch across ranks."""
    _, one_rank_dir, _ = lora_run
    output_dir = data / "lora-2ranks"
    env = {"MODEL_PATH": str(tiny_model_dir), "TRAIN_DATA": str(data / "train.jsonl"),
           "TEST_DATA": str(data / "test.jsonl"), "OUTPUT_DIR": str(output_dir), "NUM_GPUS": "2",
           "LORA_RANK": "4", "GRADIENT_ACCUMULATION_STEPS": "1", "EVAL_DATA": str(data / "dev.jsonl")}
    result = launch(*ARGS, "--report_to", "none", "--metric_for_best_model", "accuracy_then_loss",
                    cwd=REPO_ROOT, env=env)
    check_ok(result)
    # judgement accuracy first, eval_loss breaking ties: the same choice as ordering by (accuracy, -loss)
    evals = [e for e in log_history(output_dir) if "eval_loss" in e]
    chosen = max(evals, key=lambda e: (e["eval_judgement_accuracy"], -e["eval_loss"]))
    best = json.loads((output_dir / "best_checkpoint.json").read_text())
    assert best["best_checkpoint"] == f"checkpoint-{chosen['step']}" and best["greater_is_better"] is True
    assert best["metric"] == "accuracy_then_loss" and best["value"] == pytest.approx(chosen["eval_accuracy_then_loss"])
    two, one = losses(output_dir), losses(one_rank_dir)
    assert sorted(two) == sorted(one) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-5), (step, two, one)
    assert losses(output_dir, "eval_loss") == pytest.approx(losses(one_rank_dir, "eval_loss"), abs=1e-5)
    checkpoint = output_dir / "checkpoint-4"
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert len(list(checkpoint.glob("global_step4/*optim_states.pt"))) == 2  # ZeRO-2: one shard per rank
    assert json.loads((output_dir / "best_checkpoint.json").read_text())["finetuning_type"] == "lora"


@pytest.fixture(scope="module")
def head_run(tmp_path_factory, tiny_model_dir):
    """Two ranks, LoRA and a verdict head on both layers of the tiny model: the linear probe first, then both
    trained together; dev evaluation and the best checkpoint by the head's accuracy."""
    folder = tmp_path_factory.mktemp("head-data")
    write_records(folder / "train.jsonl", make_records(8))
    write_records(folder / "dev.jsonl", make_records(4, start=2))
    write_records(folder / "test.jsonl", make_records(2, start=6))
    env = {"MODEL_PATH": str(tiny_model_dir), "TRAIN_DATA": str(folder / "train.jsonl"),
           "TEST_DATA": str(folder / "test.jsonl"), "OUTPUT_DIR": str(folder / "head"), "NUM_GPUS": "2",
           "LORA_RANK": "4", "GRADIENT_ACCUMULATION_STEPS": "1", "VERDICT_HEAD": "mean@0.5,1.0"}
    args = (*ARGS, "--report_to", "none", "--metric_for_best_model", "accuracy_then_loss",
            "--verdict_head_c_grid", "0.1")
    result = launch(*args, cwd=REPO_ROOT, env=env)
    check_ok(result)
    return result, folder, env, args


def test_a_run_leaves_no_shared_memory_behind(lora_run, head_run):
    """Each DeepSpeed CPU rank maps a 64 MiB buffer in /dev/shm that DeepSpeed never removes: three hundred
    runs filled a 24 GiB machine's memory. Once every rank has mapped its peers' buffers, train_lora.py removes
    the names, and the memory goes back when the ranks exit."""
    for result, _, *_ in (lora_run, head_run):
        assert "releasing DeepSpeed's shared-memory buffers" in result.output
        assert shared_memory_left(result) == []


def test_two_ranks_with_a_verdict_head_keep_it_in_every_checkpoint_and_select_on_it(head_run):
    from defect_judge.model.verdict_head import load_head

    result, folder, _, _ = head_run
    output_dir = folder / "head"
    assert "linear probe on the frozen model's layers 1, 2" in result.output and "head BCE" in result.output
    for checkpoint in (output_dir / "checkpoint-2", output_dir / "checkpoint-4", output_dir):
        head = load_head(checkpoint)
        assert head.spec == "mean@0.5,1.0" and head.layers == (1, 2) and head.fit["C"] == 0.1
        assert all("lora_" in name for name in load_file(checkpoint / "adapter_model.safetensors"))
    evals = [e for e in log_history(output_dir) if "eval_loss" in e]
    assert all(e["eval_head_samples"] == 4 for e in evals)
    chosen = max(evals, key=lambda e: (e["eval_head_accuracy"], -(e["eval_loss"] + e["eval_head_loss"])))
    best = json.loads((output_dir / "best_checkpoint.json").read_text())
    assert best["best_checkpoint"] == f"checkpoint-{chosen['step']}" and best["verdict_head"] == "mean@0.5,1.0"
    assert best["value"] == pytest.approx(chosen["eval_accuracy_then_loss"])
    # the head's dev threshold at the chosen step is recorded with the model; every saved head carries the card
    threshold = best["judge"]["dev_threshold"]
    assert threshold["threshold"] == chosen["eval_head_threshold"] and threshold["step"] == chosen["step"]
    assert threshold["samples"] == 4 and threshold["for"] == "verdict_head"
    assert load_head(output_dir / "checkpoint-2").card == {k: v for k, v in best["judge"].items()} | {
        "dev_threshold": None}
    final, chosen_head = load_head(output_dir).state_tensors(), load_head(output_dir / best["best_checkpoint"])
    assert all(torch_equal(final[k], v) for k, v in chosen_head.state_tensors().items())  # the best model's head
    assert all("head_loss" in e for e in log_history(output_dir) if "loss" in e)


def test_a_resumed_head_run_continues_exactly(head_run):
    result, folder, env, args = head_run
    finished_dir, output_dir = folder / "head", folder / "head-resumed"
    output_dir.mkdir()
    shutil.copytree(finished_dir / "checkpoint-2", output_dir / "checkpoint-2")
    resumed = launch(*args, "--resume_from_checkpoint", "auto", cwd=REPO_ROOT,
                     env=env | {"OUTPUT_DIR": str(output_dir)})
    check_ok(resumed)
    assert "resuming the verdict head mean@0.5,1.0" in resumed.output and "linear probe" not in resumed.output
    for step in (3, 4):
        assert losses(output_dir)[step] == pytest.approx(losses(finished_dir)[step], abs=1e-5)
        assert losses(output_dir, "head_loss")[step] == pytest.approx(losses(finished_dir, "head_loss")[step], abs=1e-5)
    ours, theirs = (load_file(d / "checkpoint-4" / "verdict_head.safetensors") for d in (output_dir, finished_dir))
    assert all(torch_equal(ours[k], theirs[k], atol=1e-6) for k in theirs)


def torch_equal(a, b, atol: float = 0.0) -> bool:
    import torch

    return bool(torch.allclose(a, b, atol=atol, rtol=0))


def test_full_fine_tuning_saves_whole_models(data, tiny_model_dir, tmp_path):
    """Also: with no dev split beside train.jsonl, training evaluates on TEST_DATA and says that this makes
    the test accuracy optimistic, in the log and in best_checkpoint.json."""
    from transformers import AutoModelForCausalLM

    no_dev = tmp_path / "no-dev"
    no_dev.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        shutil.copy(data / name, no_dev / name)
    output_dir = data / "full"
    folder = REPO_ROOT / "instruct_fine_tuning"  # started from the script's own folder
    env = {"MODEL_PATH": os.path.relpath(tiny_model_dir, folder),
           "TRAIN_DATA": os.path.relpath(no_dev / "train.jsonl", folder),
           "TEST_DATA": os.path.relpath(no_dev / "test.jsonl", folder), "OUTPUT_DIR": str(output_dir), "NUM_GPUS": "1",
           "GRADIENT_ACCUMULATION_STEPS": "2"}
    result = launch(*ARGS, "--finetuning_type", "full", "--report_to", "none", cwd=folder, env=env)
    check_ok(result)
    assert "no dev split at" in result.output and "optimistic" in result.output
    assert json.loads((output_dir / "best_checkpoint.json").read_text())["eval_is_test_data"] is True
    for checkpoint in (output_dir / "checkpoint-2", output_dir / "checkpoint-4"):
        assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "checkpoint_complete.json").is_file()
    assert not (output_dir / "adapter_config.json").exists()
    best = json.loads((output_dir / "best_checkpoint.json").read_text())
    assert best["finetuning_type"] == "full" and best["best_checkpoint"] in ("checkpoint-2", "checkpoint-4")
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    tuned = load_file(output_dir / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert model.config.hidden_size == 64
    assert any(not (tuned[k] == base[k]).all() for k in base)  # it trained


def test_a_second_run_into_the_same_output_dir_is_refused(lora_run):
    _, output_dir, env = lora_run
    before = {p: p.stat().st_mtime_ns for p in output_dir.rglob("*") if p.is_file()}
    result = launch(*ARGS, "--report_to", "none", cwd=output_dir.parent, env=env)
    assert result.returncode == 2
    assert "--resume_from_checkpoint auto" in result.output and "--overwrite_output_dir" in result.output
    assert "Traceback" not in result.output
    assert {p: p.stat().st_mtime_ns for p in output_dir.rglob("*") if p.is_file()} == before


def test_resume_auto_skips_a_half_written_checkpoint_and_reproduces_the_run(lora_run, data):
    _, finished_dir, env = lora_run
    output_dir = data / "resumed"
    output_dir.mkdir()
    shutil.copytree(finished_dir / "checkpoint-2", output_dir / "checkpoint-2")
    # A run killed while saving checkpoint-4: the adapter is there, the rest (and the marker) is not.
    (output_dir / "checkpoint-4").mkdir()
    shutil.copy(finished_dir / "checkpoint-4" / "adapter_model.safetensors", output_dir / "checkpoint-4")
    result = launch(*ARGS, "--report_to", "none", "--resume_from_checkpoint", "auto", cwd=data,
                    env=env | {"OUTPUT_DIR": "resumed"})
    check_ok(result)
    assert "skipping incomplete checkpoint(s)" in result.output and "checkpoint-4" in result.output
    assert f"resuming from {output_dir / 'checkpoint-2'}" in result.output
    resumed, finished = losses(output_dir), losses(finished_dir)
    for step in (3, 4):
        assert resumed[step] == pytest.approx(finished[step], abs=1e-5), (step, resumed, finished)
    assert losses(output_dir, "eval_loss")[4] == pytest.approx(losses(finished_dir, "eval_loss")[4], abs=1e-5)
    assert (output_dir / "checkpoint-4" / "checkpoint_complete.json").is_file()


@pytest.mark.parametrize("name", ["MODEL_PATH", "TRAIN_DATA", "EVAL_DATA"])
def test_missing_inputs_are_named_before_anything_launches(data, tiny_model_dir, tmp_path, name):
    env = {"MODEL_PATH": str(tiny_model_dir), "TRAIN_DATA": str(data / "train.jsonl"),
           "TEST_DATA": str(data / "test.jsonl"), "OUTPUT_DIR": str(tmp_path / "out")}
    env[name] = str(tmp_path / "missing")
    result = launch(cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert name in result.stderr and str(tmp_path / "missing") in result.stderr
    assert "deepspeed" not in result.stdout and not (tmp_path / "out").exists()


def test_test_data_is_required_only_when_training_would_read_it(data, tiny_model_dir, tmp_path):
    """With a dev split the test split is never read during training: a missing TEST_DATA does not stop the
    launch. Without one, evaluation falls back to TEST_DATA, which must then be there."""
    env = {"MODEL_PATH": str(tiny_model_dir), "TRAIN_DATA": str(data / "train.jsonl"),
           "TEST_DATA": str(tmp_path / "missing"), "OUTPUT_DIR": str(tmp_path / "out")}
    launched = launch("--not_a_flag", cwd=tmp_path, env=env)  # stops in train_lora.py, after the launcher's checks
    assert "TEST_DATA" not in launched.stderr and "deepspeed" in launched.stdout and "--not_a_flag" in launched.output
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(data / "train.jsonl", alone / "train.jsonl")
    result = launch(cwd=tmp_path, env=env | {"TRAIN_DATA": str(alone / "train.jsonl")})
    assert result.returncode == 2 and "TEST_DATA: file not found" in result.stderr
    assert "deepspeed" not in result.stdout


# The launcher's settings and the train_lora.py flags they become (the document's names on the left).
LAUNCHER_FLAGS = {"MODEL_PATH": "model_path", "TRAIN_DATA": "train_data", "EVAL_DATA": "eval_data",
                  "OUTPUT_DIR": "output_dir", "LEARNING_RATE": "learning_rate",
                  "MAX_LENGTH": "max_length", "SCHEDULER": "lr_scheduler_type", "LORA_RANK": "lora_rank",
                  "LORA_ALPHA": "lora_alpha", "MAX_EPOCHS": "num_train_epochs", "SAVE_STEPS": "save_steps",
                  "PER_DEVICE_TRAIN_BATCH_SIZE": "per_device_train_batch_size",
                  "GRADIENT_ACCUMULATION_STEPS": "gradient_accumulation_steps", "DS_CONFIG": "deepspeed",
                  "VERDICT_HEAD": "verdict_head"}


def test_the_launcher_passes_only_its_settings():
    text = SCRIPT.read_text(encoding="utf-8")
    passed = dict(re.findall(r'^\s+--(\w+) "\$(\w+)" \\$', text, re.MULTILINE))
    assert {setting: flag for flag, setting in passed.items()} == LAUNCHER_FLAGS
