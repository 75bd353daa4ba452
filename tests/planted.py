"""Records and prompts for the verdict-head tests: a judgement decided by one marker word planted in otherwise
random code-like text, and a 4-layer tiny real model to read it from."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from defect_judge.data.schema import RawSample, Record, raw_to_record
from defect_judge.model.chat import render_prompt
from helpers import OUTPUT_FORMAT, TASK, build_tiny_model

FILLER = ["buf", "len", "ptr", "count", "node", "list", "size", "index", "flag", "data", "next", "value", "tmp"]


def planted(n: int, seed: int) -> list[Record]:
    """Records whose judgement is decided by one marker word in otherwise random code-like text."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        defective = i % 2 == 0
        words = [rng.choice(FILLER) for _ in range(rng.randint(8, 20))]
        words.insert(rng.randrange(len(words) + 1), "unchecked" if defective else "validated")
        raw = RawSample(subtype="空指针解引用", task=TASK, event="int f(void) { " + " ".join(words) + "; }",
                        output_format=OUTPUT_FORMAT, judgement="是" if defective else "否", reason="见代码。",
                        pair_id=f"p{i // 2}")
        records.append(raw_to_record(raw, f"s{seed}-{i}.json#0"))
    return records


def ids_of(tokenizer, records: list[Record]) -> list[list[int]]:
    return [tokenizer(render_prompt(tokenizer, r.prompt_messages), add_special_tokens=False)["input_ids"]
            for r in records]


def four_layer_model(folder: Path, tokenizer) -> tuple[object, Path]:
    """A tiny real model of 4 decoder layers (hidden size 64), loaded in float32 for inference, and its folder."""
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model(folder, tokenizer, layers=4, seed=3)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), folder
