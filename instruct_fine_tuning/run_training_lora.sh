#!/usr/bin/env bash
# Launch train_lora.py under the DeepSpeed launcher with the document's settings.
#   ./run_training_lora.sh                                   # the defaults below
#   MODEL_PATH=models/SmolLM2-135M-Instruct ./instruct_fine_tuning/run_training_lora.sh --max_steps 4
# Each setting below can be edited here or overridden by an environment variable of the same name;
# extra arguments go to train_lora.py (python train_lora.py --help lists them).
set -euo pipefail

# Relative paths given in the environment are relative to where you started the script;
# the defaults' relative paths (../dataset/train.jsonl) are relative to this folder, as in the document.
START_DIR="$PWD"
for name in MODEL_PATH TRAIN_DATA TEST_DATA OUTPUT_DIR HOSTFILE DS_CONFIG; do
    value="${!name:-}"
    if [[ -n "$value" && "$value" != /* ]]; then printf -v "$name" '%s' "$START_DIR/$value"; fi
done
cd "$(dirname "${BASH_SOURCE[0]}")"

# 默认参数配置
MODEL_PATH="${MODEL_PATH:-/data/Qwen2.5-Coder-7B-Instruct/}"          # 基础模型路径
TRAIN_DATA="${TRAIN_DATA:-../dataset/train.jsonl}"                    # 训练数据路径
TEST_DATA="${TEST_DATA:-../dataset/test.jsonl}"                       # 测试数据路径
OUTPUT_DIR="${OUTPUT_DIR:-/data/qwen_instruct_lora_finetuned_0401}"  # 输出目录
LEARNING_RATE="${LEARNING_RATE:-3e-5}"                                # 学习率
MAX_LENGTH="${MAX_LENGTH:-4096}"                                      # 最大序列长度
SCHEDULER="${SCHEDULER:-linear}"                                      # 学习率调度器
LORA_RANK="${LORA_RANK:-32}"                                          # LoRA秩数
LORA_ALPHA="${LORA_ALPHA:-32}"                                        # LoRA Alpha值
MAX_EPOCHS="${MAX_EPOCHS:-300}"                                       # 最大训练轮数
SAVE_STEPS="${SAVE_STEPS:-20}"                                        # 保存间隔步数 (also the evaluation interval)
PER_DEVICE_TRAIN_BATCH_SIZE="${PER_DEVICE_TRAIN_BATCH_SIZE:-1}"       # 每设备训练批次大小
GRADIENT_ACCUMULATION_STEPS="${GRADIENT_ACCUMULATION_STEPS:-8}"       # 梯度累积步数

# Topology: GPUs per node (default: all visible ones, 1 on a CPU-only machine); a DeepSpeed
# hostfile ("host slots=8" lines) for several nodes; the rendezvous port.
NUM_GPUS_GIVEN="${NUM_GPUS:-}"
HOSTFILE="${HOSTFILE:-}"
MASTER_PORT="${MASTER_PORT:-29500}"
# ZeRO-2 for LoRA; for full-parameter training of a 7B model use ../ds_config_full_zero3.json.
DS_CONFIG="${DS_CONFIG:-../ds_config_lora.json}"

die() { echo "run_training_lora.sh: error: $*" >&2; exit 2; }

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

# Check everything before launching anything.
[[ -d "$MODEL_PATH" ]] || die "MODEL_PATH: model folder not found: $MODEL_PATH"
[[ -f "$MODEL_PATH/config.json" ]] || die "MODEL_PATH: no config.json in $MODEL_PATH (not a Hugging Face model folder)"
[[ -f "$TRAIN_DATA" ]] || die "TRAIN_DATA: file not found: $TRAIN_DATA (run: python dataset/convert_and_split.py)"
[[ -f "$TEST_DATA" ]] || die "TEST_DATA: file not found: $TEST_DATA (run: python dataset/convert_and_split.py)"
[[ -f "$DS_CONFIG" ]] || die "DS_CONFIG: DeepSpeed config not found: $DS_CONFIG"
[[ -z "$HOSTFILE" || -f "$HOSTFILE" ]] || die "HOSTFILE: file not found: $HOSTFILE"
[[ "$MASTER_PORT" =~ ^[0-9]+$ ]] || die "MASTER_PORT must be a port number, got '$MASTER_PORT'"

if [[ -x ../.venv/bin/deepspeed ]]; then
    DEEPSPEED=../.venv/bin/deepspeed
elif command -v deepspeed > /dev/null 2>&1; then
    DEEPSPEED=deepspeed
else
    die "the deepspeed launcher is not installed (pip install -r requirements.txt)"
fi

LAUNCHER=("$DEEPSPEED" --master_port "$MASTER_PORT")
if [[ -n "$HOSTFILE" ]]; then
    LAUNCHER+=(--hostfile "$HOSTFILE")  # every slot of every host, unless NUM_GPUS caps the GPUs per node
    if [[ -n "$NUM_GPUS_GIVEN" ]]; then LAUNCHER+=(--num_gpus "$NUM_GPUS_GIVEN"); fi
else
    NUM_GPUS="${NUM_GPUS_GIVEN:-$(count_gpus)}"
    [[ "$NUM_GPUS" =~ ^[0-9]+$ ]] || die "NUM_GPUS must be a number, got '$NUM_GPUS'"
    if (( NUM_GPUS == 0 )); then NUM_GPUS=1; fi  # a CPU-only machine: one CPU rank
    LAUNCHER+=(--num_gpus "$NUM_GPUS")
fi

echo "run_training_lora.sh: ${LAUNCHER[*]} train_lora.py (model $MODEL_PATH, output $OUTPUT_DIR)"
exec "${LAUNCHER[@]}" train_lora.py \
    --deepspeed "$DS_CONFIG" \
    --model_path "$MODEL_PATH" \
    --train_data "$TRAIN_DATA" \
    --test_data "$TEST_DATA" \
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
    "$@"
