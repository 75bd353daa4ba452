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
import netrc
import os
import random
from dataclasses import asdict, dataclass, field, replace
from urllib.parse import urlparse

import torch
from transformers import EarlyStoppingCallback, HfArgumentParser, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import IntervalStrategy

from defect_judge.train.run_folder import (BEST_CHECKPOINT_FILE, best_checkpoint_info, find_resume_checkpoint,
                                      list_checkpoints, remove_checkpoints, write_best_checkpoint)
from defect_judge.train.linear_probe import fit_head
from defect_judge.errors import EXIT_INPUT_ERROR, InputError, run_main
from defect_judge.fileio import check_output_dir
from defect_judge.report.learning_curve import learning_curve_chart
from defect_judge.train.run_folder import LEARNING_CURVE_FILE
from defect_judge.model.loading import (check_model_folder, check_tokenizer_matches, load_causal_lm, load_tokenizer,
                                   pick_dtype, quiet_library_deprecations)
from defect_judge.evaluate.results import judgement_vocabulary, two_classes
from defect_judge.data.schema import read_records
from defect_judge.train.training import (ACCURACY_THEN_LOSS, CheckpointCompleteCallback, fit_samples, judgement_only,
                                   length_stats, limit_heap_fragmentation, mark_trained_text, PaddingCollator,
                                   PairedDataset, PeakGpuMemoryCallback, SupervisedDataset, WeightedLossTrainer)
from defect_judge.model.verdict_head import (DEFAULT_C_GRID, HEAD_CONFIG_FILE, HEAD_MODULE, HEAD_WEIGHTS_FILE, HeadSpec,
                                       VerdictHead, has_head, load_head)

log = logging.getLogger("train_lora")


@dataclass
class ModelArguments:
    model_path: str = field(default=None, metadata={"help": "Base model folder (Hugging Face format, safetensors)."})
    tokenizer_path: str = field(default=None, metadata={"help": "Tokenizer folder (default: the model folder)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with the model (only "
                                                                       "for folders you trust)."})
    allow_pickle: bool = field(default=False, metadata={"help": "Load pickle (.bin) weights when the folder has no "
                                                                "safetensors (pickle can run code)."})


@dataclass
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


@dataclass
class LoraArguments:
    finetuning_type: str = field(default="lora", metadata={
        "choices": ["lora", "full", "none"],
        "help": "LoRA adapters, all parameters, or none: only a --verdict_head is fitted on the frozen model (a "
                "linear probe, no fine-tuning steps; OUTPUT_DIR then holds the head alone)."})
    lora_rank: int = field(default=32, metadata={"help": "LoRA rank r."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    # peft's default: dropout would keep a copy of every adapted layer's input
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "'all-linear' (every linear layer but the output layer) or a comma-separated list of module "
                "names (q_proj,v_proj)."})
    trainable_layers: int = field(default=0, metadata={
        "help": "Train only the top N transformer layers (LoRA adapters there, or those layers' weights in full "
                "fine-tuning); the backward pass then stops below them. 0: every layer."})


@dataclass
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
    verdict_head_choose_c: str = field(default="cv", metadata={
        "choices": ["cv", "dev"],
        "help": "How the probe's regularisation C is chosen: cv (cross-validation over whole pairs on the "
                "training split) or dev (the dev split's accuracy)."})
    verdict_head_c_grid: list[float] = field(default_factory=lambda: list(DEFAULT_C_GRID), metadata={
        "help": "The probe's candidate C values (logistic regression on standardised features)."})
    train_above_head: bool = field(default=False, metadata={
        "help": "Fine-tune only the layers above the head's highest (--trainable_layers follows): the head's "
                "features stay those it was fitted on, and the model learns to write the answer above them. With "
                "--verdict_head_loss_weight 0 the head stays the linear probe as fitted."})


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
    # On a CPU, allocations of this many MiB or more get their own mmap, so freed activations go back to the
    # system at once: peak RSS 3.9 instead of 5.6 GiB at 2,048 tokens on the embedded model, for ~25% slower
    # steps (page faults). No effect with a GPU.
    cpu_heap_mmap_threshold_mb: int = field(default=4, metadata={
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
    if _evaluates(train_args) and not data_args.eval_data:
        if not data_args.test_data:
            raise InputError("--eval_data is required (the dev split; or pass --eval_strategy no)")
        data_args.eval_data = data_args.test_data
        log.warning("no --eval_data: evaluating, early stopping and choosing the best checkpoint on the TEST split "
                    "%s; an accuracy later measured on it is optimistic (write a dev split with "
                    "dataset/convert_and_split.py and pass --eval_data)", data_args.test_data)
    if data_args.max_length < 16:
        raise InputError(f"--max_length must be at least 16, got {data_args.max_length}")
    check_head_args(head_args, lora_args)
    return model_args, data_args, lora_args, head_args, train_args


def check_head_args(head_args: VerdictHeadArguments, lora_args: LoraArguments) -> None:
    if head_args.verdict_head:
        HeadSpec.parse(head_args.verdict_head, field="--verdict_head")
    elif lora_args.finetuning_type == "none":
        raise InputError("--finetuning_type none fits a verdict head only: pass --verdict_head (e.g. mean@0.5)")
    if not 0 <= head_args.verdict_head_dropout < 1:
        raise InputError(f"--verdict_head_dropout must be in [0, 1), got {head_args.verdict_head_dropout}")
    if head_args.verdict_head_loss_weight < 0:
        raise InputError(f"--verdict_head_loss_weight must be 0 or more, got {head_args.verdict_head_loss_weight}")
    if not head_args.verdict_head_c_grid or any(not c > 0 for c in head_args.verdict_head_c_grid):
        raise InputError(f"--verdict_head_c_grid must be positive numbers, got {head_args.verdict_head_c_grid}")
    if head_args.train_above_head and (not head_args.verdict_head or lora_args.trainable_layers):
        raise InputError("--train_above_head needs a --verdict_head and sets the trainable layers itself: drop "
                         "--trainable_layers")


def _evaluates(train_args) -> bool:
    return str(getattr(train_args.eval_strategy, "value", train_args.eval_strategy)) != "no"


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def setup_logging(main: bool) -> None:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if main else logging.WARNING)


def prepare_output_dir(train_args: FineTuningArguments, main: bool) -> str | None:
    """Refuse to overwrite an earlier run; find the checkpoint to resume from."""
    output_dir = check_output_dir(train_args.output_dir)
    existing = list_checkpoints(output_dir)
    best_file = output_dir / BEST_CHECKPOINT_FILE
    earlier = best_file.exists() or has_head(output_dir)
    requested = train_args.resume_from_checkpoint
    if requested and train_args.overwrite_output_dir:
        raise InputError("pass either --resume_from_checkpoint or --overwrite_output_dir, not both")
    if not requested:
        if (existing or earlier) and not train_args.overwrite_output_dir:
            names = ", ".join(p.name for p in existing[-3:]) or (BEST_CHECKPOINT_FILE if best_file.exists()
                                                                else HEAD_CONFIG_FILE)
            raise InputError(f"already holds an earlier run ({names}): pass --resume_from_checkpoint auto to continue "
                             f"it, or --overwrite_output_dir to start over (deleting its checkpoints)",
                             path=output_dir)
        if main and (existing or earlier):
            log.warning("--overwrite_output_dir: deleting %d checkpoint(s) of the earlier run in %s",
                        len(existing), output_dir)
            remove_checkpoints(existing)
            best_file.unlink(missing_ok=True)
            for name in (HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE):
                (output_dir / name).unlink(missing_ok=True)
        return None
    if requested.lower() in ("auto", "true", "latest"):
        newest, incomplete = find_resume_checkpoint(output_dir)
        if incomplete:
            log.warning("skipping incomplete checkpoint(s) (the run stopped while saving them): %s",
                        ", ".join(p.name for p in incomplete))
            if main:
                remove_checkpoints(incomplete)
        if newest is None:
            log.warning("--resume_from_checkpoint auto: no complete checkpoint in %s, starting from scratch",
                        output_dir)
            return None
        log.info("resuming from %s", newest)
        return str(newest)
    path = Path(requested)
    if not path.is_dir():
        raise InputError("checkpoint not found", path=path)
    return str(path)


def setup_wandb(train_args: FineTuningArguments) -> bool:
    """Send wandb files to OUTPUT_DIR and go offline when no API key is set; True when offline."""
    if "wandb" not in (train_args.report_to or []):
        return False
    Path(train_args.output_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_DIR", str(Path(train_args.output_dir).resolve()))
    if "WANDB_MODE" not in os.environ and not has_wandb_api_key():
        os.environ["WANDB_MODE"] = "offline"
        log.info("wandb: no API key (WANDB_API_KEY or `wandb login`): logging offline under %s/wandb",
                 train_args.output_dir)
    return os.environ.get("WANDB_MODE") in ("offline", "dryrun")


def has_wandb_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:  # where `wandb login` stores the key (NETRC moves the file, as for wandb itself)
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


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
    train_records = read_records(data_args.train_data)
    train_samples = fit_samples(tokenizer, train_records, data_args.max_length, path=data_args.train_data,
                                progress=main)
    if data_args.train_on == "judgement":
        train_samples = [judgement_only(s) for s in train_samples]
    eval_samples = []
    if _evaluates(train_args):
        eval_records = read_records(data_args.eval_data)
        if 0 < data_args.eval_max_samples < len(eval_records):
            keep = random.Random(train_args.seed).sample(range(len(eval_records)), data_args.eval_max_samples)
            eval_records = [eval_records[i] for i in sorted(keep)]
        eval_samples = fit_samples(tokenizer, eval_records, data_args.max_length, path=data_args.eval_data,
                                   progress=main)
        if data_args.train_on == "judgement":
            eval_samples = [judgement_only(s) for s in eval_samples]
    if main:
        report_data(tokenizer, train_samples, eval_samples, data_args)
    return train_samples, eval_samples


def head_classes(train_samples, eval_samples, data_args: DataArguments) -> tuple[str, str]:
    """(defective, clean): the two judgements of the training split, which a verdict head tells apart; every
    training and eval sample must carry one of them."""
    classes = two_classes(judgement_vocabulary(s.judgement for s in train_samples if s.judgement is not None))
    if classes is None:
        found = sorted({s.judgement for s in train_samples if s.judgement is not None})
        raise InputError(f"a verdict head needs two judgements (defective / clean), the training split has "
                         f"{'/'.join(found) or 'none'}", path=data_args.train_data, field="text")
    for samples, path in ((train_samples, data_args.train_data), (eval_samples, data_args.eval_data)):
        wrong = next((s for s in samples if s.judgement not in classes), None)
        if wrong is not None:
            raise InputError(f"a verdict head learns {classes[0]}/{classes[1]}, this sample's reference judgement is "
                             f"{wrong.judgement or 'missing'}", path=path, sample=wrong.id, field="text")
    return classes


def starting_head(model_args: ModelArguments, data_args: DataArguments, head_args: VerdictHeadArguments,
                  train_args: FineTuningArguments, train_samples, eval_samples, classes: tuple[str, str],
                  resume: str | None) -> VerdictHead:
    """The head training starts from: a resumed checkpoint's, or the linear probe fitted on the frozen model."""
    spec = HeadSpec.parse(head_args.verdict_head, field="--verdict_head")
    if resume is not None:
        if not has_head(resume):
            raise InputError(f"--verdict_head {spec}: the checkpoint to resume has no {HEAD_CONFIG_FILE} (it was "
                             f"trained without a head)", path=resume)
        head = load_head(resume)
        if head.spec != str(spec):
            raise InputError(f"--verdict_head {spec}: the checkpoint to resume holds a head {head.spec}", path=resume)
        log.info("resuming the %s", head.describe())
        return head
    return fit_head(model_args.model_path, spec, train_samples, eval_samples, positive=classes[0],
                    negative=classes[1], train_path=data_args.train_data, dev_path=data_args.eval_data,
                    device=train_args.device, trust_remote_code=model_args.trust_remote_code,
                    allow_pickle=model_args.allow_pickle, c_grid=head_args.verdict_head_c_grid,
                    choose_on=head_args.verdict_head_choose_c)


def layers_to_train(lora_args: LoraArguments, head_args: VerdictHeadArguments, head: VerdictHead | None) -> LoraArguments:
    """The fine-tuning settings, with --train_above_head: the layers above the head's highest only."""
    if not head_args.train_above_head:
        return lora_args
    above = head.num_hidden_layers - max(head.layers)
    if above < 1:
        raise InputError(f"--train_above_head: the head {head.spec} reads the top layer, so there is no layer above it "
                         f"to train")
    log.info("--train_above_head: fine-tuning the top %d of %d layers, above the head's layer %d", above,
             head.num_hidden_layers, max(head.layers))
    return replace(lora_args, trainable_layers=above)


def save_head_only(head: VerdictHead, train_args: FineTuningArguments, main: bool) -> None:
    """--finetuning_type none: the fitted head is the whole result; it goes into OUTPUT_DIR."""
    if main:
        head.save(train_args.output_dir)
        log.info("linear probe only (--finetuning_type none): the %s is saved in %s; evaluate it with "
                 "eval/model_evaluation.py --model_path %s", head.describe(), train_args.output_dir,
                 train_args.output_dir)


def attach_head(model, head: VerdictHead, head_args: VerdictHeadArguments) -> None:
    """The head becomes a trainable submodule of the causal LM: the optimizer, DeepSpeed and the
    checkpoints then handle it with the model."""
    from defect_judge.model.verdict_head import causal_lm

    head.dropout = head_args.verdict_head_dropout
    head.requires_grad_(True)
    causal_lm(model).add_module(HEAD_MODULE, head)
    log.info("training with the %s: loss = answer + %g x head BCE", head.describe(),
             head_args.verdict_head_loss_weight)


def train_dataset(samples, data_args: DataArguments, main: bool, positive: str | None = None):
    """The samples one by one, or with --pair_batches grouped into twin pairs."""
    if not data_args.pair_batches:
        return SupervisedDataset(samples, positive)
    dataset = PairedDataset(samples, positive)
    if main:
        if dataset.pairs == 0:
            log.warning("--pair_batches: no two training records share a pair_id, so every sample is its own item")
        log.info("--pair_batches: %d twin pairs and %d unpaired samples; a micro-batch holds "
                 "per_device_train_batch_size of them", dataset.pairs, len(dataset) - dataset.pairs)
    return dataset


def report_data(tokenizer, train_samples, eval_samples, data_args: DataArguments) -> None:
    print(f"\n=== one training sample ({train_samples[0].id}); trained tokens in [[...]], "
          f"judgement (key) tokens in {{{{...}}}} ===\n{mark_trained_text(tokenizer, train_samples[0].encoded)}\n",
          flush=True)
    for name, samples, path in (("train", train_samples, data_args.train_data),
                                ("eval", eval_samples, data_args.eval_data)):
        if not samples:
            continue
        stats = length_stats([len(s.encoded.input_ids) for s in samples])
        answers = length_stats([sum(s.encoded.trained) for s in samples])
        truncated = sum(s.truncated for s in samples)
        log.info("%s: %d samples from %s; tokens min %d / median %d / p95 %d / max %d; trained (answer) tokens "
                 "median %d; truncated to max_length %d (event cut): %d", name, len(samples), path, stats["min"],
                 stats["median"], stats["p95"], stats["max"], answers["median"], data_args.max_length, truncated)


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
        from peft import LoraConfig, get_peft_model

        set_seed(train_args.seed)  # the adapters' initialisation
        targets = lora_args.lora_target_modules
        targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
        layers = top_layers(model, lora_args.trainable_layers)
        if layers and targets == "all-linear":
            targets = layer_linear_names(model)  # peft takes a layer subset only with named modules
        config = LoraConfig(task_type="CAUSAL_LM", r=lora_args.lora_rank, lora_alpha=lora_args.lora_alpha,
                            lora_dropout=lora_args.lora_dropout, target_modules=targets,
                            layers_to_transform=layers, layers_pattern="layers" if layers else None)
        try:
            with quiet_library_deprecations():
                model = get_peft_model(model, config)
        except ValueError as error:
            raise InputError(f"--lora_target_modules {lora_args.lora_target_modules!r}: {error}") from None
        if train_args.activation_checkpointing:
            model.enable_input_require_grads()  # checkpointed layers need an input that requires grad
    elif lora_args.trainable_layers:
        freeze_below(model, top_layers(model, lora_args.trainable_layers))

    def numel(param) -> int:
        return getattr(param, "ds_numel", param.numel())  # ZeRO-3 partitions hold 0 elements locally

    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(numel(p) for p in model.parameters())
    log.info("model %s (%s, %s): %s trainable of %s parameters (%.2f%%)", model_path, lora_args.finetuning_type,
             str(dtype).replace("torch.", ""), f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def top_layers(model, count: int) -> list[int] | None:
    """Indices of the top ``count`` transformer layers (None: all of them)."""
    total = model.config.num_hidden_layers
    if count <= 0:
        return None
    if count > total:
        raise InputError(f"--trainable_layers {count}: the model has only {total} layers")
    return list(range(total - count, total))


def layer_linear_names(model) -> list[str]:
    """The names of the linear modules inside the transformer layers (what peft's all-linear adapts)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and ".layers." in name})


def freeze_below(model, layers: list[int]) -> None:
    """Full fine-tuning of the top layers only: everything else (embeddings, the layers below, the tied
    output layer) is frozen, so autograd never goes below the lowest trained layer."""
    keep = tuple(f"layers.{i}." for i in layers)
    final_norm = model.get_decoder().norm if hasattr(model.get_decoder(), "norm") else None
    kept = {id(p) for p in final_norm.parameters()} if final_norm is not None else set()
    for name, param in model.named_parameters():
        param.requires_grad_(any(part in name for part in keep) or id(param) in kept)


class WandbConfigCallback(TrainerCallback):
    """Adds the model/data/LoRA arguments to the wandb run's config (the Trainer adds its own)."""

    def __init__(self, config: dict):
        self.config = config

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and "wandb" in (args.report_to or []):  # --report_to none: wandb may be absent
            import wandb

            if wandb.run is not None:
                wandb.config.update(self.config, allow_val_change=True)


def run_settings(lora_args: LoraArguments) -> dict:
    """The fine-tuning settings that apply to this run: the LoRA ones only when it trains adapters."""
    settings = asdict(lora_args)
    if lora_args.finetuning_type != "lora":
        settings = {k: v for k, v in settings.items() if not k.startswith("lora_")}
    return settings


def build_trainer(model, tokenizer, train_dataset, eval_dataset, model_args, data_args, lora_args, head_args,
                  train_args: FineTuningArguments, head: VerdictHead | None = None) -> WeightedLossTrainer:
    callbacks = [CheckpointCompleteCallback(), PeakGpuMemoryCallback(),
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


def save_best_model(trainer: WeightedLossTrainer, model_args, data_args, lora_args,
                    train_args: FineTuningArguments) -> dict:
    """The best (or, without evaluation, the last) model into OUTPUT_DIR, named in best_checkpoint.json
    together with the file it was chosen on."""
    output_dir = Path(train_args.output_dir)
    head_spec = trainer.verdict_head.spec if trainer.verdict_head is not None else None
    trainer.save_model(str(output_dir))  # every rank: DeepSpeed gathers the weights collectively
    trainer.save_state()
    state = trainer.state
    if state.best_model_checkpoint:  # chosen on the eval file by the metric
        info = best_checkpoint_info(Path(state.best_model_checkpoint).name, metric=train_args.metric_for_best_model,
                                    value=state.best_metric, greater_is_better=bool(train_args.greater_is_better),
                                    finetuning_type=lora_args.finetuning_type, base_model_path=model_args.model_path,
                                    eval_data=data_args.eval_data, eval_samples=len(trainer.eval_dataset),
                                    test_data=data_args.test_data, verdict_head=head_spec)
    else:  # no evaluation: the last checkpoint
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            return {}
        info = best_checkpoint_info(checkpoints[-1].name, metric=None, value=None, greater_is_better=None,
                                    finetuning_type=lora_args.finetuning_type, base_model_path=model_args.model_path,
                                    verdict_head=head_spec)
    if trainer.is_world_process_zero():
        write_best_checkpoint(output_dir, info)
        draw_learning_curve(output_dir, state.log_history, info)
    return info


def draw_learning_curve(output_dir: Path, log_history: list[dict], info: dict) -> None:
    """learning_curve.png from the Trainer's history (a resumed run's history includes the earlier part)."""
    try:
        learning_curve_chart(output_dir / LEARNING_CURVE_FILE, log_history,
                             best_step=info.get("step") if info.get("metric") else None,
                             title=f"{output_dir.name}: learning curve")
    except ValueError as error:  # nothing was logged (e.g. zero steps)
        log.warning("no %s: %s", LEARNING_CURVE_FILE, error)


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
    if wandb_offline:
        runs = sorted((output_dir / "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime)
        if runs:
            log.info("wandb ran offline; upload the run with:  wandb sync %s", runs[-1])


def main() -> None:
    main_process = is_main_process()
    setup_logging(main_process)
    try:
        model_args, data_args, lora_args, head_args, train_args = parse_args()
        if train_args.use_cpu and train_args.cpu_heap_mmap_threshold_mb > 0:
            limit_heap_fragmentation(train_args.cpu_heap_mmap_threshold_mb << 20)  # activations live in the heap
        resume = prepare_output_dir(train_args, main_process)
        check_model_folder(model_args.model_path, allow_pickle=model_args.allow_pickle)
        tokenizer = load_tokenizer(model_args.tokenizer_path or model_args.model_path,
                                   trust_remote_code=model_args.trust_remote_code)
        train_samples, eval_samples = load_samples(tokenizer, data_args, train_args, main_process)
        classes = head_classes(train_samples, eval_samples, data_args) if head_args.verdict_head else None
    except InputError:
        if not main_process:
            sys.exit(EXIT_INPUT_ERROR)  # rank 0 reports it once
        raise
    head_only = lora_args.finetuning_type == "none"
    wandb_offline = False if head_only else setup_wandb(train_args)
    if train_args.run_name is None or train_args.run_name == train_args.output_dir:
        train_args.run_name = default_run_name(lora_args, data_args, head_args, train_args)
    if train_args.deepspeed and train_args.use_cpu and train_args.world_size > 1:
        import deepspeed

        # ZeRO-3 partitions the weights while they load; on CPU ranks DeepSpeed must join the gloo group first.
        deepspeed.init_distributed(dist_backend="gloo")
    head = starting_head(model_args, data_args, head_args, train_args, train_samples, eval_samples, classes,
                         resume) if classes else None
    if head_only:
        save_head_only(head, train_args, main_process)
        return
    positive = classes[0] if classes else None
    model = training_model(model_args, layers_to_train(lora_args, head_args, head), train_args, tokenizer)
    if head is not None:
        attach_head(model, head, head_args)
    trainer = build_trainer(model, tokenizer, train_dataset(train_samples, data_args, main_process, positive),
                            SupervisedDataset(eval_samples, positive) if eval_samples else None, model_args,
                            data_args, lora_args, head_args, train_args, head)
    trainer.train(resume_from_checkpoint=resume)
    info = save_best_model(trainer, model_args, data_args, lora_args, train_args)
    if trainer.is_world_process_zero():
        report_end(info, train_args, wandb_offline)


if __name__ == "__main__":
    run_main(main)
