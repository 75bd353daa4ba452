"""defect_judge/train/best_model.py: the best model saved at the end of a run, on a tiny real model and the real
Trainer; the judge card's dev threshold taken at the best step; the learning curve (a whole run with evaluation
and a verdict head: test_train_lora.py)."""
from __future__ import annotations

import copy
from pathlib import Path

from transformers import TrainingArguments

from defect_judge.model.judge_card import JudgeCard
from defect_judge.model.run_folder import BEST_CHECKPOINT_FILE, LEARNING_CURVE_FILE, checkpoint_name, read_best_checkpoint
from defect_judge.train.best_model import card_with_threshold, draw_learning_curve, save_best_model
from defect_judge.train.samples import PaddingCollator, SupervisedDataset, fit_samples
from defect_judge.train.trainer import WeightedLossTrainer
from helpers import chat_records

CARD = JudgeCard(("是", "否"), "是", "否", ("空指针解引用",), 512)


def test_without_evaluation_the_last_checkpoint_is_the_model_and_its_curve_is_drawn(tiny_model, embedded_tokenizer,
                                                                                  tmp_path):
    dataset = SupervisedDataset(fit_samples(embedded_tokenizer, chat_records(4), 4096))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none",
                             remove_unused_columns=False, per_device_train_batch_size=2, max_steps=2, save_steps=1,
                             logging_steps=1, learning_rate=1e-3, disable_tqdm=True)
    trainer = WeightedLossTrainer(model=copy.deepcopy(tiny_model), args=args, train_dataset=dataset,
                                  data_collator=PaddingCollator(embedded_tokenizer.pad_token_id))
    trainer.train()
    info = save_best_model(trainer, finetuning_type="full", base_model_path=tmp_path, eval_data=None,
                           test_data=None, card=CARD)
    output = tmp_path / "out"
    assert info["best_checkpoint"] == checkpoint_name(2) and info["metric"] is None and info["step"] == 2
    assert info["judge"] == CARD.to_json() and read_best_checkpoint(output) == info
    assert (output / "model.safetensors").is_file() and (output / LEARNING_CURVE_FILE).stat().st_size > 0


def test_nothing_saved_nothing_named(tiny_model, embedded_tokenizer, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none",
                             remove_unused_columns=False, save_strategy="no")
    trainer = WeightedLossTrainer(model=copy.deepcopy(tiny_model), args=args,
                                  data_collator=PaddingCollator(embedded_tokenizer.pad_token_id))
    assert save_best_model(trainer, finetuning_type="lora", base_model_path=tmp_path, eval_data=None,
                           test_data=None) == {}
    assert not (tmp_path / "out" / BEST_CHECKPOINT_FILE).exists()


def test_the_card_takes_the_head_s_dev_threshold_at_the_best_step(tmp_path):
    history = [{"step": 2, "eval_head_threshold": 0.4, "eval_head_threshold_balanced_accuracy": 0.7,
                "eval_head_samples": 10},
               {"step": 4, "eval_head_threshold": 0.6, "eval_head_threshold_balanced_accuracy": 0.9,
                "eval_head_samples": 10},
               {"step": 4, "loss": 0.3}]
    dev = tmp_path / "dev.jsonl"
    card = card_with_threshold(CARD, history, 4, dev)
    assert card == CARD.to_json() | {"dev_threshold": {
        "threshold": 0.6, "balanced_accuracy": 0.9, "samples": 10, "step": 4, "chosen_on": str(dev.resolve()),
        "for": "verdict_head"}}
    assert card_with_threshold(CARD, history, 6, dev) == CARD.to_json()  # no evaluation of a head at that step
    assert card_with_threshold(None, history, 4, dev) is None


def test_a_run_that_logged_nothing_has_no_curve_and_says_so(tmp_path, caplog):
    draw_learning_curve(tmp_path, [], {"step": 0, "metric": None})
    assert not (tmp_path / LEARNING_CURVE_FILE).exists()
    assert f"no {LEARNING_CURVE_FILE}" in caplog.text
    draw_learning_curve(tmp_path, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}], {"step": 2, "metric": None})
    assert Path(tmp_path / LEARNING_CURVE_FILE).stat().st_size > 0
