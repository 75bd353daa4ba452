"""The Trainer of this toolkit: ``WeightedLossTrainer`` trains with the key-token-weighted chunked loss
(``loss.py``) and, with a verdict head, the head's binary cross-entropy beside it; its evaluation loop, the
single number best-model selection compares (``accuracy_then_loss``), the callbacks a run adds (the
complete-checkpoint marker of ``run_folder.py``, peak GPU memory, DeepSpeed's shared memory), and the best model saved at the end.

With a verdict head (``model/verdict_head.py``), ``head_loss_weight`` times the head's binary cross-entropy,
averaged over the accumulated batch's samples, is added to the answer's loss; a head that reads the base model
adds nothing and is scored on dev in a pass of its own, with the adapter switched off.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import EvalLoopOutput

from defect_judge.distributed import all_ranks, release_deepspeed_shared_memory
from defect_judge.evaluate.thresholds import choose_threshold
from defect_judge.model.judge_card import JudgeCard
from defect_judge.model.hidden_states import LayerTap, pool
from defect_judge.model.verdict_head import HEAD_CONFIG_FILE, HEAD_MODULE, VerdictHead, adapter_disabled
from defect_judge.report.learning_curve import learning_curve_chart
from defect_judge.train.loss import batch_weight_sum, final_hidden_states, output_embeddings, weighted_token_loss
from defect_judge.train.run_folder import (LEARNING_CURVE_FILE, best_checkpoint_info, checkpoint_name, checkpoint_step,
                                           list_checkpoints,
                                           mark_complete, write_best_checkpoint)

log = logging.getLogger(__name__)

# Metric name (after "eval_") of judgement accuracy with ties broken by eval_loss: see accuracy_then_loss().
ACCURACY_THEN_LOSS = "accuracy_then_loss"


class WeightedLossTrainer(Trainer):
    """Trainer with the key-token-weighted chunked loss and a lean eval loop.

    The accumulated batch's weight sum travels as ``num_items_in_batch``,
    the same channel transformers uses for its token count: ``get_batch_samples``
    sums the weights of the micro-batches of one optimizer step and gathers
    them over ranks; ``compute_loss`` divides by it.

    With a ``verdict_head`` (a submodule of the model, so the optimizer, DeepSpeed and
    checkpoints see it): the same forward pass taps the head's layers, the head's binary
    cross-entropy over the accumulated batch's labelled samples is added with weight
    ``head_loss_weight``, the head gets its own learning rate (``head_learning_rate``),
    every saved model carries ``verdict_head.*`` (and not inside the model's own weights),
    and evaluation reports the head's accuracy, ROC-AUC and loss.
    """

    def __init__(self, *args, key_token_weight: float = 1.0, loss_chunk_size: int = 1024,
                 verdict_head: VerdictHead | None = None, head_loss_weight: float = 1.0,
                 head_learning_rate: float | None = None, **kwargs):
        self.verdict_head = verdict_head
        self.head_loss_weight = float(head_loss_weight)
        self.head_learning_rate = head_learning_rate
        super().__init__(*args, **kwargs)
        self.key_token_weight = float(key_token_weight)
        self.loss_chunk_size = int(loss_chunk_size)
        self.loss_is_scaled_for_ga = True  # our loss is already a mean over the whole accumulated batch
        self.lm_head = output_embeddings(self.model)
        self._head_items = None  # labelled samples of the current accumulated batch, all ranks
        self._head_log = torch.zeros(2, dtype=torch.float64)  # head BCE sum and samples since the last log
        self._base_head_cache: tuple[object, list[tuple[float, float]]] | None = None  # (dev dataset, scores)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        totals = torch.zeros(2, dtype=torch.float32)  # answer-token weights, head-labelled samples
        for batch in batches:
            totals[0] += batch_weight_sum(batch, self.key_token_weight).cpu()
            if "verdict_label" in batch:
                totals[1] += (batch["verdict_label"] >= 0).sum().cpu()
        totals = totals.to(device)
        if self.args.world_size > 1:
            totals = self.accelerator.gather(totals.reshape(1, 2)).sum(0)
        self._head_items = totals[1]
        return batches, totals[0]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        head = self._trained_head
        with LayerTap(model, head.layers) if head is not None else contextlib.nullcontext() as tap:
            hidden = final_hidden_states(model, inputs)
        parts = weighted_token_loss(hidden, inputs["labels"], inputs["key_mask"], self.lm_head,
                                    self.key_token_weight, self.loss_chunk_size)
        head_sum, head_count = self._head_bce(tap, inputs) if head is not None else (None, None)
        if num_items_in_batch is None:  # a lone batch (e.g. a direct call): its own means
            loss = parts.weighted_sum / parts.weight_sum.clamp(min=1e-12)
            if head_sum is not None:
                loss = loss + self.head_loss_weight * head_sum / head_count.clamp(min=1.0)
            return loss
        loss = parts.weighted_sum / torch.as_tensor(num_items_in_batch, dtype=torch.float32,
                                                    device=parts.weighted_sum.device).clamp(min=1e-12)
        if head_sum is not None:
            items = self._head_items if self._head_items is not None else head_count
            loss = loss + self.head_loss_weight * head_sum / items.to(head_sum.device).clamp(min=1.0)
        if self.args.world_size > 1:
            # DeepSpeed/DDP average the ranks' gradients; the global sums are what the loss is normalised by.
            loss = loss * self.args.world_size
        return loss

    @property
    def _trained_head(self) -> VerdictHead | None:
        """The head whose BCE joins the loss: none when it reads the base model (it stays as fitted)."""
        head = self.verdict_head
        return None if head is None or head.reads_base else head

    def _head_bce(self, tap: LayerTap, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's BCE summed over this micro-batch's labelled samples, and their number."""
        logits, labels = self._head_logits(tap, inputs)
        valid = labels >= 0
        total = F.binary_cross_entropy_with_logits(logits[valid], labels[valid], reduction="sum")
        count = valid.sum().float()
        self._head_log += torch.stack([total.detach().double().cpu(), count.detach().double().cpu()])
        return total, count

    def _head_logits(self, tap: LayerTap, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        head = self.verdict_head
        features = pool([tap.states[layer] for layer in head.layers], inputs["prompt_mask"], head.pooling)
        logits = head(features)  # the module itself: DeepSpeed ZeRO-3 gathers its weights in its hooks
        return logits, inputs["verdict_label"].to(logits.device)

    def _base_head_logits(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A head on the base model: its logits from a pass with the adapter off that stops at its top layer."""
        with adapter_disabled(self.model), LayerTap(self.model, self.verdict_head.layers, stop=True) as tap:
            tap.run(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        return self._head_logits(tap, inputs)

    def _base_head_scores(self, dataset, loader) -> list[tuple[float, float]]:
        """(logit, label) of this rank's labelled dev samples for a head on the base model. Neither the base
        model nor such a head changes during training, so they are computed at the first evaluation of a dataset
        and reused after it."""
        if self._base_head_cache is None or self._base_head_cache[0] is not dataset:
            scores = []
            for batch in loader:
                scores += labelled_scores(*self._base_head_logits(self._prepare_inputs(batch)))
            self._base_head_cache = (dataset, scores)
        return self._base_head_cache[1]

    def log(self, logs: dict[str, float], start_time=None) -> None:
        if self._trained_head is not None and "loss" in logs:  # a training log, on every rank at once
            totals = self._head_log.to(self.args.device)
            if self.args.world_size > 1:
                totals = self.accelerator.reduce(totals, reduction="sum")
            if totals[1] > 0:
                logs["head_loss"] = float(totals[0] / totals[1])
            self._head_log.zero_()
        super().log(logs, start_time)

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the verdict head in a group of its own (its learning rate, no weight
        decay); the scheduler then scales both groups alike."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if self.verdict_head is None:
            return optimizer
        head_ids = {id(p) for p in self.verdict_head.parameters()}
        head_params = [p for p in self.verdict_head.parameters() if p.requires_grad]
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in head_ids]
        optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
        if head_params:  # none when the head is fixed on the base model
            lr = self.head_learning_rate if self.head_learning_rate is not None else self.args.learning_rate
            optimizer.add_param_group({"params": head_params, "lr": lr, "weight_decay": 0.0})
        return optimizer

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The model as the Trainer saves it, without the head's tensors, and the head beside it."""
        if self.verdict_head is None:
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if state_dict is None:
            state_dict = self.accelerator.unwrap_model(self.model).state_dict()
        marker = HEAD_MODULE + "."
        head_state = {key.split(marker, 1)[1]: value for key, value in state_dict.items()
                      if key.startswith(marker) or "." + marker in key}
        model_state = {key: value for key, value in state_dict.items()
                       if not (key.startswith(marker) or "." + marker in key)}
        super()._save(output_dir, state_dict=model_state)
        if self.args.should_save:
            self.verdict_head.save(output_dir, tensors=head_state or None)

    def _issue_warnings_after_load(self, load_result) -> None:
        if self.verdict_head is not None and getattr(load_result, "missing_keys", None):
            # the head is not in the model's weights file: _load_best_model reads it from its own
            load_result.missing_keys[:] = [k for k in load_result.missing_keys if HEAD_MODULE + "." not in k]
        super()._issue_warnings_after_load(load_result)

    def _load_best_model(self) -> None:
        super()._load_best_model()
        if self.verdict_head is not None:
            from defect_judge.model.verdict_head import load_head

            best = Path(self.state.best_model_checkpoint)
            if (best / HEAD_CONFIG_FILE).is_file():
                self.verdict_head.load_tensors(load_head(best).state_tensors())

    def _save_optimizer_and_scheduler(self, output_dir):
        engine = self.model_wrapped if self.is_deepspeed_enabled else None
        if engine is None or not hasattr(engine, "module_state_dict"):
            return super()._save_optimizer_and_scheduler(output_dir)
        # DeepSpeed drops frozen weights from its checkpoint by name from named_parameters(), which
        # lists a tied weight once (embed_tokens), so the frozen lm_head.weight would be saved:
        # a copy of the embedding matrix in every LoRA checkpoint. Drop every frozen name.
        original = engine.module_state_dict

        def module_state_dict(*args, exclude_frozen_parameters=False, **kwargs):
            state = original(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)
            if exclude_frozen_parameters:
                for name, param in engine.module.named_parameters(remove_duplicate=False):
                    if not param.requires_grad:
                        state.pop(name, None)
            return state

        engine.module_state_dict = module_state_dict
        try:
            super()._save_optimizer_and_scheduler(output_dir)
        finally:
            del engine.module_state_dict

    def _eval_loader(self, dataset):
        # Each rank takes every world_size-th sample: no sample is duplicated to even out the
        # shards (the default sampler does that), so the metrics are exact.
        indices = list(range(self.args.process_index, len(dataset), self.args.world_size))
        return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices),
                                           batch_size=self.args.per_device_eval_batch_size,
                                           collate_fn=self.data_collator, shuffle=False)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        dataset = self.eval_dataset
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        model.eval()
        head, trained_head = self.verdict_head, self._trained_head
        device = self.args.device
        totals = torch.zeros(4, dtype=torch.float64, device=device)  # weighted ce, weights, correct, judged
        head_scores: list[tuple[float, float]] = []  # (logit, label) of this rank's labelled samples
        loader = self._eval_loader(dataset)
        with torch.no_grad():
            for batch in tqdm(loader, desc="evaluating", unit="batch", leave=False,
                              disable=self.args.disable_tqdm or not self.is_world_process_zero()):
                batch = self._prepare_inputs(batch)
                with LayerTap(model, head.layers) if trained_head is not None else contextlib.nullcontext() as tap:
                    hidden = final_hidden_states(model, batch)
                parts = weighted_token_loss(hidden, batch["labels"], batch["key_mask"], self.lm_head,
                                            self.key_token_weight, self.loss_chunk_size, with_predictions=True)
                totals += torch.stack([parts.weighted_sum.double(), parts.weight_sum.double(),
                                       parts.judgement_correct.sum().double(),
                                       parts.has_judgement.sum().double()]).to(device)
                if trained_head is not None:
                    head_scores += labelled_scores(*self._head_logits(tap, batch))
            if head is not None and trained_head is None:
                head_scores = self._base_head_scores(dataset, loader)
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        weighted, weights, correct, judged = totals.tolist()
        loss, accuracy = weighted / max(weights, 1e-12), correct / judged if judged else 0.0
        metrics = {f"{metric_key_prefix}_loss": loss, f"{metric_key_prefix}_judgement_accuracy": accuracy,
                   f"{metric_key_prefix}_{ACCURACY_THEN_LOSS}": accuracy_then_loss(accuracy, loss, int(judged))}
        if head is not None:
            head_metrics = head_eval_metrics([row for part in all_ranks(head_scores) for row in part])
            metrics |= {f"{metric_key_prefix}_{name}": value for name, value in head_metrics.items()
                        if value is not None}
            if head_metrics["head_accuracy"] is not None:
                # The head is the judge: select on its accuracy; ties go to the lower loss training minimises
                # (the answer's + the weighted head's), so a frozen head still picks the best answer writer.
                total = loss + self.head_loss_weight * head_metrics["head_loss"]
                metrics[f"{metric_key_prefix}_{ACCURACY_THEN_LOSS}"] = accuracy_then_loss(
                    head_metrics["head_accuracy"], total, head_metrics["head_samples"])
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=len(dataset))


def labelled_scores(logits: torch.Tensor, labels: torch.Tensor) -> list[tuple[float, float]]:
    """(logit, label) of the samples with a label (an unlabelled one is -1)."""
    return [(l, y) for l, y in zip(logits.tolist(), labels.tolist()) if y >= 0]


def head_eval_metrics(scores: Sequence[tuple[float, float]]) -> dict:
    """The verdict head's accuracy (P(defective) >= 0.5), ROC-AUC (None with one class), mean BCE, sample
    count, and the decision threshold on P(defective) with the highest balanced accuracy on these samples (None
    with one class; the judge card records the best checkpoint's) over (logit, label) pairs."""
    from sklearn.metrics import roc_auc_score

    if not scores:
        return {"head_accuracy": None, "head_roc_auc": None, "head_loss": None, "head_samples": 0,
                "head_threshold": None, "head_threshold_balanced_accuracy": None}
    logits = torch.tensor([s[0] for s in scores], dtype=torch.float64)
    labels = torch.tensor([s[1] for s in scores], dtype=torch.float64)
    both = 0 < labels.sum() < len(labels)
    chosen = choose_threshold([int(y) for y in labels.tolist()], torch.sigmoid(logits).tolist())
    return {"head_accuracy": float(((logits >= 0) == (labels > 0.5)).double().mean()),
            "head_roc_auc": float(roc_auc_score(labels.numpy(), logits.numpy())) if both else None,
            "head_loss": float(F.binary_cross_entropy_with_logits(logits, labels)),
            "head_samples": len(scores),
            "head_threshold": chosen["threshold"] if chosen else None,
            "head_threshold_balanced_accuracy": chosen["balanced_accuracy"] if chosen else None}


def accuracy_then_loss(accuracy: float, loss: float, samples: int) -> float:
    """One number that orders evaluations as (accuracy, then lower loss) do.

    Accuracies over ``samples`` samples differ by at least 1/samples; the loss
    enters as a term in [0, 1/(samples+1)), so it only ever breaks ties. The
    Trainer's best-model choice and early stopping compare single numbers.
    """
    return accuracy - (loss / (1.0 + loss)) / (samples + 1)


class CheckpointCompleteCallback(TrainerCallback):
    """Marks a checkpoint complete once every rank has written its part.

    Trainer writes ``checkpoint-N`` in place, file by file; a run killed
    mid-save leaves a folder that looks like a checkpoint. The marker,
    written last, is what ``find_resume_checkpoint`` trusts.
    """

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / checkpoint_name(state.global_step)
            if folder.is_dir():
                mark_complete(folder, state.global_step, args.world_size)


class PeakGpuMemoryCallback(TrainerCallback):
    """Adds ``torch.cuda.max_memory_allocated()`` (this process's peak since it started, loading included) to
    the final training log entry, so ``trainer_state.json`` holds it as ``train_peak_gpu_memory_bytes``.

    transformers' own memory metrics (``--skip_memory_metrics false``) poll the process's RSS in a busy
    thread, which would slow the very steps being measured; this reads one counter once.
    """

    def on_train_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available() and state.log_history and "train_runtime" in state.log_history[-1]:
            state.log_history[-1]["train_peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
            log.info("peak GPU memory allocated: %.2f GiB", torch.cuda.max_memory_allocated() / 2 ** 30)


def release_shared_memory() -> None:
    """Unlinks the all-reduce buffers DeepSpeed's CPU ranks leave in /dev/shm, while the run is alive."""
    released = release_deepspeed_shared_memory()
    if released is not None:
        log.info("releasing DeepSpeed's shared-memory buffers (%s, one per rank): the memory returns when the "
                 "ranks exit", released)


class SharedMemoryCallback(TrainerCallback):
    """Releases DeepSpeed's shared memory (``release_shared_memory``) at the first epoch: on CPU, DeepSpeed
    starts inside ``train()``, after ``on_train_begin``."""

    def __init__(self):
        self.released = False

    def on_epoch_begin(self, args, state, control, **kwargs):
        if not self.released:
            release_shared_memory()
            self.released = True


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
