"""The bad-input corpus (tests/data/bad_inputs/) through the real scripts, as a user runs them:
each bad case exits non-zero with one clear message naming the file (and line/sample/field),
shows no traceback and leaves no output file behind; each valid edge case runs to the end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO_ROOT, assert_clean_failure, run_script

CORPUS = REPO_ROOT / "tests" / "data" / "bad_inputs"
RAW_CASES = json.loads((CORPUS / "raw" / "manifest.json").read_text(encoding="utf-8"))
JSONL_CASES = json.loads((CORPUS / "jsonl" / "manifest.json").read_text(encoding="utf-8"))
CONVERT = REPO_ROOT / "dataset" / "convert_and_split.py"


def convert(tmp_path: Path, input_dir: Path):
    out = tmp_path / "out"
    return run_script(CONVERT, "--input_dir", input_dir, "--converted_file", out / "converted.jsonl",
                      "--train_file", out / "train.jsonl", "--test_file", out / "test.jsonl"), out


def test_corpus_has_at_least_15_bad_cases():
    bad = [name for name, case in RAW_CASES.items() if not case["valid"]] + list(JSONL_CASES)
    assert len(bad) >= 15


@pytest.mark.parametrize("name", sorted(RAW_CASES))
def test_raw_case(tmp_path, name):
    case = RAW_CASES[name]
    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(CORPUS / "raw" / name, folder / name)
    result, out = convert(tmp_path, folder)
    if case["valid"]:
        assert result.returncode == 0, result.stderr
        assert (out / "train.jsonl").is_file() and (out / "test.jsonl").is_file()
        return
    assert_clean_failure(result, str(folder / name), *case["expect"])
    assert not out.exists() or not any(out.iterdir()), "no output may be written"


def test_folder_with_no_samples(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a sample", encoding="utf-8")
    result, out = convert(tmp_path, folder)
    assert_clean_failure(result, str(folder), "no *.json or *.jsonl files")


def test_failed_conversion_keeps_the_previous_good_split(tmp_path):
    """A bad input after a good run leaves the earlier train/test files untouched."""
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(CORPUS / "raw" / "list_of_samples.json", good / "a.json")
    result, out = convert(tmp_path, good)
    assert result.returncode == 0, result.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    shutil.copy(CORPUS / "raw" / "missing_output_reason.json", good / "b.json")
    result, _ = convert(tmp_path, good)
    assert result.returncode == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ------------------------------------------- chat JSONL through training and evaluation

TRAIN = REPO_ROOT / "instruct_fine_tuning" / "train_lora.py"
EVALUATE = REPO_ROOT / "eval" / "model_evaluation.py"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def good_jsonl(tmp_path_factory) -> Path:
    from helpers_training import make_records, write_records

    return write_records(tmp_path_factory.mktemp("good-jsonl") / "good.jsonl", make_records(4))


def train(model: Path, train_data: Path, test_data: Path, out: Path, *extra) -> object:
    return run_script(TRAIN, "--model_path", model, "--train_data", train_data, "--test_data", test_data,
                      "--output_dir", out, "--report_to", "none", "--max_steps", "1", "--save_steps", "1",
                      "--max_length", "512", "--lora_rank", "4", *extra, env=ONE_THREAD)


def evaluate(model: Path, test_data: Path, out: Path, *extra) -> object:
    return run_script(EVALUATE, "--model_path", model, "--test_dataset_path", test_data, "--output_dir", out,
                      "--mode", "score", *extra, env=ONE_THREAD)


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], list(out.rglob("*"))


@pytest.mark.parametrize("role", ["train_data", "test_data", "test_dataset_path"])
@pytest.mark.parametrize("name", sorted(JSONL_CASES))
def test_jsonl_case_through_training_and_evaluation(name, role, tiny_model_dir, good_jsonl, tmp_path):
    """Each bad chat-JSONL file where training reads it (--train_data, --test_data) and where
    evaluation reads it (--test_dataset_path): one error naming file and line, nothing written."""
    bad = tmp_path / name
    shutil.copy(CORPUS / "jsonl" / name, bad)
    out = tmp_path / "out"
    if role == "train_data":
        result = train(tiny_model_dir, bad, good_jsonl, out)
    elif role == "test_data":
        result = train(tiny_model_dir, good_jsonl, bad, out)
    else:
        result = evaluate(tiny_model_dir, bad, out)
    assert_clean_failure(result, str(bad.parent / JSONL_CASES[name]["expect"][0]), *JSONL_CASES[name]["expect"][1:])
    assert_nothing_written(out)


# ----------------------------------------------------------- model folders

@pytest.fixture(scope="module")
def bad_models(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """One broken model folder per failure a user meets, built from the tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    root = tmp_path_factory.mktemp("bad-models")
    models = {"missing": root / "does-not-exist"}

    no_weights = models["no_weights"] = root / "no-weights"
    shutil.copytree(tiny_model_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))

    no_template = models["no_chat_template"] = root / "no-chat-template"
    shutil.copytree(tiny_model_dir, no_template, ignore=shutil.ignore_patterns("chat_template.jinja"))
    config = json.loads((no_template / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")

    truncated = models["truncated_safetensors"] = root / "truncated"
    shutil.copytree(tiny_model_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    # A model whose embedding table has 1,000 rows, with the 49,152-token tokenizer beside it.
    small = models["tokenizer_mismatch"] = root / "small-vocab"
    torch.manual_seed(0)
    small_config = LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=4, num_key_value_heads=2)
    AutoModelForCausalLM.from_config(small_config, dtype=torch.float32).save_pretrained(small)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model_dir / name, small / name)

    orphan = models["adapter_without_base"] = root / "orphan-adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(orphan)
    adapter_config = json.loads((orphan / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(root / "moved-away-base")
    (orphan / "adapter_config.json").write_text(json.dumps(adapter_config))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model_dir / name, orphan / name)
    return models


# What the user sees for each broken model, in training and in evaluation (None: does not apply).
MODEL_CASES = {
    "missing": (["model path does not exist"], ["model path does not exist"]),
    "no_weights": (["no model weights (*.safetensors)"], ["no model weights (*.safetensors)"]),
    "no_chat_template": (["chat template"], ["chat template"]),
    "truncated_safetensors": (["cannot load the model weights", "truncated or corrupt"],
                              ["cannot load the model weights", "truncated or corrupt"]),
    "tokenizer_mismatch": (["does not match the model"], ["does not match the model"]),
    # Training starts from a base model: an adapter folder is not one.
    "adapter_without_base": (["no config.json"], ["cannot find the base model", "--base_model_path"]),
}


@pytest.mark.parametrize("stage", ["train", "evaluate"])
@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_broken_model_folder(case, stage, bad_models, good_jsonl, tmp_path):
    model = bad_models[case]
    out = tmp_path / "out"
    if stage == "train":
        result = train(model, good_jsonl, good_jsonl, out)
        expected = MODEL_CASES[case][0]
    else:
        result = evaluate(model, good_jsonl, out)
        expected = MODEL_CASES[case][1]
    assert_clean_failure(result, str(model), *expected)
    assert_nothing_written(out)


# ---------------------------------------------------------- a 5 MB event

def test_a_5_mb_event_trains_cut_to_max_length_and_says_so(tiny_model_dir, tmp_path):
    """Valid, huge: the converter takes it, training cuts its event to fit and reports the count."""
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    line = "文件 src/huge.c 第 1 行：char *p = malloc(n); p[n] = 0; /* 越界写 */\n"
    sample = json.loads((CORPUS / "raw" / "list_of_samples.json").read_text(encoding="utf-8"))[0]
    huge = dict(sample, input=dict(sample["input"], event=line * (5_000_000 // len(line.encode()) + 1)))
    assert len(huge["input"]["event"].encode()) >= 5_000_000
    (raw_dir / "huge.json").write_text(json.dumps(huge, ensure_ascii=False), encoding="utf-8")
    shutil.copy(CORPUS / "raw" / "list_of_samples.json", raw_dir / "others.json")
    result, split = convert(tmp_path, raw_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    data = split / "converted.jsonl"
    out = tmp_path / "run"
    result = run_script(TRAIN, "--model_path", tiny_model_dir, "--train_data", data, "--output_dir", out,
                        "--eval_strategy", "no", "--save_strategy", "no", "--max_steps", "1",
                        "--max_length", "256", "--report_to", "none", "--lora_rank", "4", env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    records = data.read_text(encoding="utf-8").count("\n")
    assert f"train: {records} samples" in result.stderr
    assert "truncated to max_length 256 (event cut): 1" in result.stderr
    assert (out / "adapter_model.safetensors").is_file()
