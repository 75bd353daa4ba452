"""defect_judge/train/head_training.py: the verdict head's settings refused in train_lora.py's words, the two
judgements it learns, the layers above it, and the head attached to the model."""
from __future__ import annotations

from dataclasses import replace

import pytest

from defect_judge.errors import InputError
from defect_judge.model.loading import load_causal_lm
from defect_judge.model.verdict_head import HEAD_MODULE, VerdictHead
from defect_judge.train.arguments import TrainedWeightsArguments, VerdictHeadArguments
from defect_judge.train.head_training import (attach_head, check_head_arguments, head_classes, layers_above_head,
                                              probe_input_error)
from defect_judge.train.probe import ProbeDataError
from defect_judge.train.samples import fit_sample
from helpers import build_tiny_model, chat_records

HEAD = VerdictHeadArguments(verdict_head="mean@0.5")
LORA = TrainedWeightsArguments(finetuning_type="lora", lora_rank=4, lora_alpha=4)


@pytest.mark.parametrize("head,weights,message", [
    (VerdictHeadArguments(verdict_head=""), replace(LORA, finetuning_type="none"), "--finetuning_type none fits a"),
    (VerdictHeadArguments(verdict_head="mean@x"), LORA, "--verdict_head"),
    (replace(HEAD, verdict_head_dropout=1.0), LORA, "--verdict_head_dropout must be in [0, 1), got 1.0"),
    (replace(HEAD, verdict_head_loss_weight=-1), LORA, "--verdict_head_loss_weight must be 0 or more"),
    (replace(HEAD, verdict_head_shrinkage_grid=[1.5]), LORA, "--verdict_head_shrinkage_grid"),
    (replace(HEAD, verdict_head_reads_base=True), LORA, "--verdict_head_reads_base keeps the head"),
    (replace(HEAD, verdict_head_reads_base=True, verdict_head_loss_weight=0), replace(LORA, finetuning_type="full"),
     "--verdict_head_reads_base keeps the head"),
    (replace(HEAD, train_above_head=True), replace(LORA, trainable_layers=2), "--train_above_head needs"),
])
def test_settings_that_cannot_work_are_refused_by_their_flag(head, weights, message):
    with pytest.raises(InputError) as refused:
        check_head_arguments(head, weights)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_settings_that_work_pass():
    check_head_arguments(HEAD, LORA)
    check_head_arguments(replace(HEAD, verdict_head_reads_base=True, verdict_head_loss_weight=0), LORA)
    check_head_arguments(VerdictHeadArguments(verdict_head=""), LORA)  # no head: nothing of it to check


def test_the_probes_data_errors_are_said_in_train_loras_flags():
    grid = probe_input_error(ProbeDataError("too few samples to choose C", "grid", 0.1), "logistic")
    assert "--verdict_head_c_grid 0.1" in str(grid) and "--verdict_head_choose_on dev" in str(grid)
    assert grid.field == "verdict_head_c_grid"
    assert probe_input_error(ProbeDataError("no dev split", "choose_on"), "lda").field == "verdict_head_choose_on"
    assert probe_input_error(ProbeDataError("one judgement", "judgement"), "lda").field == "judgement"


def test_the_head_learns_the_training_splits_two_judgements(embedded_tokenizer, tmp_path):
    samples = [fit_sample(embedded_tokenizer, record, 512) for record in chat_records(4)]
    assert head_classes(samples, samples[:2], tmp_path / "train.jsonl", tmp_path / "dev.jsonl") == ("是", "否")
    assert head_classes(samples[:1], [], tmp_path / "train.jsonl", None) == ("是", "否")  # 否 is 是's partner
    odd = [replace(s, judgement="可能") for s in samples]
    with pytest.raises(InputError, match="needs two judgements .* the training split has 可能"):
        head_classes(odd, [], tmp_path / "train.jsonl", None)
    stray = replace(samples[0], judgement="可能", id="odd")
    with pytest.raises(InputError, match="this sample's reference judgement is 可能") as refused:
        head_classes(samples, [stray], tmp_path / "train.jsonl", tmp_path / "dev.jsonl")
    assert "dev.jsonl" in str(refused.value) and "odd" in str(refused.value)


def test_the_head_is_attached_as_a_submodule_and_frozen_when_it_reads_the_base_model(embedded_tokenizer, tmp_path):
    model = load_causal_lm(build_tiny_model(tmp_path / "tiny", embedded_tokenizer, layers=4))

    def head(layer: int, reads_base: bool = False) -> VerdictHead:
        return VerdictHead([layer], "mean", model.config.hidden_size, model.config.num_hidden_layers, positive="是",
                           negative="否", reads_base=reads_base)

    assert layers_above_head(head(2)) == 2
    trained = head(2)
    attach_head(model, trained, dropout=0.1, loss_weight=1.0)
    assert getattr(model, HEAD_MODULE) is trained and trained.dropout == 0.1
    assert all(p.requires_grad for p in trained.parameters())
    on_base = head(2, reads_base=True)
    attach_head(model, on_base, dropout=0.0, loss_weight=0.0)
    assert getattr(model, HEAD_MODULE) is on_base and not any(p.requires_grad for p in on_base.parameters())
    with pytest.raises(InputError, match="reads the top layer"):
        layers_above_head(head(4))
