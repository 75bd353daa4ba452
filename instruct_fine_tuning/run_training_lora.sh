#!/usr/bin/env bash
# Launch train_lora.py under the DeepSpeed launcher with the document's settings.
#   ./run_training_lora.sh                                   # the defaults below
#   MODEL_PATH=models/SmolLM2-135M-Instruct ./instruct_fine_tuning/run_training_lora.sh --max_steps 4
#   ./run_training_lora.sh --help                            # these settings and their values
# Each setting below can be edited here or overridden by an environment variable of the same name;
# extra arguments go to train_lora.py (python train_lora.py --help lists them). The defaults are written here only:
# train_lora.py run on its own, the recipes and the benchmarks read them from this file.
set -euo pipefail

# Relative paths given in the environment are relative to where you started the script;
# the defaults' relative paths (../dataset/train.jsonl) are relative to this folder, as in the document.
START_DIR="$PWD"
EVAL_DATA_GIVEN="${EVAL_DATA:-}"
MASTER_PORT_GIVEN="${MASTER_PORT:-}"
for name in MODEL_PATH TRAIN_DATA EVAL_DATA TEST_DATA OUTPUT_DIR HOSTFILE DS_CONFIG; do
    value="${!name:-}"
    if [[ -n "$value" && "$value" != /* ]]; then printf -v "$name" '%s' "$START_DIR/$value"; fi
done
cd "$(dirname "${BASH_SOURCE[0]}")"

# 默认参数配置
MODEL_PATH="${MODEL_PATH:-/data/Qwen2.5-Coder-7B-Instruct/}"          # 基础模型路径
TRAIN_DATA="${TRAIN_DATA:-../dataset/train.jsonl}"                    # 训练数据路径
EVAL_DATA="${EVAL_DATA:-$(dirname "$TRAIN_DATA")/dev.jsonl}"          # 验证数据路径 (../dataset/dev.jsonl): evaluation, early stopping, best checkpoint
TEST_DATA="${TEST_DATA:-../dataset/test.jsonl}"                       # 测试数据路径 (read only when there is no EVAL_DATA: evaluation falls back to it)
OUTPUT_DIR="${OUTPUT_DIR:-/data/qwen_instruct_lora_finetuned_0401}"  # 输出目录
LEARNING_RATE="${LEARNING_RATE:-3e-5}"                                # 学习率
MAX_LENGTH="${MAX_LENGTH:-4096}"                                      # 最大序列长度
SCHEDULER="${SCHEDULER:-linear}"                                      # 学习率调度器
LORA_RANK="${LORA_RANK:-32}"                                          # LoRA秩数
LORA_ALPHA="${LORA_ALPHA:-32}"                                        # LoRA Alpha值
MAX_EPOCHS="${MAX_EPOCHS:-300}"                                       # 最大训练轮数
SAVE_STEPS="${SAVE_STEPS:-20}"                                        # 保存间隔步数 (also the evaluation interval; auto: half an epoch)
PER_DEVICE_TRAIN_BATCH_SIZE="${PER_DEVICE_TRAIN_BATCH_SIZE:-1}"       # 每设备训练批次大小
GRADIENT_ACCUMULATION_STEPS="${GRADIENT_ACCUMULATION_STEPS:-8}"       # 梯度累积步数
VERDICT_HEAD="${VERDICT_HEAD:-}"                                      # 判断头: POOLING@LAYERS (mean@0.5, mean@0.27,0.4,0.53,0.67,0.8); empty: none

# Topology: GPUs per node (default: all visible ones, 1 on a CPU-only machine); a DeepSpeed
# hostfile ("host slots=8" lines) for several nodes; the rendezvous port (default 29500, or a
# free one when 29500 is taken, e.g. by another run on this machine).
NUM_GPUS_GIVEN="${NUM_GPUS:-}"
HOSTFILE="${HOSTFILE:-}"
MASTER_PORT="${MASTER_PORT:-29500}"
# ZeRO-2 for LoRA; for full-parameter training of a 7B model use ../ds_config_full_zero3.json.
DS_CONFIG="${DS_CONFIG:-../ds_config_lora.json}"

SETTINGS=(MODEL_PATH TRAIN_DATA EVAL_DATA TEST_DATA OUTPUT_DIR LEARNING_RATE MAX_LENGTH SCHEDULER LORA_RANK LORA_ALPHA
          MAX_EPOCHS SAVE_STEPS PER_DEVICE_TRAIN_BATCH_SIZE GRADIENT_ACCUMULATION_STEPS VERDICT_HEAD NUM_GPUS HOSTFILE
          MASTER_PORT DS_CONFIG)

die() { echo "run_training_lora.sh: error: $*" >&2; exit 2; }  # the settings are wrong (as InputError)
fail() { echo "run_training_lora.sh: failed: $*" >&2; exit 1; }  # the machine lacks something (as RunError)
warn() { echo "run_training_lora.sh: warning: $*" >&2; }

if [[ -x ../.venv/bin/python ]]; then PYTHON=../.venv/bin/python; else PYTHON="$(command -v python3 || command -v python || true)"; fi

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    echo "usage: [SETTING=value ...] ./run_training_lora.sh [train_lora.py flags ...]"
    echo
    echo "Settings (edit them at the top of this script or set them in the environment; current values):"
    for name in "${SETTINGS[@]}"; do
        if [[ "$name" == NUM_GPUS ]]; then value="${NUM_GPUS_GIVEN:-all visible GPUs (1 on a CPU)}"; else value="${!name}"; fi
        printf '  %-28s %s\n' "$name" "${value:-(none)}"
    done
    echo
    echo "Flags after the script go to train_lora.py and win over the settings (--max_steps 100, --finetuning_type full,"
    echo "--verdict_head_loss_weight 2, ...); every flag with its help: python instruct_fine_tuning/train_lora.py --help"
    exit 0
fi

count_gpus() {
    if [[ -n "${CUDA_VISIBLE_DEVICES+x}" ]]; then
        local visible="${CUDA_VISIBLE_DEVICES//[[:space:]]/}"
        if [[ -z "$visible" || "$visible" == "-1" ]]; then echo 0; else echo $(( $(tr -cd ',' <<< "$visible" | wc -c) + 1 )); fi
    elif command -v nvidia-smi > /dev/null 2>&1; then
        nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true
    else
        echo 0
    fi
}

# Numbers: checked here, so a typo stops the run in one line before anything is loaded or created.
check_int() {  # NAME MIN
    local value="${!1}"
    [[ "$value" =~ ^[0-9]+$ ]] && (( 10#$value >= $2 )) || die "$1 must be a whole number >= $2, got '$value'"
}
check_positive() {  # NAME: a number > 0 (3e-5, 0.5, 300)
    local value="${!1}"
    [[ "$value" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] && awk -v x="$value" 'BEGIN { exit !(x > 0) }' \
        || die "$1 must be a number > 0, got '$value'"
}
port_is_free() {
    "$PYTHON" - "$1" << 'EOF' 2> /dev/null
import socket, sys
with socket.socket() as s:
    s.bind(("", int(sys.argv[1])))
EOF
}
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1]); s.close()'
}

# Check everything before launching anything.
check_positive LEARNING_RATE
check_int MAX_LENGTH 16
check_int LORA_RANK 1
check_positive LORA_ALPHA
check_positive MAX_EPOCHS
[[ "$SAVE_STEPS" == auto ]] || check_int SAVE_STEPS 1
check_int PER_DEVICE_TRAIN_BATCH_SIZE 1
check_int GRADIENT_ACCUMULATION_STEPS 1
check_int MASTER_PORT 1
(( 10#$MASTER_PORT <= 65535 )) || die "MASTER_PORT must be a port number (1-65535), got '$MASTER_PORT'"
[[ -z "$NUM_GPUS_GIVEN" || "$NUM_GPUS_GIVEN" =~ ^[0-9]+$ ]] || die "NUM_GPUS must be a whole number >= 0, got '$NUM_GPUS_GIVEN'"
[[ "$SCHEDULER" =~ ^[a-z_]+$ ]] || die "SCHEDULER must be a transformers scheduler name (linear, cosine, ...), got '$SCHEDULER'"
[[ -d "$MODEL_PATH" ]] || die "MODEL_PATH: model folder not found: $MODEL_PATH"
[[ -f "$MODEL_PATH/config.json" ]] || die "MODEL_PATH: no config.json in $MODEL_PATH (not a Hugging Face model folder)"
[[ -f "$TRAIN_DATA" ]] || die "TRAIN_DATA: file not found: $TRAIN_DATA (run: python dataset/convert_and_split.py)"
if [[ ! -f "$EVAL_DATA" ]]; then
    [[ -z "$EVAL_DATA_GIVEN" ]] || die "EVAL_DATA: file not found: $EVAL_DATA (run: python dataset/convert_and_split.py)"
    [[ -f "$TEST_DATA" ]] || die "no dev split at $EVAL_DATA and TEST_DATA: file not found: $TEST_DATA (run: python" \
                                 "dataset/convert_and_split.py, which writes both)"
    warn "no dev split at $EVAL_DATA: evaluating, early stopping and choosing the best checkpoint on TEST_DATA" \
         "$TEST_DATA, so an accuracy later measured on it is optimistic (python dataset/convert_and_split.py writes" \
         "dataset/dev.jsonl)"
    EVAL_DATA="$TEST_DATA"
fi
# The test split is passed on only to be recognised should it also be the evaluation file (then results are optimistic).
TEST_ARGS=()
if [[ -f "$TEST_DATA" ]]; then TEST_ARGS=(--test_data "$TEST_DATA"); fi
[[ -f "$DS_CONFIG" ]] || die "DS_CONFIG: DeepSpeed config not found: $DS_CONFIG"
[[ -z "$HOSTFILE" || -f "$HOSTFILE" ]] || die "HOSTFILE: file not found: $HOSTFILE"
[[ ! -e "$OUTPUT_DIR" || -d "$OUTPUT_DIR" ]] || die "OUTPUT_DIR: $OUTPUT_DIR is a file, not a folder"

if [[ -x ../.venv/bin/deepspeed ]]; then
    DEEPSPEED=../.venv/bin/deepspeed
elif command -v deepspeed > /dev/null 2>&1; then
    DEEPSPEED=deepspeed
else
    fail "the deepspeed launcher is not installed (pip install -r requirements.txt)"
fi

if [[ -z "$MASTER_PORT_GIVEN" && -n "$PYTHON" ]] && ! port_is_free "$MASTER_PORT"; then
    taken="$MASTER_PORT"
    MASTER_PORT="$(free_port)"
    echo "run_training_lora.sh: port $taken is in use (another run?): using MASTER_PORT=$MASTER_PORT"
elif [[ -n "$MASTER_PORT_GIVEN" && -n "$PYTHON" ]] && ! port_is_free "$MASTER_PORT"; then
    die "MASTER_PORT $MASTER_PORT is in use (another run?): choose another, or unset MASTER_PORT to pick a free one"
fi

LAUNCHER=("$DEEPSPEED" --master_port "$MASTER_PORT")
if [[ -n "$HOSTFILE" ]]; then
    LAUNCHER+=(--hostfile "$HOSTFILE")  # every slot of every host, unless NUM_GPUS caps the GPUs per node
    if [[ -n "$NUM_GPUS_GIVEN" ]]; then LAUNCHER+=(--num_gpus "$NUM_GPUS_GIVEN"); fi
else
    NUM_GPUS="${NUM_GPUS_GIVEN:-$(count_gpus)}"
    if (( NUM_GPUS == 0 )); then NUM_GPUS=1; fi  # a CPU-only machine: one CPU rank
    LAUNCHER+=(--num_gpus "$NUM_GPUS")
fi

if [[ "$SAVE_STEPS" == auto ]]; then  # half an epoch: two checkpoints an epoch, each scored on the dev split
    [[ -z "$HOSTFILE" && -n "$PYTHON" ]] || die "SAVE_STEPS=auto counts the training samples with python on one node: set a number"
    # bad data is one line from python (run_main), as train_lora.py would say it
    SAVE_STEPS="$(PYTHONPATH="..${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c 'import sys
from defect_judge.errors import run_main
from defect_judge.train.recipes import half_epoch_save_steps as f
args, sys.argv = sys.argv[1:], ["run_training_lora.sh"]
run_main(lambda: print(f(args[0], int(args[1]), args[2:])))' "$TRAIN_DATA" \
        $(( PER_DEVICE_TRAIN_BATCH_SIZE * GRADIENT_ACCUMULATION_STEPS * NUM_GPUS )) "$@")" || exit $?
    echo "run_training_lora.sh: SAVE_STEPS=auto: a checkpoint every $SAVE_STEPS steps (half an epoch)"
fi
echo "run_training_lora.sh: ${LAUNCHER[*]} train_lora.py (model $MODEL_PATH, eval $EVAL_DATA, output $OUTPUT_DIR)"
exec "${LAUNCHER[@]}" train_lora.py \
    --deepspeed "$DS_CONFIG" \
    --model_path "$MODEL_PATH" \
    --train_data "$TRAIN_DATA" \
    --eval_data "$EVAL_DATA" \
    "${TEST_ARGS[@]}" \
    --output_dir "$OUTPUT_DIR" \
    --learning_rate "$LEARNING_RATE" \
    --max_length "$MAX_LENGTH" \
    --lr_scheduler_type "$SCHEDULER" \
    --lora_rank "$LORA_RANK" \
    --lora_alpha "$LORA_ALPHA" \
    --num_train_epochs "$MAX_EPOCHS" \
    --save_steps "$SAVE_STEPS" \
    --per_device_train_batch_size "$PER_DEVICE_TRAIN_BATCH_SIZE" \
    --gradient_accumulation_steps "$GRADIENT_ACCUMULATION_STEPS" \
    --verdict_head "$VERDICT_HEAD" \
    "$@"
