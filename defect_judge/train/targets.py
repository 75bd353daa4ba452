"""What this toolkit's training must reach against TRL's SFTTrainer + PEFT on the same model, sequences, steps and
precision: at least TRL's training tokens/s, at most 0.8x its peak memory.

The training benchmark (``instruct_fine_tuning/bench_train.py``, peak RSS on a CPU) and the GPU check
(``tools/gpu_check/``, peak GPU memory on a GPU) both report their toolkit/TRL ratios against these, each under
its own names.
"""

TOKENS_PER_SECOND_VS_TRL = 1.0  # toolkit / TRL training tokens per second: at least this
PEAK_MEMORY_VS_TRL = 0.8  # toolkit / TRL peak memory (RSS on a CPU, GPU memory on a GPU): at most this
