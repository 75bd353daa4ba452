"""train_lora.py's pieces on real components: the embedded tokenizer and chat
template for labels and truncation, a tiny real Llama for the loss (values and
gradients against plain references), the real Trainer for accumulation and an
overfit run, and the script's command line."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from defect_judge import load_script
from defect_judge.train.run_folder import CHECKPOINT_COMPLETE_FILE
from defect_judge.errors import InputError
from defect_judge.data.schema import Record
from defect_judge.train.training import (IGNORE_INDEX, TRUNCATION_MARK, PaddingCollator, PairedDataset, accuracy_then_loss,
                                   judgement_only, sample_features, SupervisedDataset, WeightedLossTrainer,
                                   final_hidden_states, fit_sample, fit_samples, length_stats, mark_trained_text,
                                   weighted_token_loss)
from defect_judge.templates import event_char_span
from helpers import SAMPLES, TRAIN, make_records, run_script, write_records

SCRIPT = TRAIN

# Qwen2.5's ChatML template (tools branch left out): it inserts its own default system prompt.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def records(n: int, **kwargs) -> list[Record]:
    return [Record(r["id"], r["subtype"], tuple(r["text"])) for r in make_records(n, **kwargs)]


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def batch_of(tokenizer, recs: list[Record], max_length: int = 4096) -> dict:
    dataset = SupervisedDataset(fit_samples(tokenizer, recs, max_length))
    return PaddingCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=1e-4, msg=name)


# ------------------------------------------------------------------- labels

@pytest.mark.parametrize("template", ["embedded", "qwen2.5"])
def test_labels_are_the_answer_and_its_end_of_turn_token(embedded_tokenizer, template):
    tokenizer = embedded_tokenizer
    if template == "qwen2.5":
        tokenizer = copy.deepcopy(embedded_tokenizer)
        tokenizer.chat_template = QWEN25_TEMPLATE
    record = records(1)[0]
    features = SupervisedDataset([fit_sample(tokenizer, record, 4096)])[0]
    ids, labels, key = features["input_ids"], features["labels"], features["key_mask"]
    trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    # One contiguous span at the end of the conversation, labels equal to the inputs there.
    assert trained == list(range(trained[0], trained[-1] + 1))
    assert all(labels[i] == ids[i] for i in trained)
    assert tokenizer.decode([ids[i] for i in trained]) == record.assistant + "<|im_end|>"
    # The template's default system prompt, the user turn and the headers are context only.
    prompt = tokenizer.decode(ids[:trained[0]])
    default_system = "You are Qwen" if template == "qwen2.5" else "You are a helpful AI assistant named SmolLM"
    assert default_system in prompt and record.user in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    # What follows the end-of-turn token (the template's newline) is not trained.
    assert all(label == IGNORE_INDEX for label in labels[trained[-1] + 1:])
    judgement = SAMPLES[0][2]
    assert tokenizer.decode([t for t, k in zip(ids, key) if k]) == judgement
    assert all(labels[i] != IGNORE_INDEX for i, k in enumerate(key) if k)


def test_sample_view_marks_trained_and_key_tokens(embedded_tokenizer):
    record = records(1)[0]
    view = mark_trained_text(embedded_tokenizer, fit_sample(embedded_tokenizer, record, 4096).encoded)
    judgement, reason = SAMPLES[0][2], SAMPLES[0][3]
    assert f"<|im_start|>assistant\n[[判断:{{{{{judgement}}}}}\n\n原因：{reason}<|im_end|>]]" in view
    assert view.count("[[") == 1 and view.count("{{") == 1


def test_collator_pads_without_training_the_padding(embedded_tokenizer):
    batch = batch_of(embedded_tokenizer, records(1) + records(1, event_repeat=3))
    short, long = batch["attention_mask"].sum(dim=1).tolist()
    assert short < long == batch["input_ids"].shape[1]
    assert (batch["input_ids"][0, short:] == embedded_tokenizer.pad_token_id).all()
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all() and not batch["key_mask"][0, short:].any()


def test_length_stats_nearest_rank():
    assert length_stats([5, 1, 3, 2, 4]) == {"min": 1, "median": 3, "p95": 5, "max": 5}
    assert length_stats(list(range(1, 101))) == {"min": 1, "median": 50, "p95": 95, "max": 100}


# --------------------------------------------------------------- truncation

def test_truncation_cuts_the_event_and_keeps_the_answer(embedded_tokenizer):
    record = records(1, event_repeat=40)[0]
    full = fit_sample(embedded_tokenizer, record, 100_000)
    fitted = fit_sample(embedded_tokenizer, record, 300)
    assert not full.truncated and len(full.encoded.input_ids) > 300
    assert fitted.truncated and 295 <= len(fitted.encoded.input_ids) <= 300
    answer = [t for t, trained in zip(fitted.encoded.input_ids, fitted.encoded.trained) if trained]
    assert answer == [t for t, trained in zip(full.encoded.input_ids, full.encoded.trained) if trained]
    text = embedded_tokenizer.decode(fitted.encoded.input_ids)
    user = text[text.index("任务："):text.index("<|im_end|>", text.index("任务："))]
    start, end = event_char_span(user)
    original_event = record.user[slice(*event_char_span(record.user))]
    assert user[:start] == record.user[:event_char_span(record.user)[0]]  # the task is intact
    assert user[end:] == record.user[event_char_span(record.user)[1]:]    # so is the output format
    assert user[start:end].endswith(TRUNCATION_MARK)
    kept = user[start:end][:-len(TRUNCATION_MARK)]
    assert original_event.startswith(kept) and len(original_event) - len(kept) == fitted.cut_chars > 0


def test_a_sample_whose_answer_cannot_fit_is_an_error_naming_it(embedded_tokenizer):
    record = records(1)[0]
    answer_tokens = sum(fit_sample(embedded_tokenizer, record, 4096).encoded.trained)
    with pytest.raises(InputError) as caught:
        fit_sample(embedded_tokenizer, record, answer_tokens + 10, path="train.jsonl")
    message = str(caught.value)
    assert record.id in message and "train.jsonl" in message and "max_length" in message


# --------------------------------------------------------------------- loss

def reference_loss(model, batch, key_token_weight: float) -> torch.Tensor:
    """The definition, written plainly: full logits, per-token CE, weighted mean."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none",
                         ignore_index=IGNORE_INDEX).view_as(targets)
    weights = (targets != IGNORE_INDEX).float() * torch.where(batch["key_mask"][:, 1:], key_token_weight, 1.0)
    return (ce * weights).sum() / weights.sum()


@pytest.mark.parametrize("key_token_weight,chunk_size", [(1.0, 1024), (5.0, 1024), (5.0, 7), (0.25, 3)])
def test_weighted_chunked_loss_matches_the_plain_reference(tiny_model, embedded_tokenizer, key_token_weight,
                                                           chunk_size):
    batch = batch_of(embedded_tokenizer, records(3))
    tiny_model.zero_grad()
    expected = reference_loss(tiny_model, batch, key_token_weight)
    expected.backward()
    expected_grads = grads(tiny_model)
    tiny_model.zero_grad()
    parts = weighted_token_loss(final_hidden_states(tiny_model, batch), batch["labels"], batch["key_mask"],
                                tiny_model.get_output_embeddings(), key_token_weight, chunk_size)
    loss = parts.weighted_sum / parts.weight_sum
    loss.backward()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)
    assert_grads_close(grads(tiny_model), expected_grads)
    if key_token_weight == 1.0:  # equals the model's own causal-LM loss
        plain = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           labels=batch["labels"]).loss
        torch.testing.assert_close(loss.detach(), plain.detach(), atol=1e-5, rtol=0)


def test_loss_reaches_the_hidden_states_through_lora(tiny_model, embedded_tokenizer):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(tiny_model), config)
    batch = batch_of(embedded_tokenizer, records(2))
    parts = weighted_token_loss(final_hidden_states(model, batch), batch["labels"], batch["key_mask"],
                                model.get_output_embeddings(), 5.0, 16)
    (parts.weighted_sum / parts.weight_sum).backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)
    with torch.no_grad():
        expected = reference_loss(model, batch, 5.0)
    torch.testing.assert_close((parts.weighted_sum / parts.weight_sum).detach(), expected, atol=1e-5, rtol=0)


def test_judgement_accuracy_is_argmax_over_the_key_tokens(tiny_model, embedded_tokenizer):
    batch = batch_of(embedded_tokenizer, records(4))
    with torch.no_grad():
        parts = weighted_token_loss(final_hidden_states(tiny_model, batch), batch["labels"], batch["key_mask"],
                                    tiny_model.get_output_embeddings(), 5.0, 5, with_predictions=True)
        predicted = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
    key = batch["key_mask"][:, 1:]
    expected = [bool((predicted[row, :-1][key[row]] == batch["labels"][row, 1:][key[row]]).all()) for row in range(4)]
    assert parts.has_judgement.tolist() == [True] * 4
    assert parts.judgement_correct.tolist() == expected


def make_trainer(model, tokenizer, tmp_path, key_token_weight: float, loss_chunk_size: int = 1024,
                 trainer_kwargs: dict | None = None, **overrides):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none",
                             remove_unused_columns=False, **({"per_device_train_batch_size": 1} | overrides))
    return WeightedLossTrainer(model=model, args=args, data_collator=PaddingCollator(tokenizer.pad_token_id),
                               key_token_weight=key_token_weight, loss_chunk_size=loss_chunk_size,
                               **(trainer_kwargs or {}))


@pytest.mark.parametrize("key_token_weight", [1.0, 5.0])
def test_gradient_accumulation_does_not_change_the_loss(tiny_model, embedded_tokenizer, tmp_path, key_token_weight):
    """Two micro-batches of an accumulated step give the loss and gradients of one batch holding both."""
    trainer = make_trainer(tiny_model, embedded_tokenizer, tmp_path, key_token_weight, loss_chunk_size=16)
    recs = records(2, event_repeat=2)[:1] + records(1, start=3)  # different lengths and answer sizes
    micro = [batch_of(embedded_tokenizer, [r]) for r in recs]
    whole = batch_of(embedded_tokenizer, recs)
    fetched, weight_sum = trainer.get_batch_samples(iter(micro), 2, torch.device("cpu"))
    assert len(fetched) == 2
    tiny_model.zero_grad()
    accumulated = 0.0
    for batch in fetched:
        loss = trainer.compute_loss(tiny_model, batch, num_items_in_batch=weight_sum)
        loss.backward()
        accumulated += loss.item()
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
    dataset = SupervisedDataset(fit_samples(embedded_tokenizer, records(2), 4096))
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


# ------------------------------------------------------------ output folder

@pytest.fixture(scope="module")
def train_lora():
    return load_script("instruct_fine_tuning/train_lora.py")


def fake_checkpoint(folder: Path, step: int, complete: bool) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"")
    if complete:
        (path / CHECKPOINT_COMPLETE_FILE).write_text(json.dumps({"step": step}))
    return path


def test_output_dir_of_an_earlier_run_is_refused_resumed_or_overwritten(train_lora, tmp_path):
    def args(**kwargs):
        return SimpleNamespace(**({"output_dir": str(tmp_path), "resume_from_checkpoint": None,
                                   "overwrite_output_dir": False} | kwargs))

    assert train_lora.prepare_output_dir(args(), True) is None  # empty folder: a fresh run
    fake_checkpoint(tmp_path, 2, True)
    fake_checkpoint(tmp_path, 4, False)
    with pytest.raises(InputError) as caught:
        train_lora.prepare_output_dir(args(), True)
    assert "--resume_from_checkpoint auto" in str(caught.value) and "--overwrite_output_dir" in str(caught.value)
    assert train_lora.prepare_output_dir(args(resume_from_checkpoint="auto"), True) == str(tmp_path / "checkpoint-2")
    assert not (tmp_path / "checkpoint-4").exists()  # the half-written one is gone, so it cannot be mixed in
    assert train_lora.prepare_output_dir(args(overwrite_output_dir=True), True) is None
    assert not (tmp_path / "checkpoint-2").exists()


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
    full = train_lora.run_settings(train_lora.LoraArguments(finetuning_type="full"))
    assert full["finetuning_type"] == "full" and not [k for k in full if k.startswith("lora_")]
    assert "lora_rank" in train_lora.run_settings(train_lora.LoraArguments())


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


def test_accuracy_wins_where_loss_and_accuracy_disagree(train_lora, tmp_path):
    """Checkpoints whose lowest eval_loss is not the most accurate one: selection by accuracy_then_loss picks
    the accurate one, and the Trainer treats the metric as higher-is-better although its name ends in loss."""
    evaluations = {20: (0.50, 0.61), 40: (0.75, 0.70), 60: (0.75, 0.64), 80: (0.72, 0.52)}  # step: (acc, loss)
    scores = {step: accuracy_then_loss(acc, loss, 32) for step, (acc, loss) in evaluations.items()}
    assert min(evaluations, key=lambda s: evaluations[s][1]) == 80  # eval_loss would choose step 80
    assert max(scores, key=scores.get) == 60  # most accurate, and of the two at 0.75 the lower loss
    args = train_lora.parse_args(["--model_path", "m", "--train_data", "t", "--eval_data", "d", "--output_dir",
                                  str(tmp_path), "--metric_for_best_model", "accuracy_then_loss", "--report_to",
                                  "none"])[4]
    assert args.greater_is_better is True and args.metric_for_best_model == "accuracy_then_loss"


# ------------------------------------------------------ cheaper and paired training

def test_judgement_only_cuts_the_reason_and_keeps_the_judgement_loss(tiny_model, embedded_tokenizer):
    """--train_on judgement: the sequence ends with the judgement; its loss is exactly the loss the full
    sequence gives when only 判断:{judgement} is trained (a causal model never sees what follows)."""
    fitted = fit_samples(embedded_tokenizer, records(3), 4096)
    cut = [judgement_only(s) for s in fitted]
    for full, short in zip(fitted, cut):
        last_key = max(i for i, k in enumerate(full.encoded.key) if k)
        assert short.encoded.input_ids == full.encoded.input_ids[:last_key + 1]
        assert short.encoded.key[-1] and sum(short.encoded.key) == sum(full.encoded.key)
        text = embedded_tokenizer.decode(short.encoded.input_ids)
        assert text.rstrip().endswith(("判断:是", "判断:否")) and "原因" not in text.split("assistant")[-1]
    short_batch = PaddingCollator(embedded_tokenizer.pad_token_id)([sample_features(s) for s in cut])
    full_batch = PaddingCollator(embedded_tokenizer.pad_token_id)([sample_features(s) for s in fitted])
    # the full sequences, trained on the same tokens (the answer up to its judgement) only
    trained_upto = torch.zeros_like(full_batch["labels"], dtype=torch.bool)
    for row, sample in enumerate(cut):
        trained_upto[row, :len(sample.encoded.input_ids)] = True
    full_batch["labels"] = torch.where(trained_upto, full_batch["labels"], IGNORE_INDEX)
    with torch.no_grad():
        short_loss = reference_loss(tiny_model, short_batch, 5.0)
        full_loss = reference_loss(tiny_model, full_batch, 5.0)
    torch.testing.assert_close(short_loss, full_loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("finetuning_type", ["lora", "full"])
def test_trainable_layers_train_the_top_layers_only(train_lora, tiny_model_dir, embedded_tokenizer, finetuning_type):
    """--trainable_layers 1 on the 2-layer tiny model: gradients reach layer 1 (and the final norm in full
    fine-tuning), nothing below it, and autograd never builds the graph through layer 0."""
    model_args = train_lora.ModelArguments(model_path=str(tiny_model_dir))
    lora_args = train_lora.LoraArguments(finetuning_type=finetuning_type, lora_rank=4, trainable_layers=1)
    train_args = SimpleNamespace(seed=0, deepspeed=None, activation_checkpointing=False)
    model = train_lora.training_model(model_args, lora_args, train_args, embedded_tokenizer)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".layers.1." in n or n.endswith("model.norm.weight") for n in trained), trained
    assert any(".layers.1." in n for n in trained)
    batch = batch_of(embedded_tokenizer, records(2))
    parts = weighted_token_loss(final_hidden_states(model, batch), batch["labels"], batch["key_mask"],
                                model.get_output_embeddings(), 5.0)
    (parts.weighted_sum / parts.weight_sum).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if ".layers.0." in n or "embed" in n)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if ".layers.1." in n)
    with pytest.raises(InputError, match="only 2 layers"):
        train_lora.training_model(model_args, train_lora.LoraArguments(trainable_layers=3), train_args,
                              embedded_tokenizer)


def test_pair_batches_keep_twins_in_one_micro_batch(tmp_path, tiny_model, embedded_tokenizer):
    """--pair_batches: an item is a pair; shuffled by the Trainer's own sampler, every micro-batch holds
    whole pairs (and a lone sample alone), and the collator pads them into one batch."""
    from transformers import TrainingArguments

    rows = records(7)
    twins = [Record(r.id, r.subtype, r.text, pair_id=None if i == 6 else f"p{i // 2}") for i, r in enumerate(rows)]
    dataset = PairedDataset(fit_samples(embedded_tokenizer, twins, 4096))
    assert len(dataset) == 4 and dataset.pairs == 3
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", remove_unused_columns=False,
                             per_device_train_batch_size=1)
    trainer = WeightedLossTrainer(model=copy.deepcopy(tiny_model), args=args, train_dataset=dataset,
                                  data_collator=PaddingCollator(embedded_tokenizer.pad_token_id))
    ids = {tuple(f["input_ids"]): s.pair_id for s, f in zip(twins, SupervisedDataset(
        fit_samples(embedded_tokenizer, twins, 4096)).features)}
    sizes = []
    for batch in trainer.get_train_dataloader():
        rows_in_batch = [tuple(row[mask.bool()].tolist()) for row, mask in zip(batch["input_ids"],
                                                                                batch["attention_mask"])]
        pair_ids = {ids[row] for row in rows_in_batch}
        assert len(pair_ids) == 1  # one pair (or one lone sample) per micro-batch
        sizes.append(len(rows_in_batch))
    assert sorted(sizes) == [1, 2, 2, 2]


# ------------------------------------------------------------ verdict head

def head_batches(tokenizer, recs: list[Record]) -> tuple[list[dict], dict]:
    """One micro-batch per record, and one batch of them all, with the head's labels (是 = defective)."""
    samples = fit_samples(tokenizer, recs, 4096)
    collate = PaddingCollator(tokenizer.pad_token_id)
    dataset = SupervisedDataset(samples, "是")
    return [collate([dataset[i]]) for i in range(len(samples))], collate([dataset[i] for i in range(len(samples))])


def random_head(model, seed: int = 0):
    from defect_judge.model.verdict_head import VerdictHead

    generator = torch.Generator().manual_seed(seed)
    head = VerdictHead([1, 2], "mean", model.config.hidden_size, model.config.num_hidden_layers, positive="是",
                       negative="否")
    with torch.no_grad():
        head.mean.copy_(torch.randn(head.dim, generator=generator) * 0.1)
        head.weight.copy_(torch.randn(head.dim, generator=generator))
        head.bias.fill_(0.1)
    return head


def test_head_loss_is_the_answer_loss_plus_the_weighted_bce_of_the_accumulated_batch(tiny_model, embedded_tokenizer,
                                                                                       tmp_path):
    """With a verdict head the loss adds head_loss_weight x the head's mean BCE over the accumulated batch,
    computed from the states of the same forward pass; accumulation does not change it, and gradients reach
    the head and the model's layers below the head's."""
    from defect_judge.model.verdict_head import HEAD_MODULE, prompt_features

    model = copy.deepcopy(tiny_model)
    head = random_head(model)
    model.add_module(HEAD_MODULE, head)
    trainer = make_trainer(model, embedded_tokenizer, tmp_path, 5.0,
                           trainer_kwargs={"verdict_head": head, "head_loss_weight": 2.0})
    recs = records(3)
    micro, whole = head_batches(embedded_tokenizer, recs)
    fetched, weight_sum = trainer.get_batch_samples(iter(micro), 3, torch.device("cpu"))
    assert trainer._head_items.item() == 3
    model.zero_grad()
    accumulated = 0.0
    for batch in fetched:
        loss = trainer.compute_loss(model, batch, num_items_in_batch=weight_sum)
        loss.backward()
        accumulated += loss.item()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if ".layers.0." in n)
    with torch.no_grad():
        prompts = [list(f["input_ids"][:f["prompt_length"]]) for f in SupervisedDataset(
            fit_samples(embedded_tokenizer, recs, 4096)).features]
        logits = head(prompt_features(model, prompts, [1, 2], "mean"))
        labels = torch.tensor([1.0 if r.judgement == "是" else 0.0 for r in recs])
        expected = reference_loss(model, whole, 5.0) + 2.0 * F.binary_cross_entropy_with_logits(logits, labels)
    assert accumulated == pytest.approx(expected.item(), abs=1e-4)


def test_a_head_run_evaluates_and_selects_on_the_head_and_saves_it_beside_the_model(tiny_model, embedded_tokenizer,
                                                                                      tmp_path):
    """evaluate() reports the head's accuracy, ROC-AUC and loss, and accuracy_then_loss follows the head's
    accuracy; every save writes verdict_head.* and keeps the head out of the model's own weights; the
    best model's head is restored at the end."""
    from safetensors.torch import load_file as load_tensors

    from defect_judge.model.verdict_head import HEAD_MODULE, load_head

    model = copy.deepcopy(tiny_model)
    head = random_head(model, seed=1)
    model.add_module(HEAD_MODULE, head)
    dataset = SupervisedDataset(fit_samples(embedded_tokenizer, records(8), 4096), "是")
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
        folder = tmp_path / "out" / f"checkpoint-{step}"
        saved = load_head(folder)
        assert saved.layers == (1, 2) and not any(HEAD_MODULE in k for k in load_tensors(folder / "model.safetensors"))
    restored = load_head(best).state_tensors()
    assert all(torch.equal(head.state_tensors()[name], value) for name, value in restored.items())


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
    for folder in (out / "checkpoint-1", out / "checkpoint-2", out):
        assert load_head(folder).layers == (1,)
        assert not [k for k in load_tensors(folder / "model.safetensors") if "verdict_head" in k]
    best = json.loads((out / "best_checkpoint.json").read_text())
    assert best["verdict_head"] == "last@0.5" and best["finetuning_type"] == "full"


def test_training_above_the_head_keeps_the_probe_as_fitted(tmp_path, embedded_tokenizer):
    """--train_above_head with --verdict_head_loss_weight 0: LoRA only in the layers above the head's highest
    (the head's features do not move), and the head every checkpoint carries is the linear probe as fitted."""
    from safetensors.torch import load_file as load_tensors

    from defect_judge.model.verdict_head import load_head
    from helpers import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "tiny-4", embedded_tokenizer, layers=4)
    train = write_records(tmp_path / "train.jsonl", make_records(8))
    dev = write_records(tmp_path / "dev.jsonl", make_records(4, start=2))
    common = ["--model_path", model_dir, "--train_data", train, "--eval_data", dev, "--verdict_head", "mean@0.5",
              "--verdict_head_c_grid", "0.1", "--report_to", "none"]
    probe = run_script(SCRIPT, *common, "--output_dir", tmp_path / "probe", "--finetuning_type", "none", check=True)
    above = run_script(SCRIPT, *common, "--output_dir", tmp_path / "above", "--train_above_head",
                       "--verdict_head_loss_weight", "0", "--lora_rank", "4", "--max_steps", "2", "--save_steps", "1",
                       "--learning_rate", "1e-2", "--gradient_accumulation_steps", "1", check=True)
    assert "fine-tuning the top 2 of 4 layers, above the head's layer 2" in above.stderr and probe.returncode == 0
    fitted = load_head(tmp_path / "probe").state_tensors()
    for folder in (tmp_path / "above" / "checkpoint-1", tmp_path / "above" / "checkpoint-2", tmp_path / "above"):
        assert all(torch.equal(load_head(folder).state_tensors()[k], v) for k, v in fitted.items())
    adapter = load_tensors(tmp_path / "above" / "adapter_model.safetensors")
    assert adapter and all(".layers.2." in name or ".layers.3." in name for name in adapter)
    refused = run_script(SCRIPT, *common, "--output_dir", tmp_path / "x", "--train_above_head", "--trainable_layers",
                         "1")
    assert refused.returncode == 2 and "--train_above_head" in refused.stderr
