"""defect_judge/train/arguments.py: train_lora.py's command line: the defaults it reads from run_training_lora.sh,
the checks, and what parsing resolves (the file evaluated on, the run's name)."""
from __future__ import annotations

from dataclasses import fields

import pytest

from defect_judge.errors import InputError
from defect_judge.train.arguments import (DataArguments, FineTuningArguments, TrainedWeightsArguments,
                                          VerdictHeadArguments, parse_args)
from defect_judge.train.launcher_settings import LAUNCHER
from defect_judge.train.trainer import accuracy_then_loss

REQUIRED = ["--model_path", "m", "--train_data", "t", "--eval_strategy", "no", "--report_to", "none"]


def test_the_launchers_defaults_are_read_from_it_not_written_again(tmp_path):
    """Running train_lora.py directly or through the launcher is the same recipe: the document's numbers are
    written once, in the launcher, and parsing reads them from there."""
    held = {"learning_rate", "max_length", "lr_scheduler_type", "lora_rank", "lora_alpha", "num_train_epochs",
            "save_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "verdict_head"}
    own = {f.name: f.default for cls in (DataArguments, TrainedWeightsArguments, VerdictHeadArguments,
                                         FineTuningArguments) for f in fields(cls) if f.name in held}
    # none written in Python (the scheduler's is transformers' own, not one of this toolkit's)
    assert set(own) == held and {k for k, v in own.items() if v is not None} == {"lr_scheduler_type"}, own
    required = REQUIRED + ["--output_dir", str(tmp_path / "o")]
    _, data_args, weights_args, head_args, train_args = parse_args(required)
    assert (train_args.learning_rate, data_args.max_length, weights_args.lora_rank, train_args.num_train_epochs,
            train_args.gradient_accumulation_steps, head_args.verdict_head) == (3e-5, 4096, 32, 300, 8, "")
    edited = tmp_path / "run_training_lora.sh"
    edited.write_text(LAUNCHER.read_text(encoding="utf-8")
                      .replace('LEARNING_RATE="${LEARNING_RATE:-3e-5}"', 'LEARNING_RATE="${LEARNING_RATE:-7e-4}"')
                      .replace('LORA_RANK="${LORA_RANK:-32}"', 'LORA_RANK="${LORA_RANK:-8}"')
                      .replace('SCHEDULER="${SCHEDULER:-linear}"', 'SCHEDULER="${SCHEDULER:-cosine}"')
                      .replace('SAVE_STEPS="${SAVE_STEPS:-20}"', 'SAVE_STEPS="${SAVE_STEPS:-auto}"'), encoding="utf-8")
    _, _, weights_args, _, train_args = parse_args(required, launcher=edited)
    assert (train_args.learning_rate, weights_args.lora_rank, str(train_args.lr_scheduler_type.value)) == (
        7e-4, 8, "cosine")
    assert train_args.save_steps == 500  # SAVE_STEPS=auto is the launcher's to count: TrainingArguments' own
    assert parse_args(required + ["--learning_rate", "1e-3"], launcher=edited)[4].learning_rate == 1e-3


def test_the_probes_choice_flag_keeps_its_old_name(tmp_path):
    required = REQUIRED + ["--output_dir", str(tmp_path / "o"), "--verdict_head", "mean@0.5"]
    assert parse_args(required)[3].verdict_head_choose_on == "cv"
    assert parse_args(required + ["--verdict_head_choose_c", "dev"])[3].verdict_head_choose_on == "dev"
    with pytest.raises(InputError, match="verdict_head_choose_on"):
        parse_args(required + ["--verdict_head_choose_on", "test"])


def test_accuracy_wins_where_loss_and_accuracy_disagree(tmp_path):
    """Checkpoints whose lowest eval_loss is not the most accurate one: selection by accuracy_then_loss picks
    the accurate one, and the Trainer treats the metric as higher-is-better although its name ends in loss."""
    evaluations = {20: (0.50, 0.61), 40: (0.75, 0.70), 60: (0.75, 0.64), 80: (0.72, 0.52)}  # step: (acc, loss)
    scores = {step: accuracy_then_loss(acc, loss, 32) for step, (acc, loss) in evaluations.items()}
    assert min(evaluations, key=lambda s: evaluations[s][1]) == 80  # eval_loss would choose step 80
    assert max(scores, key=scores.get) == 60  # most accurate, and of the two at 0.75 the lower loss
    args = parse_args(["--model_path", "m", "--train_data", "t", "--eval_data", "d", "--output_dir",
                                  str(tmp_path), "--metric_for_best_model", "accuracy_then_loss", "--report_to",
                                  "none"])[4]
    assert args.greater_is_better is True and args.metric_for_best_model == "accuracy_then_loss"


def test_parsing_resolves_the_eval_file_and_the_run_name_without_changing_what_was_parsed(tmp_path, caplog):
    """No --eval_data: the test split is evaluated on, with a warning; a run without evaluation needs neither. The
    run's name is built from its settings unless --run_name gives one."""
    common = ["--model_path", "m", "--train_data", "t", "--output_dir", str(tmp_path / "run"), "--report_to", "none"]
    _, data_args, _, _, train_args = parse_args(common + ["--test_data", "test.jsonl"])
    assert data_args.eval_data == "test.jsonl" and data_args.test_data == "test.jsonl"
    assert "no --eval_data" in caplog.text and "TEST split test.jsonl" in caplog.text
    assert train_args.run_name == "lora-r32-a32-lr3e-05-len4096-kw5-run"
    _, data_args, _, _, _ = parse_args(common + ["--eval_data", "dev.jsonl", "--test_data", "test.jsonl"])
    assert data_args.eval_data == "dev.jsonl"
    _, data_args, _, _, _ = parse_args(common + ["--eval_strategy", "no"])
    assert data_args.eval_data is None
    with pytest.raises(InputError, match="--eval_data is required"):
        parse_args(common)
    named = parse_args(common + ["--eval_data", "d", "--run_name", "mine", "--finetuning_type", "full",
                                            "--verdict_head", "mean@0.5"])[4]
    assert named.run_name == "mine"
    head = parse_args(common + ["--eval_data", "d", "--finetuning_type", "full", "--verdict_head",
                                           "mean@0.5", "--max_length", "512"])[4]
    assert head.run_name == "full-lr3e-05-len512-kw5-head-mean@0.5-run"
    assert head.eval_steps == head.save_steps == 20 and head.report_to == []  # the checks ran on the rebuilt args


def test_a_heap_threshold_glibc_cannot_take_is_one_line(tmp_path):
    required = REQUIRED + ["--output_dir", str(tmp_path / "o")]
    assert parse_args(required + ["--cpu_heap_mmap_threshold_mb", "0"])[4].cpu_heap_mmap_threshold_mb == 0
    with pytest.raises(InputError, match=r"--cpu_heap_mmap_threshold_mb must be 0 .* to 32, got 4096"):
        parse_args(required + ["--cpu_heap_mmap_threshold_mb", "4096"])
