"""defect_judge/train/trainer.py with the real Trainer on a tiny real Llama: gradient accumulation leaves the
loss unchanged, an overfit run, the accuracy-then-loss selection metric, and a verdict head trained beside the
answer (its loss, evaluation, selection and saving), and a head on the base model scored once per dev set."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from defect_judge.data.schema import Record
from defect_judge.model.hidden_states import prompt_features
from defect_judge.model.run_folder import checkpoint_name
from defect_judge.model.verdict_head import HEAD_MODULE, VerdictHead, load_head
from defect_judge.train.samples import PaddingCollator, SupervisedDataset, fit_samples
from defect_judge.train.trainer import WeightedLossTrainer, accuracy_then_loss, head_eval_metrics
from helpers import assert_grads_close, batch_of, chat_records, grads, reference_loss


def make_trainer(model, tokenizer, tmp_path, key_token_weight: float, loss_chunk_size: int = 1024,
                 trainer_kwargs: dict | None = None, **overrides):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none",
                             remove_unused_columns=False, **({"per_device_train_batch_size": 1} | overrides))
    return WeightedLossTrainer(model=model, args=args, data_collator=PaddingCollator(tokenizer.pad_token_id),
                               key_token_weight=key_token_weight, loss_chunk_size=loss_chunk_size,
                               **(trainer_kwargs or {}))


def accumulated_step(trainer, model, micro_batches, weight_sum) -> float:
    """The summed loss of one accumulated optimizer step, its gradients left in ``model``."""
    model.zero_grad()
    total = 0.0
    for batch in micro_batches:
        loss = trainer.compute_loss(model, batch, num_items_in_batch=weight_sum)
        loss.backward()
        total += loss.item()
    return total


@pytest.mark.parametrize("key_token_weight", [1.0, 5.0])
def test_gradient_accumulation_does_not_change_the_loss(tiny_model, embedded_tokenizer, tmp_path, key_token_weight):
    """Two micro-batches of an accumulated step give the loss and gradients of one batch holding both."""
    trainer = make_trainer(tiny_model, embedded_tokenizer, tmp_path, key_token_weight, loss_chunk_size=16)
    recs = chat_records(2, event_repeat=2)[:1] + chat_records(1, start=3)  # different lengths and answer sizes
    micro = [batch_of(embedded_tokenizer, [r]) for r in recs]
    whole = batch_of(embedded_tokenizer, recs)
    fetched, weight_sum = trainer.get_batch_samples(iter(micro), 2, torch.device("cpu"))
    assert len(fetched) == 2
    accumulated = accumulated_step(trainer, tiny_model, fetched, weight_sum)
    accumulated_grads = grads(tiny_model)
    tiny_model.zero_grad()
    _, whole_sum = trainer.get_batch_samples(iter([whole]), 1, torch.device("cpu"))
    single = trainer.compute_loss(tiny_model, whole, num_items_in_batch=whole_sum)
    single.backward()
    assert whole_sum.item() == weight_sum.item()
    assert accumulated == pytest.approx(single.item(), abs=1e-5)
    assert accumulated == pytest.approx(reference_loss(tiny_model, whole, key_token_weight).item(), abs=1e-5)
    assert_grads_close(accumulated_grads, grads(tiny_model))
    if key_token_weight == 1.0:
        plain = tiny_model(input_ids=whole["input_ids"], attention_mask=whole["attention_mask"],
                           labels=whole["labels"]).loss
        assert accumulated == pytest.approx(plain.item(), abs=1e-5)


def test_overfits_a_repeated_tiny_batch(tiny_model, embedded_tokenizer, tmp_path, monkeypatch):
    # One thread: a tiny model gains nothing from two, and on a busy machine two threads wait on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep it for this test
    model = copy.deepcopy(tiny_model)
    dataset = SupervisedDataset(fit_samples(embedded_tokenizer, chat_records(2), 4096))
    trainer = make_trainer(model, embedded_tokenizer, tmp_path, 5.0, per_device_train_batch_size=2, max_steps=30,
                           learning_rate=1e-2, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
                           disable_tqdm=True, seed=0)
    trainer.train_dataset = dataset
    trainer.eval_dataset = dataset
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 30
    assert losses[-1] < 0.2 * losses[0], losses
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] < 0.2 * losses[0]
    assert metrics["eval_judgement_accuracy"] == 1.0
    monkeypatch.undo()
    torch.set_num_threads(threads)


@settings(max_examples=200, deadline=None)
@given(samples=st.integers(1, 500), data=st.data())
def test_accuracy_then_loss_orders_evaluations_by_accuracy_then_lower_loss(samples, data):
    """The single number the Trainer compares must order two evaluations exactly as (accuracy, -loss) does."""
    correct = data.draw(st.lists(st.integers(0, samples), min_size=2, max_size=2))
    # losses as training reports them: 0..100 to four decimals (far finer steps would be below float resolution)
    loss = [x / 1e4 for x in data.draw(st.lists(st.integers(0, 1_000_000), min_size=2, max_size=2))]
    (a, b), (la, lb) = [c / samples for c in correct], loss
    score_a, score_b = accuracy_then_loss(a, la, samples), accuracy_then_loss(b, lb, samples)
    if (a, -la) > (b, -lb):
        assert score_a > score_b
    elif (a, -la) < (b, -lb):
        assert score_a < score_b


# ------------------------------------------------------------ verdict head


def head_batches(tokenizer, recs: list[Record]) -> tuple[list[dict], dict]:
    """One micro-batch per record, and one batch of them all, with the head's labels (是 = defective)."""
    samples = fit_samples(tokenizer, recs, 4096)
    collate = PaddingCollator(tokenizer.pad_token_id)
    dataset = SupervisedDataset(samples, "是")
    return [collate([dataset[i]]) for i in range(len(samples))], collate([dataset[i] for i in range(len(samples))])


def random_head(model, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    head = VerdictHead([1, 2], "mean", model.config.hidden_size, model.config.num_hidden_layers, positive="是",
                       negative="否")
    with torch.no_grad():
        head.mean.copy_(torch.randn(head.dim, generator=generator) * 0.1)
        head.weight.copy_(torch.randn(head.dim, generator=generator))
        head.bias.fill_(0.1)
    return head


def prompt_features_of(model, dataset) -> torch.Tensor:
    """The means of layers 1 and 2 over each prompt of ``dataset``: what ``random_head`` reads."""
    prompts = [list(f["input_ids"][:f["prompt_length"]]) for f in dataset.features]
    return prompt_features(model, prompts, [1, 2], "mean")


def test_head_loss_is_the_answer_loss_plus_the_weighted_bce_of_the_accumulated_batch(tiny_model, embedded_tokenizer,
                                                                                       tmp_path):
    """With a verdict head the loss adds head_loss_weight x the head's mean BCE over the accumulated batch,
    computed from the states of the same forward pass; accumulation does not change it, and gradients reach
    the head and the model's layers below the head's."""
    model = copy.deepcopy(tiny_model)
    head = random_head(model)
    model.add_module(HEAD_MODULE, head)
    trainer = make_trainer(model, embedded_tokenizer, tmp_path, 5.0,
                           trainer_kwargs={"verdict_head": head, "head_loss_weight": 2.0})
    recs = chat_records(3)
    micro, whole = head_batches(embedded_tokenizer, recs)
    fetched, weight_sum = trainer.get_batch_samples(iter(micro), 3, torch.device("cpu"))
    assert trainer._head_items.item() == 3
    accumulated = accumulated_step(trainer, model, fetched, weight_sum)
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if ".layers.0." in n)
    with torch.no_grad():
        logits = head(prompt_features_of(model, SupervisedDataset(fit_samples(embedded_tokenizer, recs, 4096))))
        labels = torch.tensor([1.0 if r.judgement == "是" else 0.0 for r in recs])
        expected = reference_loss(model, whole, 5.0) + 2.0 * F.binary_cross_entropy_with_logits(logits, labels)
    assert accumulated == pytest.approx(expected.item(), abs=1e-4)


def test_a_head_run_evaluates_and_selects_on_the_head_and_saves_it_beside_the_model(tiny_model, embedded_tokenizer,
                                                                                      tmp_path):
    """evaluate() reports the head's accuracy, ROC-AUC and loss, and accuracy_then_loss follows the head's
    accuracy; every save writes verdict_head.* and keeps the head out of the model's own weights; the
    best model's head is restored at the end."""
    from safetensors.torch import load_file as load_tensors

    model = copy.deepcopy(tiny_model)
    head = random_head(model, seed=1)
    model.add_module(HEAD_MODULE, head)
    dataset = SupervisedDataset(fit_samples(embedded_tokenizer, chat_records(8), 4096), "是")
    trainer = make_trainer(model, embedded_tokenizer, tmp_path, 5.0, per_device_train_batch_size=2, max_steps=4,
                           learning_rate=5e-3, save_steps=2, eval_strategy="steps", eval_steps=2,
                           logging_steps=1, disable_tqdm=True, load_best_model_at_end=True,
                           metric_for_best_model="accuracy_then_loss", greater_is_better=True,
                           trainer_kwargs={"verdict_head": head, "head_learning_rate": 5e-2,
                                           "train_dataset": dataset, "eval_dataset": dataset})
    trainer.train()
    evaluations = [h for h in trainer.state.log_history if "eval_head_accuracy" in h]
    assert len(evaluations) == 2
    for entry in evaluations:
        assert entry["eval_head_samples"] == 8 and 0 <= entry["eval_head_roc_auc"] <= 1
        total = entry["eval_loss"] + entry["eval_head_loss"]  # head_loss_weight 1
        assert entry["eval_accuracy_then_loss"] == pytest.approx(accuracy_then_loss(entry["eval_head_accuracy"], total, 8))
    assert all("head_loss" in h for h in trainer.state.log_history if "loss" in h)
    assert {g["lr"] for g in trainer.optimizer.param_groups} and any(
        p is head.weight for g in trainer.optimizer.param_groups for p in g["params"] if g.get("weight_decay") == 0.0)
    best = Path(trainer.state.best_model_checkpoint)
    for step in (2, 4):
        folder = tmp_path / "out" / checkpoint_name(step)
        saved = load_head(folder)
        assert saved.layers == (1, 2) and not any(HEAD_MODULE in k for k in load_tensors(folder / "model.safetensors"))
    restored = load_head(best).state_tensors()
    assert all(torch.equal(head.state_tensors()[name], value) for name, value in restored.items())


def test_a_head_on_the_base_model_is_scored_once_and_its_scores_reused(tiny_model, embedded_tokenizer, tmp_path):
    """A head that reads the base model (the LoRA adapter off) never changes, nor does what it reads: the first
    evaluation scores it in passes of its own with the adapter off, later evaluations reuse those scores while the
    adapter trains on."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = copy.deepcopy(tiny_model)
    head = random_head(base, seed=2)
    head.reads_base = True
    records = chat_records(8)
    dataset = SupervisedDataset(fit_samples(embedded_tokenizer, records, 4096), "是")
    with torch.no_grad():  # the head on the base model itself, before any adapter exists
        expected = head_eval_metrics([(float(head(base_features)), float(label)) for base_features, label in zip(
            prompt_features_of(base, dataset), [f["verdict_label"] for f in dataset.features])])
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))
    model.base_model.model.add_module(HEAD_MODULE, head.requires_grad_(False))
    adapter_off_passes = []
    lora = next(m for m in model.modules() if isinstance(m, BaseTunerLayer))
    lora.register_forward_hook(lambda module, args, output: adapter_off_passes.append(module.disable_adapters))
    trainer = make_trainer(model, embedded_tokenizer, tmp_path, 1.0, per_device_train_batch_size=2, max_steps=4,
                           learning_rate=5e-2, save_strategy="no", eval_strategy="steps", eval_steps=1,
                           disable_tqdm=True, trainer_kwargs={"verdict_head": head, "train_dataset": dataset,
                                                              "eval_dataset": dataset})
    trainer.train()
    evaluations = [h for h in trainer.state.log_history if "eval_head_accuracy" in h]
    assert len(evaluations) == 4 and len({h["eval_loss"] for h in evaluations}) == 4  # the adapter learns
    for entry in evaluations:
        assert entry["eval_head_loss"] == pytest.approx(expected["head_loss"], abs=1e-5)
        assert entry["eval_head_accuracy"] == expected["head_accuracy"]
    assert sum(adapter_off_passes) == 1  # one dev batch of 8, at the first evaluation only
