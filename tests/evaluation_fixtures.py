"""Fixtures shared by the evaluation's test files (model_evaluation.py, inference, model paths, the benchmark):
a single torch thread, six shipped test samples, a training OUTPUT_DIR of LoRA checkpoints, and the plain
definition of a candidate's log-probability. A test file imports the fixtures it uses by name."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from defect_judge.model import inference
from defect_judge.templates import parse_answer


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in the scripts started: on a CPU shared with other jobs two threads
    that wait on each other run many times slower. Correctness does not depend on it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    os.environ.pop("OMP_NUM_THREADS", None)


@pytest.fixture(scope="module")
def six_samples(shipped_split, tmp_path_factory) -> Path:
    """Six shipped test samples: three subtypes, each with a 是 and a 否 reference."""
    lines = shipped_split["test_file"].read_text(encoding="utf-8").splitlines()
    chosen, seen = [], set()
    for line in lines:
        record = json.loads(line)
        judgement = parse_answer(record["text"][-1]["content"]).judgement
        subtypes = {s for s, _ in seen}
        if (record["subtype"], judgement) in seen or (record["subtype"] not in subtypes and len(subtypes) == 3):
            continue
        seen.add((record["subtype"], judgement))
        chosen.append(line)
        if len(chosen) == 6:
            break
    assert len(chosen) == 6
    path = tmp_path_factory.mktemp("six") / "test.jsonl"
    path.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def training_output_dir(tiny_model_dir, tmp_path_factory, embedded_tokenizer) -> Path:
    """What training leaves: checkpoint-{step} adapters, the best adapter in OUTPUT_DIR, best_checkpoint.json."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path_factory.mktemp("run")
    for step, seed in ((2, 1), (4, 2)):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"],
                            init_lora_weights=False, task_type="CAUSAL_LM")
        adapter = get_peft_model(base, config)
        adapter.save_pretrained(run / f"checkpoint-{step}", safe_serialization=True)
        embedded_tokenizer.save_pretrained(run / f"checkpoint-{step}")
        if step == 4:  # the best one is also saved in OUTPUT_DIR itself
            adapter.save_pretrained(run, safe_serialization=True)
            embedded_tokenizer.save_pretrained(run)
    (run / "best_checkpoint.json").write_text(json.dumps(
        {"best_checkpoint": "checkpoint-4", "step": 4, "metric": "eval_loss", "value": 0.12,
         "greater_is_better": False, "finetuning_type": "lora", "base_model_path": str(tiny_model_dir)}))
    return run


def reference_logprob(model, candidate: inference.Candidate) -> float:
    """Full logits, one sequence at a time: the plain definition of log P(continuation | prompt)."""
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([candidate.input_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[t - 1, candidate.input_ids[t]].item() for t in range(candidate.start, len(candidate.input_ids)))
