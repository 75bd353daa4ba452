"""train_lora.py, the script: its command line (flags, help, what parsing resolves: the file evaluated on and the
run's name), the model it builds (the trainable layers), and whole runs on the tiny model (full fine-tuning and
training above a verdict head). The package pieces it uses are tested in test_samples.py, test_loss.py,
test_trainer.py, test_lora.py and test_run_folder.py."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from defect_judge import load_script
from defect_judge.errors import InputError
from defect_judge.train.loss import final_hidden_states, weighted_token_loss
from defect_judge.model.run_folder import BEST_CHECKPOINT_FILE, checkpoint_name
from helpers import TRAIN, batch_of, chat_records, make_records, run_script, write_records

SCRIPT = TRAIN


@pytest.fixture(scope="module")
def train_lora():
    return load_script("instruct_fine_tuning/train_lora.py")


def test_help_lists_the_task_and_trainer_flags(train_lora):
    result = run_script(SCRIPT, "--help", check=True)
    for flag in ("--model_path", "--train_data", "--key_token_weight", "--finetuning_type", "--lora_rank",
                 "--early_stopping_patience", "--overwrite_output_dir", "--resume_from_checkpoint",
                 "--gradient_checkpointing", "--save_total_limit", "--metric_for_best_model", "--trust_remote_code",
                 "--verdict_head", "--verdict_head_loss_weight"):
        assert flag in result.stdout, flag
    # the complement of a flag that is on by default says what it does, not the flag's own help
    complement = result.stdout.split("--no_load_best_model_at_end, --no-load-best-model-at-end")[1].split("\n  --")[0]
    assert "Turn --load_best_model_at_end off" in complement and "Keep the checkpoint" not in complement
    full = train_lora.run_settings(train_lora.TrainedWeightsArguments(finetuning_type="full"))
    assert full["finetuning_type"] == "full" and not [k for k in full if k.startswith("lora_")]
    assert "lora_rank" in train_lora.run_settings(train_lora.TrainedWeightsArguments())


def test_bad_training_data_is_one_clear_error(tiny_model_dir, tmp_path):
    train = write_records(tmp_path / "train.jsonl", make_records(2))
    train.write_text(train.read_text(encoding="utf-8") + '{"id": "x", "subtype": "内存泄漏", "text": [\n',
                     encoding="utf-8")
    result = run_script(SCRIPT, "--model_path", tiny_model_dir, "--train_data", train, "--test_data", train,
                        "--output_dir", tmp_path / "out", "--report_to", "none")
    assert result.returncode == 2
    assert "train.jsonl:3" in result.stderr and "invalid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------ the model and whole runs

@pytest.mark.parametrize("finetuning_type", ["lora", "full"])
def test_trainable_layers_train_the_top_layers_only(train_lora, tiny_model_dir, embedded_tokenizer, finetuning_type):
    """--trainable_layers 1 on the 2-layer tiny model: gradients reach layer 1 (and the final norm in full
    fine-tuning), nothing below it, and autograd never builds the graph through layer 0."""
    model_args = train_lora.ModelArguments(model_path=str(tiny_model_dir))
    weights_args = train_lora.TrainedWeightsArguments(finetuning_type=finetuning_type, lora_rank=4, lora_alpha=4,
                                                      trainable_layers=1)
    train_args = SimpleNamespace(seed=0, deepspeed=None, activation_checkpointing=False)
    model = train_lora.training_model(model_args, weights_args, train_args, embedded_tokenizer)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".layers.1." in n or n.endswith("model.norm.weight") for n in trained), trained
    assert any(".layers.1." in n for n in trained)
    batch = batch_of(embedded_tokenizer, chat_records(2))
    parts = weighted_token_loss(final_hidden_states(model, batch), batch["labels"], batch["key_mask"],
                                model.get_output_embeddings(), 5.0)
    (parts.weighted_sum / parts.weight_sum).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if ".layers.0." in n or "embed" in n)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if ".layers.1." in n)
    with pytest.raises(InputError, match="only 2 layers"):
        train_lora.training_model(model_args, replace(weights_args, finetuning_type="lora", trainable_layers=3),
                                  train_args, embedded_tokenizer)
    with pytest.raises(InputError, match="a whole number of layers"):
        train_lora.training_model(model_args, replace(weights_args, finetuning_type="lora", trainable_layers=1.5),
                                  train_args, embedded_tokenizer)


def test_full_fine_tuning_with_a_head_saves_it_beside_whole_models(tiny_model_dir, tmp_path):
    """Full fine-tuning (no DeepSpeed): each checkpoint's model.safetensors is the model alone, the head is in
    verdict_head.*, and loading the best model at the end restores the head without warning about it."""
    from safetensors.torch import load_file as load_tensors

    from defect_judge.model.verdict_head import load_head

    train = write_records(tmp_path / "train.jsonl", make_records(8))
    dev = write_records(tmp_path / "dev.jsonl", make_records(4, start=2))
    out = tmp_path / "full"
    result = run_script(SCRIPT, "--model_path", tiny_model_dir, "--train_data", train, "--eval_data", dev,
                        "--output_dir", out, "--finetuning_type", "full", "--verdict_head", "last@0.5",
                        "--verdict_head_c_grid", "0.1", "--max_steps", "2", "--save_steps", "1", "--report_to", "none",
                        "--metric_for_best_model", "accuracy_then_loss", "--gradient_accumulation_steps", "1",
                        "--learning_rate", "1e-3", check=True)
    assert not re.search(r"missing keys[^\n]*verdict_head", result.stderr)
    for folder in (out / checkpoint_name(1), out / checkpoint_name(2), out):
        assert load_head(folder).layers == (1,)
        assert not [k for k in load_tensors(folder / "model.safetensors") if "verdict_head" in k]
    best = json.loads((out / BEST_CHECKPOINT_FILE).read_text())
    assert best["verdict_head"] == "last@0.5" and best["finetuning_type"] == "full"


def test_training_above_the_head_keeps_the_probe_as_fitted(tmp_path, embedded_tokenizer):
    """The demo's way (demo_head): the LDA probe, then --train_above_head with --verdict_head_loss_weight 0: LoRA
    only in the layers above the head's highest (the head's features do not move), and the head every checkpoint
    carries is the probe as fitted."""
    from safetensors.torch import load_file as load_tensors

    from defect_judge.model.verdict_head import load_head
    from helpers import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "tiny-4", embedded_tokenizer, layers=4)
    train = write_records(tmp_path / "train.jsonl", make_records(8))
    dev = write_records(tmp_path / "dev.jsonl", make_records(4, start=2))
    common = ["--model_path", model_dir, "--train_data", train, "--eval_data", dev, "--verdict_head", "mean@0.5",
              "--verdict_head_probe", "lda", "--verdict_head_shrinkage_grid", "0.1", "--report_to", "none"]
    probe = run_script(SCRIPT, *common, "--output_dir", tmp_path / "probe", "--finetuning_type", "none", check=True)
    assert "lda probe, shrinkage = 0.1, chosen by given (a single value)" in probe.stderr
    assert load_head(tmp_path / "probe").fit["probe"] == "lda"
    above = run_script(SCRIPT, *common, "--output_dir", tmp_path / "above", "--train_above_head",
                       "--verdict_head_loss_weight", "0", "--lora_rank", "4", "--max_steps", "2", "--save_steps", "1",
                       "--learning_rate", "1e-2", "--gradient_accumulation_steps", "1", check=True)
    assert "fine-tuning the top 2 of 4 layers, above the head's layer 2" in above.stderr and probe.returncode == 0
    fitted = load_head(tmp_path / "probe").state_tensors()
    for folder in (tmp_path / "above" / checkpoint_name(1), tmp_path / "above" / checkpoint_name(2),
                   tmp_path / "above"):
        assert all(torch.equal(load_head(folder).state_tensors()[k], v) for k, v in fitted.items())
    adapter = load_tensors(tmp_path / "above" / "adapter_model.safetensors")
    assert adapter and all(".layers.2." in name or ".layers.3." in name for name in adapter)
    refused = run_script(SCRIPT, *common, "--output_dir", tmp_path / "x", "--train_above_head", "--trainable_layers",
                         "1")
    assert refused.returncode == 2 and "--train_above_head" in refused.stderr
    bad_grid = run_script(SCRIPT, *common, "--verdict_head_shrinkage_grid", "0.1", "1.5", "--output_dir",
                          tmp_path / "y", "--finetuning_type", "none")
    assert bad_grid.returncode == 2 and bad_grid.stderr.strip().splitlines()[-1] == (
        "train_lora.py: error: --verdict_head_shrinkage_grid must be numbers in [0, 1], got [0.1, 1.5]")


def test_a_head_on_the_base_model_stays_as_fitted_while_lora_trains_every_layer(tmp_path, embedded_tokenizer):
    """--verdict_head_reads_base: LoRA in every layer, the head read with the adapter off: dev scores it as the
    probe was scored when fitted, at every evaluation, and every checkpoint carries the fitted head, marked so."""
    from safetensors.torch import load_file as load_tensors

    from defect_judge.model.verdict_head import load_head
    from helpers import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "tiny-4", embedded_tokenizer, layers=4)
    train = write_records(tmp_path / "train.jsonl", make_records(8))
    dev = write_records(tmp_path / "dev.jsonl", make_records(4, start=2))
    common = ["--model_path", model_dir, "--train_data", train, "--eval_data", dev, "--verdict_head", "mean@0.5",
              "--verdict_head_probe", "lda", "--verdict_head_shrinkage_grid", "0.1", "--report_to", "none",
              "--lora_rank", "4", "--max_steps", "2", "--save_steps", "1", "--learning_rate", "1e-2",
              "--gradient_accumulation_steps", "1"]
    run = run_script(SCRIPT, *common, "--output_dir", tmp_path / "run", "--verdict_head_reads_base",
                     "--verdict_head_loss_weight", "0", check=True)
    assert "the verdict head mean@0.5 (the base model's layers 2 of 4" in run.stderr
    adapter = load_tensors(tmp_path / "run" / "adapter_model.safetensors")
    assert {name.split(".layers.")[1].split(".")[0] for name in adapter} == {"0", "1", "2", "3"}
    fitted = load_head(tmp_path / "run")
    assert fitted.reads_base
    for folder in (tmp_path / "run" / checkpoint_name(1), tmp_path / "run" / checkpoint_name(2)):
        head = load_head(folder)
        assert head.reads_base and all(torch.equal(head.state_tensors()[k], v)
                                       for k, v in fitted.state_tensors().items())
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    evals = [e for e in state["log_history"] if "eval_head_loss" in e]
    assert len(evals) == 2 and not any("head_loss" in e for e in state["log_history"] if "loss" in e)
    for entry in evals:  # what the probe scored on dev when fitted on the frozen model
        assert entry["eval_head_accuracy"] == fitted.fit["dev"]["accuracy"]
        assert entry["eval_head_loss"] == pytest.approx(fitted.fit["dev"]["log_loss"], abs=1e-5)
    for flags in (["--verdict_head_loss_weight", "1"], ["--verdict_head_loss_weight", "0", "--finetuning_type",
                                                        "full"]):
        refused = run_script(SCRIPT, *common, "--output_dir", tmp_path / "x", "--verdict_head_reads_base", *flags)
        assert refused.returncode == 2 and "--verdict_head_reads_base keeps the head" in refused.stderr
