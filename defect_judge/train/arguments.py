"""train_lora.py's command line, the way TRL declares its scripts': five groups of flags as dataclasses, the last
transformers' own ``TrainingArguments`` with this task's additions, parsed by ``HfArgumentParser`` (the Trainer's
hundred flags come with it, which a settings block could not list); the defaults run_training_lora.sh holds, read
from it (``launcher_settings``); the checks a bad value fails in one line; what parsing resolves (the file evaluated
on, the run's name).
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from defect_judge.errors import InputError
from defect_judge.train.head_training import check_head_arguments
from defect_judge.train.heap import MAX_MMAP_THRESHOLD_MIB, MMAP_THRESHOLD_MIB
from defect_judge.train.launcher_settings import AUTO_SAVE_STEPS, LAUNCHER, launcher_settings
from defect_judge.train.lora import ALL_LINEAR
from defect_judge.train.probe import DEFAULT_C_GRID, DEFAULT_SHRINKAGE_GRID, PROBES
from defect_judge.train.trainer import ACCURACY_THEN_LOSS

log = logging.getLogger("fine_tuning")


@dataclass(frozen=True)
class ModelArguments:
    model_path: str = field(default=None, metadata={"help": "Base model folder (Hugging Face format, safetensors)."})
    tokenizer_path: str = field(default=None, metadata={"help": "Tokenizer folder (default: the model folder)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with the model (only "
                                                                       "for folders you trust)."})
    allow_pickle: bool = field(default=False, metadata={"help": "Load pickle (.bin) weights when the folder has no "
                                                                "safetensors (pickle can run code)."})


@dataclass(frozen=True)
class DataArguments:
    train_data: str = field(default=None, metadata={"help": "Chat JSONL written by dataset/convert_and_split.py."})
    eval_data: str = field(default=None, metadata={
        "help": "Chat JSONL evaluated every --eval_steps (= --save_steps) for early stopping and the best checkpoint: "
                "the dev split (dataset/dev.jsonl), never the test split you report."})
    test_data: str = field(default=None, metadata={
        "help": "The test split. Used for evaluation only when --eval_data is not given, with a warning: the "
                "checkpoint is then chosen on the data you report, and that accuracy is optimistic."})
    max_length: int = field(default=None, metadata={"help": "Maximum tokens of a sample; a longer one has the end "
                                                            "of its event cut, never the answer."})
    eval_max_samples: int = field(default=0, metadata={
        "help": "Evaluate on at most this many samples drawn from --eval_data (0: all)."})
    train_on: str = field(default="answer", metadata={
        "choices": ["answer", "judgement"],
        "help": "answer: the whole answer (judgement and reason, the judgement weighted by --key_token_weight); "
                "judgement: only 判断:{judgement}, the reason cut from the sequence (cheaper; no reason is taught)."})
    pair_batches: bool = field(default=False, metadata={
        "help": "Keep twins (training records sharing a pair_id) in the same micro-batch, so each gradient "
                "sees a defective sample next to its fix; --per_device_train_batch_size then counts pairs."})


@dataclass(frozen=True)
class TrainedWeightsArguments:
    """Which weights training changes: LoRA adapters, all of them (or the top layers'), or none (a probe only).
    LORA_RANK and LORA_ALPHA are run_training_lora.sh's: the parser gives their defaults (``build_parser``)."""
    finetuning_type: str = field(default="lora", metadata={
        "choices": ["lora", "full", "none"],
        "help": "LoRA adapters, all parameters, or none: only a --verdict_head is fitted on the frozen model (a "
                "linear probe, no fine-tuning steps; OUTPUT_DIR then holds the head alone)."})
    lora_rank: int = field(default=None, metadata={"help": "LoRA rank r."})
    lora_alpha: int = field(default=None, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    # peft's default: dropout would keep a copy of every adapted layer's input
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(default=ALL_LINEAR, metadata={
        "help": "'all-linear' (every linear layer but the output layer) or a comma-separated list of module "
                "names (q_proj,v_proj)."})
    trainable_layers: float = field(default=0, metadata={
        "help": "Train only the top N transformer layers (LoRA adapters there, or those layers' weights in full "
                "fine-tuning), or that fraction of them for N below 1 (0.5: the top half); the backward pass then "
                "stops below them. 0: every layer."})


@dataclass(frozen=True)
class VerdictHeadArguments:
    verdict_head: str = field(default=None, metadata={
        "help": "Read the verdict from a head over the model's hidden states instead of the generated token: "
                "POOLING@LAYERS, POOLING mean (over the prompt) or last (its last token), LAYERS indices or "
                "fractions of the depth, several concatenated (mean@0.5, mean@8,12,16,20,24). It is fitted on "
                "the frozen model first (a linear probe), then trained with the model (the answer's loss + "
                "--verdict_head_loss_weight x its BCE); dev evaluation and the best checkpoint use its accuracy. "
                "Empty: no head."})
    verdict_head_loss_weight: float = field(default=1.0, metadata={
        "help": "Weight of the head's binary cross-entropy in the loss, beside the answer's."})
    verdict_head_learning_rate: float | None = field(default=None, metadata={
        "help": "The head's learning rate (default: --learning_rate)."})
    verdict_head_dropout: float = field(default=0.0, metadata={
        "help": "Dropout on the head's standardised features while training (0: none)."})
    verdict_head_probe: str = field(default="logistic", metadata={
        "choices": list(PROBES),
        "help": "The linear probe the head is fitted as, on standardised features: logistic (logistic regression, "
                "regularised by C) or lda (linear discriminant analysis with shrinkage, on the features' principal "
                "components: it discounts the directions the code's content moves most)."})
    verdict_head_choose_on: str = field(default="cv", metadata={
        "choices": ["cv", "dev"], "aliases": ["--verdict_head_choose_c"],  # its name before it chose LDA's too
        "help": "How the probe's regularisation (C, or lda's shrinkage) is chosen: cv (cross-validation over "
                "whole pairs on the training split) or dev (the dev split's accuracy)."})
    verdict_head_c_grid: list[float] = field(default_factory=lambda: list(DEFAULT_C_GRID), metadata={
        "help": "The logistic probe's candidate C values."})
    verdict_head_shrinkage_grid: list[float] = field(default_factory=lambda: list(DEFAULT_SHRINKAGE_GRID), metadata={
        "help": "The lda probe's candidate shrinkage values, in [0, 1]."})
    train_above_head: bool = field(default=False, metadata={
        "help": "Fine-tune only the layers above the head's highest (--trainable_layers follows): the head's "
                "features stay those it was fitted on, and the model learns to write the answer above them. With "
                "--verdict_head_loss_weight 0 the head stays the linear probe as fitted."})
    verdict_head_reads_base: bool = field(default=False, metadata={
        "help": "The head reads the base model, the LoRA adapter switched off, in training and in evaluation: it "
                "stays the linear probe as fitted (needs --verdict_head_loss_weight 0), and LoRA may train any "
                "layers (--trainable_layers) to write the answer without moving the head's features."})


@dataclass
class FineTuningArguments(TrainingArguments):
    """transformers' TrainingArguments with this task's defaults, plus the loss, early-stopping and output-dir
    options. The settings run_training_lora.sh holds (LEARNING_RATE, MAX_EPOCHS, ...) have no default here: the
    parser takes the launcher's (``launcher_settings``)."""
    output_dir: str | None = field(default=None, metadata={"help": "Where checkpoints, the best model, "
                                                                    "best_checkpoint.json and the curve go."})
    learning_rate: float = field(default=None, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=None, metadata={
        "help": "MAX_EPOCHS of the document; early stopping usually ends training first."})
    save_steps: float = field(default=None, metadata={"help": "Checkpoint and evaluate every this many optimizer "
                                                              "steps."})
    per_device_train_batch_size: int = field(default=None, metadata={"help": "Samples per device and micro-batch."})
    gradient_accumulation_steps: int = field(default=None, metadata={"help": "Micro-batches per optimizer step."})
    eval_strategy: IntervalStrategy | str = field(default="steps", metadata={
        "help": "When to evaluate on --eval_data: steps (every --eval_steps, = --save_steps), epoch or no."})
    load_best_model_at_end: bool = field(default=True, metadata={
        "help": "Keep the checkpoint best by --metric_for_best_model as the final model."})
    # eval_loss is the document's choice; accuracy_then_loss (judgement accuracy under teacher forcing, ties
    # broken by the lower eval_loss) is what a judge is for, and what users ask for.
    metric_for_best_model: str | None = field(default="eval_loss", metadata={
        "help": "The checkpoint kept as the best: eval_loss, or accuracy_then_loss (judgement accuracy on "
                "--eval_data, ties broken by the lower eval_loss)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept: the best and the newest."})
    logging_steps: float = field(default=10, metadata={"help": "Log the training loss every this many steps."})
    logging_first_step: bool = field(default=True, metadata={"help": "Log the first step's loss too."})
    report_to: None | str | list[str] = field(default="wandb", metadata={
        "help": "Where metrics go: wandb (WANDB_MODE=offline works without network), none, ..."})
    # The chat records' columns are read by the collator, not by the model's forward().
    remove_unused_columns: bool = field(default=False, metadata={"help": "Drop dataset columns the model's "
                                                                         "forward() does not take."})
    restore_callback_states_from_checkpoint: bool = field(default=True, metadata={
        "help": "A resumed run restores the callbacks' state (the early-stopping counter)."})
    # The judgement is 1-2 of the ~100 answer tokens: at weight 1 it is ~2% of the loss and the reason text
    # dominates. At 5 it is ~10%: the decision is stressed without drowning the reason and the answer format.
    key_token_weight: float = field(default=5.0, metadata={
        "help": "Loss weight of the judgement tokens (判断:{judgement}); every other answer token weighs 1."})
    loss_chunk_size: int = field(default=1024, metadata={
        "help": "Trained tokens per lm_head/cross-entropy chunk: bounds the float32 logits in memory."})
    # 10 evaluations = 200 optimizer steps at save_steps 20: enough to ride out noise in a small eval set.
    early_stopping_patience: int = field(default=10, metadata={
        "help": "Stop after this many evaluations without improvement (0: never)."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Start over in an OUTPUT_DIR that holds checkpoints of an earlier run (deletes them)."})
    # why and what it costs: defect_judge/train/heap.py
    cpu_heap_mmap_threshold_mb: int = field(default=MMAP_THRESHOLD_MIB, metadata={
        "help": "CPU training: allocations of this many MiB or more get their own mmap (less peak memory, "
                "slower steps), up to 32; 0 keeps the C library's default."})

    def __post_init__(self):
        if not self.output_dir:
            raise InputError("--output_dir is required")
        if self.eval_steps is None:
            self.eval_steps = self.save_steps  # evaluate exactly at each checkpoint
        if self.greater_is_better is None and str(self.metric_for_best_model).endswith(ACCURACY_THEN_LOSS):
            self.greater_is_better = True  # transformers would guess "lower is better" from the name's "loss"
        if not torch.cuda.is_available():
            self.use_cpu = True  # also makes DeepSpeed's CPU ranks use gloo
        elif torch.cuda.is_bf16_supported() and not self.fp16:
            self.bf16 = True
        if "no" in (str(getattr(self.save_strategy, "value", self.save_strategy)),
                    str(getattr(self.eval_strategy, "value", self.eval_strategy))):
            self.load_best_model_at_end = False  # nothing to choose from
        super().__post_init__()


class OneLineErrorParser(HfArgumentParser):
    """argparse prints its whole usage (over a hundred lines with every TrainingArguments flag) above an
    error; one line that names the flag is what a user needs."""

    def error(self, message: str):
        raise InputError(f"{message} (--help lists the flags)")

    @staticmethod
    def _parse_dataclass_field(parser, field):
        HfArgumentParser._parse_dataclass_field(parser, field)
        # transformers gives the --no_X complement of a true-by-default flag X's own help and "(default: False)":
        # read as the opposite of what it does
        for action in parser._actions:
            if f"--no_{field.name}" in action.option_strings:
                action.help, action.default = f"Turn --{field.name} off (it is on by default).", argparse.SUPPRESS


# Settings that must be positive numbers; checked before anything is loaded or created.
POSITIVE_SETTINGS = ("learning_rate", "num_train_epochs", "save_steps", "per_device_train_batch_size",
                     "gradient_accumulation_steps", "per_device_eval_batch_size", "logging_steps", "eval_steps")


# The launcher's paths are relative to its own folder and name the document's machine: given on the command line here.
LAUNCHER_PATHS = ("model_path", "train_data", "output_dir", "deepspeed")


def build_parser(launcher: str | os.PathLike = LAUNCHER, description: str | None = None) -> OneLineErrorParser:
    """The flags of the five groups below and every TrainingArguments flag, with the defaults ``launcher`` holds
    (run_training_lora.sh's LEARNING_RATE is --learning_rate's default). HfArgumentParser, not the settings block
    the other scripts use: the Trainer's hundred flags come with it, parsed into the TrainingArguments it takes."""
    parser = OneLineErrorParser((ModelArguments, DataArguments, TrainedWeightsArguments, VerdictHeadArguments,
                                 FineTuningArguments), description=description,
                                epilog="Add --debug to show the full traceback of an error.")
    held = {s.flag: s for s in launcher_settings(launcher).values() if s.flag and s.flag not in LAUNCHER_PATHS}
    defaults = {flag: setting.default for flag, setting in held.items()}  # text: argparse gives it the flag's type
    if defaults.get("save_steps") == AUTO_SAVE_STEPS:  # the launcher counts it; run directly, transformers' default
        defaults["save_steps"] = TrainingArguments.__dataclass_fields__["save_steps"].default
    parser.set_defaults(**defaults)
    for action in parser._actions:
        if action.dest in held:
            action.help = f"{action.help} [{held[action.dest].name} in run_training_lora.sh]"
    return parser


def parse_args(argv=None, launcher: str | os.PathLike = LAUNCHER, description: str | None = None) -> tuple[
        ModelArguments, DataArguments, TrainedWeightsArguments, VerdictHeadArguments, FineTuningArguments]:
    """The checked settings, with what they imply resolved: the file evaluated on (``eval_file``) and the run's
    name (``default_run_name``)."""
    parser = build_parser(launcher, description)
    try:
        model_args, data_args, weights_args, head_args, train_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # TrainingArguments' own checks (a scheduler name, conflicting flags, ...)
        raise InputError(str(error).strip().splitlines()[0]) from None
    for name, value in (("--model_path", model_args.model_path), ("--train_data", data_args.train_data)):
        if not value:
            raise InputError(f"{name} is required")
    for name in POSITIVE_SETTINGS:
        value = getattr(train_args, name)
        if value is not None and not value > 0:
            raise InputError(f"--{name} must be greater than 0, got {value}")
    if not 0 <= train_args.cpu_heap_mmap_threshold_mb <= MAX_MMAP_THRESHOLD_MIB:
        raise InputError(f"--cpu_heap_mmap_threshold_mb must be 0 (the C library's default) to "
                         f"{MAX_MMAP_THRESHOLD_MIB}, got {train_args.cpu_heap_mmap_threshold_mb}")
    if weights_args.finetuning_type == "lora" and (weights_args.lora_rank < 1 or weights_args.lora_alpha <= 0):
        raise InputError(f"--lora_rank must be at least 1 and --lora_alpha greater than 0, got "
                         f"{weights_args.lora_rank} and {weights_args.lora_alpha}")
    data_args = replace(data_args, eval_data=eval_file(data_args, train_args))
    if data_args.max_length < 16:
        raise InputError(f"--max_length must be at least 16, got {data_args.max_length}")
    check_head_arguments(head_args, weights_args)
    if train_args.run_name is None or train_args.run_name == train_args.output_dir:
        # a new TrainingArguments (its own checks run again): the Trainer and wandb only ever see this one
        train_args = replace(train_args, run_name=default_run_name(weights_args, data_args, head_args, train_args))
    return model_args, data_args, weights_args, head_args, train_args


def eval_file(data_args: DataArguments, train_args: FineTuningArguments) -> str | None:
    """The file evaluated during training: --eval_data, or else (with a warning) --test_data; None when training
    does not evaluate."""
    if not evaluates(train_args) or data_args.eval_data:
        return data_args.eval_data
    if not data_args.test_data:
        raise InputError("--eval_data is required (the dev split; or pass --eval_strategy no)")
    log.warning("no --eval_data: evaluating, early stopping and choosing the best checkpoint on the TEST split "
                "%s; an accuracy later measured on it is optimistic (write a dev split with "
                "dataset/convert_and_split.py and pass --eval_data)", data_args.test_data)
    return data_args.test_data


def evaluates(train_args) -> bool:
    return str(getattr(train_args.eval_strategy, "value", train_args.eval_strategy)) != "no"


def default_run_name(weights_args: TrainedWeightsArguments, data_args: DataArguments, head_args: VerdictHeadArguments,
                     train_args: FineTuningArguments) -> str:
    adapter = (f"lora-r{weights_args.lora_rank}-a{weights_args.lora_alpha}" if weights_args.finetuning_type == "lora"
               else weights_args.finetuning_type)
    head = f"-head-{head_args.verdict_head}" if head_args.verdict_head else ""
    return (f"{adapter}-lr{train_args.learning_rate:g}-len{data_args.max_length}-kw{train_args.key_token_weight:g}"
            f"{head}-{Path(train_args.output_dir).name}")
