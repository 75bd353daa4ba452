#!/usr/bin/env bash
# Wheels for `make gpu-check` on a GPU machine without network access (README, "GPU check").
#
# For a box that already has the CUDA build of torch, accelerate and an older transformers/peft (a typical GPU
# image; the one this project borrows has torch 2.11, transformers 5.17, no deepspeed, trl or wandb), this
# downloads, here where pip reaches an index, what the check needs on top, for CPython 3.12 on x86_64 Linux:
#   transformers 5.24.0 and peft 0.21.2   requirements.txt's lower bounds (the versions the toolkit is tested with)
#   deepspeed 0.19.8 (+ hjson, pydantic)  the launcher and ZeRO; published as source only, so its pure-Python
#                                         wheel is built here
#   trl 1.16.0, datasets 4.8.5 (+ dill, multiprocess)   the TRL anchor (datasets 5.2.0 fails in
#                                         Dataset.from_list with "Can't pickle <class 'MonthDayNano'>")
#   regex                                 transformers 5.24 needs regex >= 2025.10.22
# wandb is not needed: the check trains with --report_to none.
#
#   tools/gpu_check_wheels.sh [DEST]           # default DEST: .whl (git-ignored); PYVER=3.11 for another Python
# then on the GPU box, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site DEST/*.whl && export PYTHONPATH=/tmp/site
#   GPU_PYTHON=python3 make gpu-check
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEST="${1:-.whl}"
PYTHON="${PYTHON:-.venv/bin/python}"
PYVER="${PYVER:-3.12}"
TARGET=(--only-binary=:all: --python-version "$PYVER" --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
mkdir -p "$DEST"
"$PYTHON" -m pip download -q --no-deps "${TARGET[@]}" -d "$DEST" \
    transformers==5.24.0 peft==0.21.2 trl==1.16.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 hjson \
    "regex>=2025.10.22"
# pydantic pins its compiled core exactly: let pip resolve the pair (and their two small pure-Python needs).
"$PYTHON" -m pip download -q "${TARGET[@]}" -d "$DEST" "pydantic>=2,<3"
rm -f "$DEST"/typing_extensions-*.whl  # every torch image has it; two copies would shadow the box's own
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" deepspeed==0.19.8
ls "$DEST"
du -sh "$DEST"
