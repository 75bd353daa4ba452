"""Fine-tune a code LLM to judge software defects: LoRA (default), full-parameter, or a verdict head alone.

Normally started by run_training_lora.sh under the DeepSpeed launcher:

    deepspeed --num_gpus 8 train_lora.py --model_path /data/Qwen2.5-Coder-7B-Instruct/ \\
        --train_data ../dataset/train.jsonl --eval_data ../dataset/dev.jsonl \\
        --output_dir /data/qwen_instruct_lora_finetuned_0401 --deepspeed ../ds_config_lora.json

It also runs as one plain process (`python train_lora.py ...`, no --deepspeed), with the same defaults: they are
read from run_training_lora.sh, where they are written. Every transformers TrainingArguments flag works as well
(see --help).

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

import logging
from dataclasses import asdict, replace

import torch
from transformers import EarlyStoppingCallback, set_seed

from defect_judge.distributed import launched_rank
from defect_judge.errors import EXIT_INPUT_ERROR, InputError, run_main
from defect_judge.model.judge_card import card_from_training
from defect_judge.model.loading import (check_model_folder, check_tokenizer_matches, load_causal_lm, load_tokenizer,
                                        pick_dtype)
from defect_judge.model.run_folder import BEST_CHECKPOINT_FILE, prepare_output_dir
from defect_judge.model.verdict_head import VerdictHead
from defect_judge.train.arguments import (DataArguments, FineTuningArguments, ModelArguments, TrainedWeightsArguments,
                                          evaluates, parse_args)
from defect_judge.train.best_model import save_best_model
from defect_judge.train.callbacks import (LogPeakGpuMemoryCallback, MarkCheckpointCompleteCallback,
                                          ReleaseSharedMemoryCallback, release_shared_memory)
from defect_judge.train.head_training import attach_head, head_classes, layers_above_head, starting_head
from defect_judge.train.heap import limit_heap_fragmentation
from defect_judge.train.lora import freeze_below, parameter_counts, top_layers, with_lora_adapters
from defect_judge.train.samples import (PaddingCollator, SupervisedDataset, fit_file, log_length_stats,
                                        mark_trained_text, training_dataset)
from defect_judge.train.tracking import WandbConfigCallback, newest_offline_run, setup_wandb
from defect_judge.train.trainer import WeightedLossTrainer

log = logging.getLogger("fine_tuning")


def load_samples(tokenizer, data_args: DataArguments, train_args: FineTuningArguments, main: bool):
    """Chat JSONL -> fitted samples (token ids, labels and key-token masks) of train and eval; prints what
    training will see."""
    train_samples = fit_file(tokenizer, data_args.train_data, data_args.max_length, train_on=data_args.train_on,
                             progress=main)
    eval_samples = fit_file(tokenizer, data_args.eval_data, data_args.max_length, train_on=data_args.train_on,
                            max_samples=data_args.eval_max_samples, seed=train_args.seed,
                            progress=main) if evaluates(train_args) else []
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


def training_model(model_args: ModelArguments, weights_args: TrainedWeightsArguments, train_args: FineTuningArguments, tokenizer):
    model_path = Path(model_args.model_path).resolve()
    # LoRA trains fp32 adapters over a bf16 base; full fine-tuning keeps fp32 master weights unless
    # DeepSpeed does (it holds its own fp32 copy of a bf16 model).
    dtype = pick_dtype() if weights_args.finetuning_type == "lora" or train_args.deepspeed else torch.float32
    model = load_causal_lm(model_path, dtype=dtype, trust_remote_code=model_args.trust_remote_code,
                           allow_pickle=model_args.allow_pickle)
    check_tokenizer_matches(model, tokenizer, model_path, model_args.tokenizer_path or model_path)
    model.config.use_cache = False
    if weights_args.finetuning_type == "lora":
        set_seed(train_args.seed)  # the adapters' initialisation
        model = with_lora_adapters(model, rank=weights_args.lora_rank, alpha=weights_args.lora_alpha,
                                   dropout=weights_args.lora_dropout, target_modules=weights_args.lora_target_modules,
                                   trainable_layers=weights_args.trainable_layers,
                                   activation_checkpointing=train_args.activation_checkpointing)
    elif weights_args.trainable_layers:
        freeze_below(model, top_layers(model, weights_args.trainable_layers))
    trainable, total = parameter_counts(model)
    log.info("model %s (%s, %s): %s trainable of %s parameters (%.2f%%)", model_path, weights_args.finetuning_type,
             str(dtype).replace("torch.", ""), f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def run_settings(weights_args: TrainedWeightsArguments) -> dict:
    """The fine-tuning settings that apply to this run: the LoRA ones only when it trains adapters."""
    settings = asdict(weights_args)
    if weights_args.finetuning_type != "lora":
        settings = {k: v for k, v in settings.items() if not k.startswith("lora_")}
    return settings


def build_trainer(model, tokenizer, train_dataset, eval_dataset, model_args, data_args, weights_args, head_args,
                  train_args: FineTuningArguments, head: VerdictHead | None = None) -> WeightedLossTrainer:
    callbacks = [MarkCheckpointCompleteCallback(), LogPeakGpuMemoryCallback(), ReleaseSharedMemoryCallback(),
                 WandbConfigCallback({**asdict(model_args), **asdict(data_args), **run_settings(weights_args),
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
        model_args, data_args, weights_args, head_args, train_args = parse_args(description=__doc__.split("\n\n")[0])
        if train_args.use_cpu and train_args.cpu_heap_mmap_threshold_mb > 0:  # activations live in the heap
            if not limit_heap_fragmentation(train_args.cpu_heap_mmap_threshold_mb):
                log.warning("--cpu_heap_mmap_threshold_mb: the C library did not take it (not glibc?)")
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
    head_only = weights_args.finetuning_type == "none"
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
    trained_layers = (replace(weights_args, trainable_layers=layers_above_head(head)) if head_args.train_above_head
                      else weights_args)
    model = training_model(model_args, trained_layers, train_args, tokenizer)
    if head is not None:
        attach_head(model, head, dropout=head_args.verdict_head_dropout,
                    loss_weight=head_args.verdict_head_loss_weight)
    positive = classes[0] if classes else None
    train_dataset = training_dataset(train_samples, positive, pair_batches=data_args.pair_batches, main=main_process)
    eval_dataset = SupervisedDataset(eval_samples, positive) if eval_samples else None
    trainer = build_trainer(model, tokenizer, train_dataset, eval_dataset, model_args, data_args, weights_args, head_args,
                            train_args, head)
    trainer.train(resume_from_checkpoint=resume)
    info = save_best_model(trainer, finetuning_type=weights_args.finetuning_type, base_model_path=model_args.model_path,
                           eval_data=data_args.eval_data, test_data=data_args.test_data, card=card)
    if trainer.is_world_process_zero():
        report_end(info, train_args, wandb_offline)


if __name__ == "__main__":
    run_main(main)
