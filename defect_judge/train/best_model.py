"""The best model of a training run, saved at its end: the best (or, without evaluation, the last) checkpoint's
model into OUTPUT_DIR, named in best_checkpoint.json with the file it was chosen on and the judge card (with the
verdict head's dev threshold at the best step), and the learning curve beside it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from defect_judge.model.judge_card import JudgeCard
from defect_judge.model.run_folder import (LEARNING_CURVE_FILE, best_checkpoint_info, checkpoint_step, list_checkpoints,
                                           write_best_checkpoint)
from defect_judge.report.learning_curve import learning_curve_chart
from defect_judge.train.trainer import WeightedLossTrainer

log = logging.getLogger(__name__)


def save_best_model(trainer: WeightedLossTrainer, *, finetuning_type: str, base_model_path: str | os.PathLike,
                    eval_data: str | os.PathLike | None, test_data: str | os.PathLike | None,
                    card: JudgeCard | None = None) -> dict:
    """The best (or, without evaluation, the last) model into OUTPUT_DIR, named in best_checkpoint.json
    together with the file it was chosen on (``eval_data``; ``test_data`` says whether that is the test split)
    and the judge ``card`` (with the head's dev threshold at the best step), and the learning curve; returns
    best_checkpoint.json's content ({}: no checkpoint was saved)."""
    args = trainer.args
    output_dir = Path(args.output_dir)
    head_spec = trainer.verdict_head.spec if trainer.verdict_head is not None else None
    trainer.save_model(str(output_dir))  # every rank: DeepSpeed gathers the weights collectively
    trainer.save_state()
    state = trainer.state
    if state.best_model_checkpoint:  # chosen on the eval file by the metric
        info = best_checkpoint_info(Path(state.best_model_checkpoint).name, metric=args.metric_for_best_model,
                                    value=state.best_metric, greater_is_better=bool(args.greater_is_better),
                                    finetuning_type=finetuning_type, base_model_path=base_model_path,
                                    eval_data=eval_data, eval_samples=len(trainer.eval_dataset),
                                    test_data=test_data, verdict_head=head_spec,
                                    judge=card_with_threshold(card, state.log_history,
                                                              checkpoint_step(state.best_model_checkpoint), eval_data))
    else:  # no evaluation: the last checkpoint
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            return {}
        info = best_checkpoint_info(checkpoints[-1].name, metric=None, value=None, greater_is_better=None,
                                    finetuning_type=finetuning_type, base_model_path=base_model_path,
                                    verdict_head=head_spec, judge=card.to_json() if card else None)
    if trainer.is_world_process_zero():
        write_best_checkpoint(output_dir, info)
        draw_learning_curve(output_dir, state.log_history, info)
    return info


def card_with_threshold(card: JudgeCard | None, log_history: list[dict], step: int, eval_data) -> dict | None:
    """The card as best_checkpoint.json records it, with the verdict head's dev threshold of the evaluation at
    the best checkpoint's ``step`` (the highest balanced accuracy on the dev split)."""
    if card is None:
        return None
    best = next((entry for entry in log_history
                 if entry.get("step") == step and entry.get("eval_head_threshold") is not None), None)
    if best is None:
        return card.to_json()
    threshold = {"threshold": best["eval_head_threshold"],
                 "balanced_accuracy": best.get("eval_head_threshold_balanced_accuracy"),
                 "samples": best.get("eval_head_samples"), "step": best.get("step"),
                 "chosen_on": str(Path(eval_data).resolve()) if eval_data else None, "for": "verdict_head"}
    return card.to_json() | {"dev_threshold": threshold}


def draw_learning_curve(output_dir: Path, log_history: list[dict], info: dict) -> None:
    """learning_curve.png from the Trainer's history (a resumed run's history includes the earlier part)."""
    try:
        learning_curve_chart(output_dir / LEARNING_CURVE_FILE, log_history,
                             best_step=info.get("step") if info.get("metric") else None,
                             title=f"{output_dir.name}: learning curve")
    except ValueError as error:  # nothing was logged (e.g. zero steps)
        log.warning("no %s: %s", LEARNING_CURVE_FILE, error)
