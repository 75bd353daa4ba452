#!/usr/bin/env bash
# make demo: the whole pipeline on the embedded SmolLM2-135M-Instruct and the shipped sample data, on a CPU.
#   1 convert + split (train/dev/test)   2 TF-IDF baseline   3 base model evaluation
#   4 fine-tuning with a named recipe (defect_judge/train/recipes.py), checkpoints chosen on dev; with a verdict head
#     (the default recipe has one) the head is fitted on the frozen model first, then trained with the model
#   5 evaluation of the chosen checkpoint on test: the generative judge alone (its answers), and the judge with
#     its verdict head (the head's verdict, the model's reason after it; scores: ROC, VD-S, dev threshold)
#   6 comparison plots   -> runs/demo/<time>/summary.md
# The test split is read only by stages 2, 3 and 5, and never for a choice.
# Knobs (environment): DEMO_RECIPE (a name from defect_judge/train/recipes.py; default demo), DEMO_MAX_STEPS (cut training short),
# DEMO_EVAL_MODE (generate/score), DEMO_MAX_NEW_TOKENS, RUN_DIR, DEMO_MODEL and DEMO_INPUT_DIR (the
# end-to-end test runs the same pipeline on a tiny model and a few samples).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
MODEL="${DEMO_MODEL:-models/SmolLM2-135M-Instruct}"
INPUT_DIR="${DEMO_INPUT_DIR:-dataset/output}"
RUN_DIR="${RUN_DIR:-runs/demo/$(date +%Y%m%d-%H%M%S)}"
RECIPE="${DEMO_RECIPE:-demo_head}"
MAX_STEPS="${DEMO_MAX_STEPS:-}"
EVAL_MODE="${DEMO_EVAL_MODE:-generate}"
MAX_NEW_TOKENS="${DEMO_MAX_NEW_TOKENS:-64}"

[[ -f "$MODEL/config.json" ]] || { echo "run_demo.sh: error: $MODEL is missing; run make setup" >&2; exit 2; }
mkdir -p "$RUN_DIR"
ln -sfn "$(basename "$RUN_DIR")" "$(dirname "$RUN_DIR")/latest" 2>/dev/null || true
export WANDB_MODE="${WANDB_MODE:-offline}" TOKENIZERS_PARALLELISM=false
DATA="$RUN_DIR/data"
stage() { printf '\n==== [%s] %s ====\n' "$(date +%H:%M:%S)" "$*"; }
evaluate() {  # evaluate MODEL OUTPUT_DIR: the same settings for the base and the fine-tuned model
    $PY eval/model_evaluation.py --model_path "$1" --test_dataset_path "$DATA/test.jsonl" \
        --output_dir "$2" --mode "$EVAL_MODE" --max_new_tokens "$MAX_NEW_TOKENS"
}
seconds() { date +%s; }
T0=$(seconds)

stage "1/6 convert and split $INPUT_DIR -> $DATA (train / dev / test)"
$PY dataset/convert_and_split.py --input_dir "$INPUT_DIR" --converted_file "$DATA/converted_data.jsonl" \
    --train_file "$DATA/train.jsonl" --dev_file "$DATA/dev.jsonl" --test_file "$DATA/test.jsonl"
T1=$(seconds)

stage "2/6 TF-IDF + logistic regression baseline (C chosen on dev)"
$PY eval/baseline.py --train_dataset_path "$DATA/train.jsonl" --dev_dataset_path "$DATA/dev.jsonl" \
    --test_dataset_path "$DATA/test.jsonl" --output_dir "$RUN_DIR/eval_tfidf"
T2=$(seconds)

stage "3/6 evaluate the base model $MODEL"
evaluate "$MODEL" "$RUN_DIR/eval_base"
T3=$(seconds)

stage "4/6 fine-tuning, recipe '$RECIPE', through instruct_fine_tuning/run_training_lora.sh (best checkpoint chosen on dev)"
# export LEARNING_RATE=... (the launcher's settings the recipe sets) and TRAIN_ARGS=(...) (train_lora.py's flags)
eval "$($PY -m defect_judge.train.recipes "$RECIPE" --train_data "$DATA/train.jsonl")"
if [[ -n "$MAX_STEPS" ]]; then TRAIN_ARGS+=(--max_steps "$MAX_STEPS"); fi
MODEL_PATH="$MODEL" TRAIN_DATA="$DATA/train.jsonl" EVAL_DATA="$DATA/dev.jsonl" TEST_DATA="$DATA/test.jsonl" \
OUTPUT_DIR="$RUN_DIR/train" NUM_GPUS=1 \
    ./instruct_fine_tuning/run_training_lora.sh "${TRAIN_ARGS[@]}" --logging_steps 4 --seed 42 \
    --cpu_heap_mmap_threshold_mb 0
T4=$(seconds)

stage "5/6 evaluate the chosen checkpoint ($RUN_DIR/train/best_checkpoint.json) on test, and score it (ROC, VD-S)"
# The generative judge alone: the verdict it writes itself (the head, if any, left out).
$PY eval/model_evaluation.py --model_path "$RUN_DIR/train" --test_dataset_path "$DATA/test.jsonl" \
    --output_dir "$RUN_DIR/eval_tuned" --mode "$EVAL_MODE" --max_new_tokens "$MAX_NEW_TOKENS" --verdict_head none
RESULTS=("$RUN_DIR/eval_base" "$RUN_DIR/eval_tfidf" "$RUN_DIR/eval_tuned")
LABELS=("$(basename "$MODEL") (base)" "TF-IDF baseline" "$(basename "$MODEL") + $RECIPE")
# A run trained with a verdict head holds one beside its best model (defect_judge/model/head_files.py names its files).
if $PY -c 'import sys; from defect_judge.model.head_files import has_head; sys.exit(not has_head(sys.argv[1]))' \
        "$RUN_DIR/train"; then
    # The judge with its head: the head's verdict opens each answer and the model writes the reason after it.
    evaluate "$RUN_DIR/train" "$RUN_DIR/eval_head"
    RESULTS+=("$RUN_DIR/eval_head")
    LABELS+=("$(basename "$MODEL") + $RECIPE + head")
fi
# Score mode gives every sample a probability (the head's, when there is one, with what the model alone
# scores beside it): ROC, VD-S, and a decision threshold chosen on dev.
$PY eval/model_evaluation.py --model_path "$RUN_DIR/train" --test_dataset_path "$DATA/test.jsonl" \
    --output_dir "$RUN_DIR/eval_tuned_score" --mode score --threshold_from "$DATA/dev.jsonl"
T5=$(seconds)

stage "6/6 compare base, TF-IDF baseline and fine-tuned (with and without its head)"
$PY eval/plot_subtype_acc.py --results "${RESULTS[@]}" --labels "${LABELS[@]}" \
    --output_dir "$RUN_DIR/comparison"
T6=$(seconds)

$PY tools/demo_summary.py --run_dir "$RUN_DIR" --recipe "$RECIPE" \
    --timings "convert=$((T1 - T0))" "tfidf_baseline=$((T2 - T1))" "base_eval=$((T3 - T2))" \
              "training=$((T4 - T3))" "tuned_eval=$((T5 - T4))" "plots=$((T6 - T5))"
