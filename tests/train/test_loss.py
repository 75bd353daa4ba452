"""defect_judge/train/loss.py on a tiny real Llama: the key-token-weighted chunked loss against the plain
reference (values and gradients), through LoRA adapters, and the judgement accuracy it reports."""
from __future__ import annotations

import copy

import pytest
import torch

from defect_judge.train.loss import final_hidden_states, weighted_token_loss
from helpers import assert_grads_close, batch_of, chat_records, grads, reference_loss


@pytest.mark.parametrize("key_token_weight,chunk_size", [(1.0, 1024), (5.0, 1024), (5.0, 7), (0.25, 3)])
def test_weighted_chunked_loss_matches_the_plain_reference(tiny_model, embedded_tokenizer, key_token_weight,
                                                           chunk_size):
    batch = batch_of(embedded_tokenizer, chat_records(3))
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
    batch = batch_of(embedded_tokenizer, chat_records(2))
    parts = weighted_token_loss(final_hidden_states(model, batch), batch["labels"], batch["key_mask"],
                                model.get_output_embeddings(), 5.0, 16)
    (parts.weighted_sum / parts.weight_sum).backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)
    with torch.no_grad():
        expected = reference_loss(model, batch, 5.0)
    torch.testing.assert_close((parts.weighted_sum / parts.weight_sum).detach(), expected, atol=1e-5, rtol=0)


def test_judgement_accuracy_is_argmax_over_the_key_tokens(tiny_model, embedded_tokenizer):
    batch = batch_of(embedded_tokenizer, chat_records(4))
    with torch.no_grad():
        parts = weighted_token_loss(final_hidden_states(tiny_model, batch), batch["labels"], batch["key_mask"],
                                    tiny_model.get_output_embeddings(), 5.0, 5, with_predictions=True)
        predicted = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
    key = batch["key_mask"][:, 1:]
    expected = [bool((predicted[row, :-1][key[row]] == batch["labels"][row, 1:][key[row]]).all()) for row in range(4)]
    assert parts.has_judgement.tolist() == [True] * 4
    assert parts.judgement_correct.tolist() == expected
