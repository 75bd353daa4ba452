"""defect_judge/train/samples.py on the embedded tokenizer and chat template: labels and the key tokens,
truncation of the event, padding, length statistics, the judgement-only cut (its loss on a tiny real Llama),
and twin pairs kept in one micro-batch by the real Trainer's sampler."""
from __future__ import annotations

import copy

import pytest
import torch

from defect_judge.data.schema import Record
from defect_judge.errors import InputError
from defect_judge.model.chat import TRUNCATION_MARK
from defect_judge.templates import event_char_span
from defect_judge.train.samples import (IGNORE_INDEX, PaddingCollator, PairedDataset,
                                        SupervisedDataset, fit_file, fit_sample, fit_samples, judgement_only,
                                        length_stats, mark_trained_text, sample_features)
from defect_judge.train.trainer import WeightedLossTrainer
from helpers import SAMPLES, batch_of, chat_records, make_records, reference_loss, write_records

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


# ------------------------------------------------------------------- labels


@pytest.mark.parametrize("template", ["embedded", "qwen2.5"])
def test_labels_are_the_answer_and_its_end_of_turn_token(embedded_tokenizer, template):
    tokenizer = embedded_tokenizer
    if template == "qwen2.5":
        tokenizer = copy.deepcopy(embedded_tokenizer)
        tokenizer.chat_template = QWEN25_TEMPLATE
    record = chat_records(1)[0]
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
    record = chat_records(1)[0]
    view = mark_trained_text(embedded_tokenizer, fit_sample(embedded_tokenizer, record, 4096).encoded)
    judgement, reason = SAMPLES[0][2], SAMPLES[0][3]
    assert f"<|im_start|>assistant\n[[判断:{{{{{judgement}}}}}\n\n原因：{reason}<|im_end|>]]" in view
    assert view.count("[[") == 1 and view.count("{{") == 1


def test_collator_pads_without_training_the_padding(embedded_tokenizer):
    batch = batch_of(embedded_tokenizer, chat_records(1) + chat_records(1, event_repeat=3))
    short, long = batch["attention_mask"].sum(dim=1).tolist()
    assert short < long == batch["input_ids"].shape[1]
    assert (batch["input_ids"][0, short:] == embedded_tokenizer.pad_token_id).all()
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all() and not batch["key_mask"][0, short:].any()


def test_length_stats_nearest_rank():
    assert length_stats([5, 1, 3, 2, 4]) == {"min": 1, "median": 3, "p95": 5, "max": 5}
    assert length_stats(list(range(1, 101))) == {"min": 1, "median": 50, "p95": 95, "max": 100}


# --------------------------------------------------------------- truncation


def test_truncation_cuts_the_event_and_keeps_the_answer(embedded_tokenizer):
    record = chat_records(1, event_repeat=40)[0]
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
    record = chat_records(1)[0]
    answer_tokens = sum(fit_sample(embedded_tokenizer, record, 4096).encoded.trained)
    with pytest.raises(InputError) as caught:
        fit_sample(embedded_tokenizer, record, answer_tokens + 10, path="train.jsonl")
    message = str(caught.value)
    assert record.id in message and "train.jsonl" in message and "max_length" in message


@pytest.mark.parametrize("written", ["判断：是", "**判断**:是"])
def test_an_answer_labelled_but_not_in_the_trained_format_is_one_line(embedded_tokenizer, written):
    """The schema reads 判断：是 as the judgement 是, but training teaches 判断:是 exactly: it says so for the
    sample (with a long event, too, where the cut encodes it again) instead of a traceback."""
    for record in (chat_records(1)[0], chat_records(1, event_repeat=200)[0]):
        text = list(record.text)
        text[-1] = {**text[-1], "content": text[-1]["content"].replace("判断:是", written).replace("判断:否", written)}
        with pytest.raises(InputError) as caught:
            fit_sample(embedded_tokenizer, Record(record.id, record.subtype, tuple(text)), 256, path="train.jsonl")
        message = str(caught.value)
        assert "train.jsonl" in message and record.id in message and f"text[{len(text) - 1}].content" in message
        assert "判断:{judgement}" in message and "\n" not in message


# ------------------------------------------------------ cheaper and paired training


def test_judgement_only_cuts_the_reason_and_keeps_the_judgement_loss(tiny_model, embedded_tokenizer):
    """--train_on judgement: the sequence ends with the judgement; its loss is exactly the loss the full
    sequence gives when only 判断:{judgement} is trained (a causal model never sees what follows)."""
    fitted = fit_samples(embedded_tokenizer, chat_records(3), 4096)
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


def test_pair_batches_keep_twins_in_one_micro_batch(tmp_path, tiny_model, embedded_tokenizer):
    """--pair_batches: an item is a pair; shuffled by the Trainer's own sampler, every micro-batch holds
    whole pairs (and a lone sample alone), and the collator pads them into one batch."""
    from transformers import TrainingArguments

    rows = chat_records(7)
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


def test_a_file_is_fitted_whole_or_as_a_seeded_subset_in_file_order(embedded_tokenizer, tmp_path):
    """--eval_max_samples: a subset drawn with the seed, the same for the same seed, kept in file order;
    --train_on judgement: every sample cut after its judgement."""
    path = write_records(tmp_path / "dev.jsonl", make_records(8))
    whole = fit_file(embedded_tokenizer, path, 4096)
    assert [s.id for s in whole] == [r.id for r in chat_records(8)]
    subset = fit_file(embedded_tokenizer, path, 4096, max_samples=3, seed=7)
    ids = [s.id for s in whole]
    assert len(subset) == 3 and [s.id for s in subset] == sorted((s.id for s in subset), key=ids.index)
    assert [s.id for s in fit_file(embedded_tokenizer, path, 4096, max_samples=3, seed=7)] == [s.id for s in subset]
    assert len(fit_file(embedded_tokenizer, path, 4096, max_samples=8)) == 8
    cut = fit_file(embedded_tokenizer, path, 4096, train_on="judgement")
    assert [s.encoded for s in cut] == [judgement_only(s).encoded for s in whole]
