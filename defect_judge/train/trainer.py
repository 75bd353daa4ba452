"""The Trainer of this toolkit: ``WeightedLossTrainer`` trains with the key-token-weighted chunked loss
(``loss.py``) and, with a verdict head, the head's binary cross-entropy beside it; its evaluation loop and the
single number best-model selection compares (``accuracy_then_loss``). The callbacks a run adds are
``callbacks.py``'s, the best model saved at the end ``best_model.py``'s.

It overrides the Trainer's public hooks where the loss, the logs, the optimizer and the evaluation differ, and
four private methods where no public hook or callback reaches: saving the model (``_save``: the head's tensors
go beside it, not into its weights), DeepSpeed's checkpoint (``_save_optimizer_and_scheduler``), the warning after
a load (``_issue_warnings_after_load``) and loading the best model (``_load_best_model``).

With a verdict head (``model/verdict_head.py``), ``head_loss_weight`` times the head's binary cross-entropy,
averaged over the accumulated batch's samples, is added to the answer's loss; a head that reads the base model
adds nothing and is scored on dev in a pass of its own, with the adapter switched off.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import Trainer
from transformers.trainer_utils import EvalLoopOutput

from defect_judge.distributed import all_ranks
from defect_judge.evaluate.metrics import logit_scores
from defect_judge.model.head_files import HEAD_CONFIG_FILE
from defect_judge.model.hidden_states import LayerTap, pool
from defect_judge.model.verdict_head import HEAD_MODULE, VerdictHead, adapter_disabled, load_head
from defect_judge.train.loss import batch_weight_sum, final_hidden_states, output_embeddings, weighted_token_loss

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

    # Private, and must stay: the one place that gets the gathered state dict (every backend) before it is written.
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

    # Private, and must stay: the only place the Trainer judges a load's missing keys (and otherwise warns).
    def _issue_warnings_after_load(self, load_result) -> None:
        if self.verdict_head is not None and getattr(load_result, "missing_keys", None):
            # the head is not in the model's weights file: _load_best_model reads it from its own
            load_result.missing_keys[:] = [k for k in load_result.missing_keys if HEAD_MODULE + "." not in k]
        super()._issue_warnings_after_load(load_result)

    # Private, and must stay: a callback's on_train_end runs after wandb's, which may log the model's last head.
    def _load_best_model(self) -> None:
        super()._load_best_model()
        if self.verdict_head is not None:
            best = Path(self.state.best_model_checkpoint)
            if (best / HEAD_CONFIG_FILE).is_file():
                self.verdict_head.load_tensors(load_head(best).state_tensors())

    # Private, and must stay: the only place DeepSpeed's checkpoint is written, which no callback can filter.
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


# The verdict head's dev metrics in the Trainer's log (after "eval_"), by the names of ``metrics.logit_scores``.
HEAD_METRICS = {"accuracy": "head_accuracy", "roc_auc": "head_roc_auc", "log_loss": "head_loss",
                "samples": "head_samples", "threshold": "head_threshold",
                "threshold_balanced_accuracy": "head_threshold_balanced_accuracy"}


def head_eval_metrics(scores: Sequence[tuple[float, float]]) -> dict:
    """The verdict head's accuracy (P(defective) >= 0.5), ROC-AUC (None with one class), mean BCE, sample
    count, and the decision threshold on P(defective) with the highest balanced accuracy on these samples (None
    with one class; the judge card records the best checkpoint's) over (logit, label) pairs
    (``metrics.logit_scores``)."""
    values = logit_scores([label for _, label in scores], [logit for logit, _ in scores])
    return {HEAD_METRICS[name]: value for name, value in values.items()}


def accuracy_then_loss(accuracy: float, loss: float, samples: int) -> float:
    """One number that orders evaluations as (accuracy, then lower loss) do.

    Accuracies over ``samples`` samples differ by at least 1/samples; the loss
    enters as a term in [0, 1/(samples+1)), so it only ever breaks ties. The
    Trainer's best-model choice and early stopping compare single numbers.
    """
    return accuracy - (loss / (1.0 + loss)) / (samples + 1)
