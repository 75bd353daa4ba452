"""The verdict head's part of a fine-tuning run: its settings checked, the two judgements it tells apart, the head
the run starts from (the probe fitted on the frozen model, or a resumed checkpoint's), and the head attached to the
model as a submodule (trainable unless it reads the base model).

A fresh run starts from the linear probe (``linear_probe.fit_head``); ``trainer.py`` trains the attached head
with the model and saves it beside every checkpoint.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

from defect_judge.errors import InputError
from defect_judge.data.labels import judgement_vocabulary, two_classes
from defect_judge.model.hidden_states import causal_lm
from defect_judge.model.head_files import HEAD_CONFIG_FILE, has_head
from defect_judge.model.verdict_head import HEAD_MODULE, HeadSpec, VerdictHead, load_head
from defect_judge.model.judge_card import JudgeCard
from defect_judge.train.linear_probe import fit_head
from defect_judge.train.probe import PROBES, ProbeDataError, probe_grid
from defect_judge.train.samples import FittedSample

log = logging.getLogger(__name__)

# train_lora.py's flags for what the probe's maths (probe.py) names no flag for: each probe's candidates, and
# where its regularisation is chosen
GRID_FLAGS = {"logistic": "--verdict_head_c_grid", "lda": "--verdict_head_shrinkage_grid"}
CHOOSE_ON_FLAG = "--verdict_head_choose_on"


def check_head_arguments(head_args, weights_args) -> None:
    """train_lora.py's verdict-head settings (its VerdictHeadArguments, and TrainedWeightsArguments), refused in one
    line each where they cannot work."""
    if head_args.verdict_head:
        HeadSpec.parse(head_args.verdict_head, field="--verdict_head")
    elif weights_args.finetuning_type == "none":
        raise InputError("--finetuning_type none fits a verdict head only: pass --verdict_head (e.g. mean@0.5)")
    if not 0 <= head_args.verdict_head_dropout < 1:
        raise InputError(f"--verdict_head_dropout must be in [0, 1), got {head_args.verdict_head_dropout}")
    if head_args.verdict_head_loss_weight < 0:
        raise InputError(f"--verdict_head_loss_weight must be 0 or more, got {head_args.verdict_head_loss_weight}")
    for probe in PROBES:
        problem = PROBES[probe].grid_problem(probe_grid(probe, head_args.verdict_head_c_grid,
                                                        head_args.verdict_head_shrinkage_grid))
        if problem:
            raise InputError(f"{GRID_FLAGS[probe]} {problem}")
    if head_args.verdict_head_reads_base and not (head_args.verdict_head and weights_args.finetuning_type == "lora"
                                                  and head_args.verdict_head_loss_weight == 0):
        raise InputError("--verdict_head_reads_base keeps the head on the base model as fitted: it needs a "
                         "--verdict_head, --finetuning_type lora (an adapter to switch off) and "
                         "--verdict_head_loss_weight 0")
    if head_args.train_above_head and (not head_args.verdict_head or weights_args.trainable_layers):
        raise InputError("--train_above_head needs a --verdict_head and sets the trainable layers itself: drop "
                         "--trainable_layers")


def probe_input_error(error: ProbeDataError, probe: str) -> InputError:
    """Data the ``probe`` cannot be fitted on, said in train_lora.py's flags."""
    if error.setting == "grid":
        flag = GRID_FLAGS[probe]
        return InputError(f"{error}: give a single value ({flag} {error.value:g}) or choose it on dev "
                          f"({CHOOSE_ON_FLAG} dev)", field=flag.lstrip("-"))
    return InputError(str(error), field=CHOOSE_ON_FLAG.lstrip("-") if error.setting == "choose_on" else error.setting)


def head_classes(train_samples: Sequence[FittedSample], eval_samples: Sequence[FittedSample],
                 train_path: str | os.PathLike, eval_path: str | os.PathLike | None) -> tuple[str, str]:
    """(defective, clean): the two judgements of the training split, which a verdict head tells apart; every
    training and eval sample must carry one of them."""
    classes = two_classes(judgement_vocabulary(s.judgement for s in train_samples if s.judgement is not None))
    if classes is None:
        found = sorted({s.judgement for s in train_samples if s.judgement is not None})
        raise InputError(f"a verdict head needs two judgements (defective / clean), the training split has "
                         f"{'/'.join(found) or 'none'}", path=train_path, field="text")
    for samples, path in ((train_samples, train_path), (eval_samples, eval_path)):
        wrong = next((s for s in samples if s.judgement not in classes), None)
        if wrong is not None:
            raise InputError(f"a verdict head learns {classes[0]}/{classes[1]}, this sample's reference judgement is "
                             f"{wrong.judgement or 'missing'}", path=path, sample=wrong.id, field="text")
    return classes


def resumed_head(resume: str | os.PathLike, spec: HeadSpec, *, reads_base: bool = False) -> VerdictHead:
    """The head of the checkpoint a run resumes from, which must be the ``--verdict_head`` asked for, reading
    the same model (``--verdict_head_reads_base``)."""
    if not has_head(resume):
        raise InputError(f"--verdict_head {spec}: the checkpoint to resume has no {HEAD_CONFIG_FILE} (it was "
                         f"trained without a head)", path=resume)
    head = load_head(resume)
    if head.spec != str(spec):
        raise InputError(f"--verdict_head {spec}: the checkpoint to resume holds a head {head.spec}", path=resume)
    if head.reads_base != reads_base:
        raise InputError(f"--verdict_head_reads_base {str(reads_base).lower()}: the checkpoint to resume holds a head "
                         f"that reads {'the base model' if head.reads_base else 'the fine-tuned model'}", path=resume)
    log.info("resuming the %s", head.describe())
    return head


def starting_head(model_args, data_args, head_args, device, train_samples: Sequence[FittedSample],
                  eval_samples: Sequence[FittedSample], classes: tuple[str, str], resume: str | None,
                  card: JudgeCard) -> VerdictHead:
    """The head training starts from (train_lora.py's settings): a resumed checkpoint's, or the linear probe fitted
    on the frozen model; every verdict_head.json the run saves carries the judge ``card``."""
    spec = HeadSpec.parse(head_args.verdict_head, field="--verdict_head")
    if resume is not None:
        head = resumed_head(resume, spec, reads_base=head_args.verdict_head_reads_base)
    else:
        try:
            head = fit_head(model_args.model_path, spec, train_samples, eval_samples, positive=classes[0],
                            negative=classes[1], train_path=data_args.train_data, dev_path=data_args.eval_data,
                            device=device, trust_remote_code=model_args.trust_remote_code,
                            allow_pickle=model_args.allow_pickle, probe=head_args.verdict_head_probe,
                            grid=probe_grid(head_args.verdict_head_probe, head_args.verdict_head_c_grid,
                                            head_args.verdict_head_shrinkage_grid),
                            choose_on=head_args.verdict_head_choose_on)
        except ProbeDataError as error:
            raise probe_input_error(error, head_args.verdict_head_probe) from None
        head.reads_base = head_args.verdict_head_reads_base
    head.card = card.to_json()
    return head


def layers_above_head(head: VerdictHead) -> int:
    """How many layers lie above the head's highest (``--train_above_head`` fine-tunes those only)."""
    above = head.num_hidden_layers - max(head.layers)
    if above < 1:
        raise InputError(f"--train_above_head: the head {head.spec} reads the top layer, so there is no layer above it "
                         f"to train")
    log.info("--train_above_head: fine-tuning the top %d of %d layers, above the head's layer %d", above,
             head.num_hidden_layers, max(head.layers))
    return above


def attach_head(model, head: VerdictHead, *, dropout: float, loss_weight: float) -> None:
    """The head becomes a submodule of the causal LM, trainable unless it reads the base model: the optimizer,
    DeepSpeed and the checkpoints then handle it with the model."""
    head.dropout = dropout
    head.requires_grad_(not head.reads_base)  # a head on the base model stays as fitted
    causal_lm(model).add_module(HEAD_MODULE, head)
    if head.reads_base:
        log.info("the %s is fixed: loss = the answer's; it judges dev with the adapter off", head.describe())
    else:
        log.info("training with the %s: loss = answer + %g x head BCE", head.describe(), loss_weight)
