"""Fine-tune a code LLM to judge software defects: LoRA (default) or full-parameter.

Normally started by run_training_lora.sh under the DeepSpeed launcher:

    deepspeed --num_gpus 8 train_lora.py --model_path /data/Qwen2.5-Coder-7B-Instruct/ \\
        --train_data ../dataset/train.jsonl --eval_data ../dataset/dev.jsonl \\
        --output_dir /data/qwen_instruct_lora_finetuned_0401 --deepspeed ../ds_config_lora.json

It also runs as one plain process (`python train_lora.py ...`, no --deepspeed).
Every transformers TrainingArguments flag works as well (see --help).

Stages: check OUTPUT_DIR (refuse to overwrite, or find the checkpoint to resume)
-> tokenize the chat JSONL (labels = the answer and its end-of-turn token; long
events are cut) -> with --verdict_head, fit the head on the frozen model (a linear
probe; --finetuning_type none stops here, the head is the judge) -> load the model
(+ LoRA adapters, + the head) -> train with the key-token-weighted loss (+ the head's
BCE), evaluating on the dev split every SAVE_STEPS -> save the best model (and its
head) in OUTPUT_DIR, name it (and the file it was chosen on) in best_checkpoint.json,
and draw learning_curve.png.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

import argparse
import logging
from dataclasses import asdict, dataclass, field, replace

import torch
from transformers import EarlyStoppingCallback, HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import IntervalStrategy

from defect_judge.distributed import launched_rank
from defect_judge.errors import EXIT_INPUT_ERROR, InputError, run_main
from defect_judge.model.loading import (check_model_folder, check_tokenizer_matches, load_causal_lm, load_tokenizer,
                                        pick_dtype)
from defect_judge.model.judge_card import card_from_training
from defect_judge.model.verdict_head import VerdictHead
from defect_judge.train.head_training import (attach_head, check_head_arguments, head_classes, layers_above_head,
                                              starting_head)
from defect_judge.train.heap import MMAP_THRESHOLD_MIB, limit_heap_fragmentation
from defect_judge.train.linear_probe import DEFAULT_C_GRID, DEFAULT_SHRINKAGE_GRID, PROBES
from defect_judge.train.lora import ALL_LINEAR, freeze_below, parameter_counts, top_layers, with_lora_adapters
from defect_judge.train.run_folder import BEST_CHECKPOINT_FILE, prepare_output_dir
from defect_judge.train.samples import (PaddingCollator, SupervisedDataset, fit_file, log_length_stats,
                                        mark_trained_text, training_dataset)
from defect_judge.train.tracking import WandbConfigCallback, newest_offline_run, setup_wandb
from defect_judge.train.trainer import (ACCURACY_THEN_LOSS, CheckpointCompleteCallback, PeakGpuMemoryCallback,
                                        SharedMemoryCallback, WeightedLossTrainer, release_shared_memory,
                                        save_best_model)

log = logging.getLogger("train_lora")


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
    max_length: int = field(default=4096, metadata={"help": "Maximum tokens of a sample; a longer one has the end "
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
class LoraArguments:
    finetuning_type: str = field(default="lora", metadata={
        "choices": ["lora", "full", "none"],
        "help": "LoRA adapters, all parameters, or none: only a --verdict_head is fitted on the frozen model (a "
                "linear probe, no fine-tuning steps; OUTPUT_DIR then holds the head alone)."})
    lora_rank: int = field(default=32, metadata={"help": "LoRA rank r."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
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
    verdict_head: str = field(default="", metadata={
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
    verdict_head_choose_c: str = field(default="cv", metadata={
        "choices": ["cv", "dev"],
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
    options. A default changed here is the one run_training_lora.sh passes too (the document's values)."""
    output_dir: str | None = field(default=None, metadata={"help": "Where checkpoints, the best model, "
                                                                    "best_checkpoint.json and the curve go."})
    learning_rate: float = field(default=3e-5, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=300, metadata={
        "help": "MAX_EPOCHS of the document; early stopping usually ends training first."})
    save_steps: float = field(default=20, metadata={"help": "Checkpoint and evaluate every this many optimizer "
                                                            "steps."})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Samples per device and micro-batch."})
    gradient_accumulation_steps: int = field(default=8, metadata={"help": "Micro-batches per optimizer step."})
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
                "slower steps); 0 keeps the C library's default."})

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


def parse_args(argv=None) -> tuple[ModelArguments, DataArguments, LoraArguments, VerdictHeadArguments,
                                   FineTuningArguments]:
    """The checked settings, with what they imply resolved: the file evaluated on (``eval_file``) and the run's
    name (``default_run_name``)."""
    parser = OneLineErrorParser((ModelArguments, DataArguments, LoraArguments, VerdictHeadArguments,
                                 FineTuningArguments), description=__doc__.split("\n\n")[0],
                                epilog="Add --debug to show the full traceback of an error.")
    try:
        model_args, data_args, lora_args, head_args, train_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # TrainingArguments' own checks (a scheduler name, conflicting flags, ...)
        raise InputError(str(error).strip().splitlines()[0]) from None
    for name, value in (("--model_path", model_args.model_path), ("--train_data", data_args.train_data)):
        if not value:
            raise InputError(f"{name} is required")
    for name in POSITIVE_SETTINGS:
        value = getattr(train_args, name)
        if value is not None and not value > 0:
            raise InputError(f"--{name} must be greater than 0, got {value}")
    if lora_args.finetuning_type == "lora" and (lora_args.lora_rank < 1 or lora_args.lora_alpha <= 0):
        raise InputError(f"--lora_rank must be at least 1 and --lora_alpha greater than 0, got "
                         f"{lora_args.lora_rank} and {lora_args.lora_alpha}")
    data_args = replace(data_args, eval_data=eval_file(data_args, train_args))
    if data_args.max_length < 16:
        raise InputError(f"--max_length must be at least 16, got {data_args.max_length}")
    check_head_arguments(head_args, lora_args)
    if train_args.run_name is None or train_args.run_name == train_args.output_dir:
        # a new TrainingArguments (its own checks run again): the Trainer and wandb only ever see this one
        train_args = replace(train_args, run_name=default_run_name(lora_args, data_args, head_args, train_args))
    return model_args, data_args, lora_args, head_args, train_args


def eval_file(data_args: DataArguments, train_args: FineTuningArguments) -> str | None:
    """The file evaluated during training: --eval_data, or else (with a warning) --test_data; None when training
    does not evaluate."""
    if not _evaluates(train_args) or data_args.eval_data:
        return data_args.eval_data
    if not data_args.test_data:
        raise InputError("--eval_data is required (the dev split; or pass --eval_strategy no)")
    log.warning("no --eval_data: evaluating, early stopping and choosing the best checkpoint on the TEST split "
                "%s; an accuracy later measured on it is optimistic (write a dev split with "
                "dataset/convert_and_split.py and pass --eval_data)", data_args.test_data)
    return data_args.test_data


def _evaluates(train_args) -> bool:
    return str(getattr(train_args.eval_strategy, "value", train_args.eval_strategy)) != "no"


def default_run_name(lora_args: LoraArguments, data_args: DataArguments, head_args: VerdictHeadArguments,
                     train_args: FineTuningArguments) -> str:
    adapter = (f"lora-r{lora_args.lora_rank}-a{lora_args.lora_alpha}" if lora_args.finetuning_type == "lora"
               else lora_args.finetuning_type)
    head = f"-head-{head_args.verdict_head}" if head_args.verdict_head else ""
    return (f"{adapter}-lr{train_args.learning_rate:g}-len{data_args.max_length}-kw{train_args.key_token_weight:g}"
            f"{head}-{Path(train_args.output_dir).name}")


def load_samples(tokenizer, data_args: DataArguments, train_args: FineTuningArguments, main: bool):
    """Chat JSONL -> fitted samples (token ids, labels and key-token masks) of train and eval; prints what
    training will see."""
    train_samples = fit_file(tokenizer, data_args.train_data, data_args.max_length, train_on=data_args.train_on,
                             progress=main)
    eval_samples = fit_file(tokenizer, data_args.eval_data, data_args.max_length, train_on=data_args.train_on,
                            max_samples=data_args.eval_max_samples, seed=train_args.seed,
                            progress=main) if _evaluates(train_args) else []
    if main:
        print(f"\n=== one training sample ({train_samples[0].id}); trained tokens in [[...]], judgement (key) tokens "
              f"in {{{{...}}}} ===\n{mark_trained_text(tokenizer, train_samples[0].encoded)}\n", flush=True)
        for name, samples, path in (("train", train_samples, data_args.train_data),
                                    ("eval", eval_samples, data_args.eval_data)):
            if samples:
                log_length_stats(name, samples, path, data_args.max_length)
    return train_samples, eval_samples


def save_head_only(head: VerdictHead, train_args: FineTuningArguments, main: bool) -> None:
    """--finetuning_type none: the fitted head is the whole result; it goes into OUTPUT_DIR."""
    if main:
        head.save(train_args.output_dir)
        log.info("linear probe only (--finetuning_type none): the %s is saved in %s; evaluate it with "
                 "eval/model_evaluation.py --model_path %s", head.describe(), train_args.output_dir,
                 train_args.output_dir)


def training_model(model_args: ModelArguments, lora_args: LoraArguments, train_args: FineTuningArguments, tokenizer):
    model_path = Path(model_args.model_path).resolve()
    # LoRA trains fp32 adapters over a bf16 base; full fine-tuning keeps fp32 master weights unless
    # DeepSpeed does (it holds its own fp32 copy of a bf16 model).
    dtype = pick_dtype() if lora_args.finetuning_type == "lora" or train_args.deepspeed else torch.float32
    model = load_causal_lm(model_path, dtype=dtype, trust_remote_code=model_args.trust_remote_code,
                           allow_pickle=model_args.allow_pickle)
    check_tokenizer_matches(model, tokenizer, model_path, model_args.tokenizer_path or model_path)
    model.config.use_cache = False
    if lora_args.finetuning_type == "lora":
        set_seed(train_args.seed)  # the adapters' initialisation
        model = with_lora_adapters(model, rank=lora_args.lora_rank, alpha=lora_args.lora_alpha,
                                   dropout=lora_args.lora_dropout, target_modules=lora_args.lora_target_modules,
                                   trainable_layers=lora_args.trainable_layers,
                                   activation_checkpointing=train_args.activation_checkpointing)
    elif lora_args.trainable_layers:
        freeze_below(model, top_layers(model, lora_args.trainable_layers))
    trainable, total = parameter_counts(model)
    log.info("model %s (%s, %s): %s trainable of %s parameters (%.2f%%)", model_path, lora_args.finetuning_type,
             str(dtype).replace("torch.", ""), f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def run_settings(lora_args: LoraArguments) -> dict:
    """The fine-tuning settings that apply to this run: the LoRA ones only when it trains adapters."""
    settings = asdict(lora_args)
    if lora_args.finetuning_type != "lora":
        settings = {k: v for k, v in settings.items() if not k.startswith("lora_")}
    return settings


def build_trainer(model, tokenizer, train_dataset, eval_dataset, model_args, data_args, lora_args, head_args,
                  train_args: FineTuningArguments, head: VerdictHead | None = None) -> WeightedLossTrainer:
    callbacks = [CheckpointCompleteCallback(), PeakGpuMemoryCallback(), SharedMemoryCallback(),
                 WandbConfigCallback({**asdict(model_args), **asdict(data_args), **run_settings(lora_args),
                                      **asdict(head_args)})]
    if train_args.early_stopping_patience > 0 and train_args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train_args.early_stopping_patience))
    return WeightedLossTrainer(model=model, args=train_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                               data_collator=PaddingCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                               callbacks=callbacks, key_token_weight=train_args.key_token_weight,
                               loss_chunk_size=train_args.loss_chunk_size, verdict_head=head,
                               head_loss_weight=head_args.verdict_head_loss_weight,
                               head_learning_rate=head_args.verdict_head_learning_rate)


def report_end(info: dict, train_args: FineTuningArguments, wandb_offline: bool) -> None:
    output_dir = Path(train_args.output_dir)
    if info:
        value = "n/a" if info["value"] is None else f"{info['value']:.6g}"
        log.info("best model: %s (%s = %s), saved in %s; see %s", info["best_checkpoint"], info["metric"], value,
                 output_dir, output_dir / BEST_CHECKPOINT_FILE)
        if info.get("eval_is_test_data"):
            log.warning("the best checkpoint was chosen on the test split %s: its test accuracy is optimistic",
                        info["eval_data"])
    else:
        log.info("final model saved in %s (no checkpoint was saved, so no %s)", output_dir, BEST_CHECKPOINT_FILE)
    offline_run = newest_offline_run(output_dir) if wandb_offline else None
    if offline_run is not None:
        log.info("wandb ran offline; upload the run with:  wandb sync %s", offline_run)


def main() -> None:
    main_process = launched_rank().rank == 0
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if main_process else logging.WARNING)
    try:
        model_args, data_args, lora_args, head_args, train_args = parse_args()
        if train_args.use_cpu and train_args.cpu_heap_mmap_threshold_mb > 0:
            limit_heap_fragmentation(train_args.cpu_heap_mmap_threshold_mb)  # activations live in the heap
        resume = prepare_output_dir(train_args.output_dir, resume_from_checkpoint=train_args.resume_from_checkpoint,
                                    overwrite=train_args.overwrite_output_dir, main=main_process)
        check_model_folder(model_args.model_path, allow_pickle=model_args.allow_pickle)
        tokenizer = load_tokenizer(model_args.tokenizer_path or model_args.model_path,
                                   trust_remote_code=model_args.trust_remote_code)
        train_samples, eval_samples = load_samples(tokenizer, data_args, train_args, main_process)
        classes = (head_classes(train_samples, eval_samples, data_args.train_data, data_args.eval_data)
                   if head_args.verdict_head else None)
    except InputError:
        if not main_process:
            sys.exit(EXIT_INPUT_ERROR)  # rank 0 reports it once
        raise
    head_only = lora_args.finetuning_type == "none"
    wandb_offline = False if head_only else setup_wandb(train_args.output_dir, train_args.report_to)
    if train_args.deepspeed and train_args.use_cpu and train_args.world_size > 1:
        import deepspeed

        # ZeRO-3 partitions the weights while they load; on CPU ranks DeepSpeed must join the gloo group first.
        deepspeed.init_distributed(dist_backend="gloo")
        release_shared_memory()  # now, not at the first epoch: the head's features take a while before it
    card = card_from_training([s.judgement for s in train_samples], [s.subtype for s in train_samples],
                              data_args.max_length)
    head = starting_head(model_args, data_args, head_args, train_args.device, train_samples, eval_samples, classes,
                         resume, card) if classes else None
    if head_only:
        save_head_only(head, train_args, main_process)
        return
    # --train_above_head: fine-tune only the layers above the head's highest
    trained_layers = (replace(lora_args, trainable_layers=layers_above_head(head)) if head_args.train_above_head
                      else lora_args)
    model = training_model(model_args, trained_layers, train_args, tokenizer)
    if head is not None:
        attach_head(model, head, dropout=head_args.verdict_head_dropout,
                    loss_weight=head_args.verdict_head_loss_weight)
    positive = classes[0] if classes else None
    train_dataset = training_dataset(train_samples, positive, pair_batches=data_args.pair_batches, main=main_process)
    eval_dataset = SupervisedDataset(eval_samples, positive) if eval_samples else None
    trainer = build_trainer(model, tokenizer, train_dataset, eval_dataset, model_args, data_args, lora_args, head_args,
                            train_args, head)
    trainer.train(resume_from_checkpoint=resume)
    info = save_best_model(trainer, finetuning_type=lora_args.finetuning_type, base_model_path=model_args.model_path,
                           eval_data=data_args.eval_data, test_data=data_args.test_data, card=card)
    if trainer.is_world_process_zero():
        report_end(info, train_args, wandb_offline)


if __name__ == "__main__":
    run_main(main)
