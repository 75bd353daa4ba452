#!/usr/bin/env bash
# make demo: the whole pipeline on the embedded SmolLM2-135M-Instruct and the shipped sample data, on a CPU.
#   1 convert + split   2 baseline evaluation   3 LoRA fine-tuning (DeepSpeed launcher, wandb offline)
#   4 evaluation of the best checkpoint          5 comparison plots          -> runs/demo/<time>/summary.md
# Only environment overrides and passed-through flags change the training script's defaults.
# Knobs (environment): DEMO_MAX_STEPS, DEMO_SAVE_STEPS, DEMO_LR, DEMO_EVAL_MODE, DEMO_MAX_NEW_TOKENS, RUN_DIR,
# DEMO_MODEL and DEMO_INPUT_DIR (the end-to-end test runs the same pipeline on a tiny model and a few samples).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
MODEL="${DEMO_MODEL:-models/SmolLM2-135M-Instruct}"
INPUT_DIR="${DEMO_INPUT_DIR:-dataset/output}"
RUN_DIR="${RUN_DIR:-runs/demo/$(date +%Y%m%d-%H%M%S)}"
MAX_STEPS="${DEMO_MAX_STEPS:-48}"
SAVE_STEPS="${DEMO_SAVE_STEPS:-16}"
LR="${DEMO_LR:-2e-4}"
EVAL_MODE="${DEMO_EVAL_MODE:-generate}"
MAX_NEW_TOKENS="${DEMO_MAX_NEW_TOKENS:-64}"

[[ -f "$MODEL/config.json" ]] || { echo "run_demo.sh: error: $MODEL is missing; run make setup" >&2; exit 2; }
mkdir -p "$RUN_DIR"
ln -sfn "$(basename "$RUN_DIR")" "$(dirname "$RUN_DIR")/latest" 2>/dev/null || true
export WANDB_MODE="${WANDB_MODE:-offline}" TOKENIZERS_PARALLELISM=false
stage() { printf '\n==== [%s] %s ====\n' "$(date +%H:%M:%S)" "$*"; }
evaluate() {  # evaluate MODEL OUTPUT_DIR: the same settings for the baseline and the fine-tuned model
    $PY eval/model_evaluation.py --model_path "$1" --test_dataset_path "$RUN_DIR/data/test.jsonl" \
        --output_dir "$2" --mode "$EVAL_MODE" --max_new_tokens "$MAX_NEW_TOKENS"
}
seconds() { date +%s; }
T0=$(seconds)

stage "1/5 convert and split $INPUT_DIR -> $RUN_DIR/data"
$PY dataset/convert_and_split.py --input_dir "$INPUT_DIR" --converted_file "$RUN_DIR/data/converted_data.jsonl" \
    --train_file "$RUN_DIR/data/train.jsonl" --test_file "$RUN_DIR/data/test.jsonl"
T1=$(seconds)

stage "2/5 baseline: evaluate $MODEL"
evaluate "$MODEL" "$RUN_DIR/eval_base"
T2=$(seconds)

stage "3/5 LoRA fine-tuning through instruct_fine_tuning/run_training_lora.sh ($MAX_STEPS steps)"
MODEL_PATH="$MODEL" TRAIN_DATA="$RUN_DIR/data/train.jsonl" TEST_DATA="$RUN_DIR/data/test.jsonl" \
OUTPUT_DIR="$RUN_DIR/train" LEARNING_RATE="$LR" MAX_LENGTH=1024 SAVE_STEPS="$SAVE_STEPS" \
GRADIENT_ACCUMULATION_STEPS=4 NUM_GPUS=1 \
    ./instruct_fine_tuning/run_training_lora.sh --max_steps "$MAX_STEPS" --warmup_steps 4 --logging_steps 4 \
    --eval_max_samples 32 --seed 42 --cpu_heap_mmap_threshold_mb 0
T3=$(seconds)

stage "4/5 evaluate the best checkpoint ($RUN_DIR/train/best_checkpoint.json)"
evaluate "$RUN_DIR/train" "$RUN_DIR/eval_tuned"
T4=$(seconds)

stage "5/5 compare baseline and fine-tuned"
$PY eval/plot_subtype_acc.py --result1_path "$RUN_DIR/eval_base/evaluation_results.json" \
    --result2_path "$RUN_DIR/eval_tuned/evaluation_results.json" --labels "SmolLM2-135M (base)" "SmolLM2-135M + LoRA" \
    --output_dir "$RUN_DIR/comparison"
T5=$(seconds)

$PY tools/demo_summary.py --run_dir "$RUN_DIR" \
    --timings "convert=$((T1 - T0))" "baseline_eval=$((T2 - T1))" "training=$((T3 - T2))" \
              "tuned_eval=$((T4 - T3))" "plots=$((T5 - T4))"
