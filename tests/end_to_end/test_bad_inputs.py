"""The bad-input corpus (tests/fixtures/bad_inputs/) through the real scripts, as a user runs them:
each bad case exits non-zero with one clear message naming the file (and line/sample/field),
shows no traceback and leaves no output file behind; each valid edge case runs to the end."""
from __future__ import annotations

import json
import logging
import re
import shutil
import warnings
from pathlib import Path

import pytest

from defect_judge import load_script
from helpers import BASELINE, CONVERT, EVALUATE, LAUNCHER, PLOT, REPO_ROOT, TRAIN, assert_clean_failure, run_script


CORPUS = REPO_ROOT / "tests" / "fixtures" / "bad_inputs"
RAW_CASES = json.loads((CORPUS / "raw" / "manifest.json").read_text(encoding="utf-8"))
JSONL_CASES = json.loads((CORPUS / "jsonl" / "manifest.json").read_text(encoding="utf-8"))


def convert(tmp_path: Path, input_dir: Path):
    """The converter with the document's two-way split (these cases are about reading the files)."""
    out = tmp_path / "out"
    return run_script(CONVERT, "--input_dir", input_dir, "--converted_file", out / "converted.jsonl",
                      "--train_file", out / "train.jsonl", "--test_file", out / "test.jsonl", "--dev_ratio", "0"), out


def test_corpus_has_at_least_15_bad_cases():
    bad = [name for name, case in RAW_CASES.items() if not case["valid"]] + list(JSONL_CASES)
    assert len(bad) >= 15


@pytest.mark.parametrize("name", sorted(RAW_CASES))
def test_raw_case(tmp_path, name):
    case = RAW_CASES[name]
    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(CORPUS / "raw" / name, folder / name)
    if case["valid"]:  # beside enough other samples for a split that leaves training something
        raw_corpus(folder, subtypes=("A",), per_subtype=4, name="others.json")
    result, out = convert(tmp_path, folder)
    if case["valid"]:
        assert result.returncode == 0, result.stderr
        converted = jsonl(out / "converted.jsonl")
        assert any(r["id"].startswith(name) for r in converted), "the case's samples are read"
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

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def good_jsonl(tmp_path_factory) -> Path:
    from helpers import make_records, write_records

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


# ------------------------------------- misuse a new user meets (issue 16), one test a row

SPLIT_FILES = {"--converted_file": "converted.jsonl", "--train_file": "train.jsonl", "--dev_file": "dev.jsonl",
               "--test_file": "test.jsonl"}


def raw_sample(subtype: str, judgement: str, event: str) -> dict:
    return {"instruction": [{"subtype": subtype}],
            "input": {"task": "请判断下面的C函数是否存在缺陷。", "event": event,
                      "output_format": "判断:是/否\n\n原因：<简要说明>"},
            "output": {"judgement": judgement, "reason": "见代码。"}}


def raw_corpus(folder: Path, subtypes=("A", "B"), per_subtype: int = 10, name: str = "samples.json") -> Path:
    """``per_subtype`` samples of each subtype, judgements alternating, every event distinct."""
    samples = [raw_sample(subtype, "是" if i % 2 else "否", f"int {subtype}_{i}(void);")
               for subtype in subtypes for i in range(per_subtype)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    return folder


def convert_into(out: Path, input_dir: Path, *extra: str, **names: str):
    """The converter with every output under ``out`` (file names from SPLIT_FILES, overridden by ``names``)."""
    files = SPLIT_FILES | {f"--{k}": v for k, v in names.items()}
    paths = [arg for flag, name in files.items() for arg in (flag, out / name)]
    return run_script(CONVERT, "--input_dir", input_dir, *paths, *extra)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("names, words", [
    ({"train_file": "x.jsonl", "test_file": "x.jsonl"}, "--train_file and --test_file name the same file"),
    ({"converted_file": "x.jsonl", "train_file": "x.jsonl"}, "--converted_file and --train_file name the same file"),
    ({"converted_file": "x.jsonl", "test_file": "x.jsonl"}, "--converted_file and --test_file name the same file"),
    ({"dev_file": "x.jsonl", "test_file": "x.jsonl"}, "--dev_file and --test_file name the same file"),
    ({"test_file": "split_stats.json"}, "--test_file and split_stats.json (beside --train_file) name the same file"),
])
def test_row1_equal_output_paths_are_refused_before_anything_is_written(tmp_path, names, words):
    """train_file = test_file used to exit 0 with only the test records left in the file."""
    out = tmp_path / "out"
    result = convert_into(out, raw_corpus(tmp_path / "raw"), **names)
    assert_clean_failure(result, str(out / "x.jsonl" if "x.jsonl" in names.values() else out / "split_stats.json"),
                         words)
    assert not out.exists()


def test_row1_dev_ratio_0_with_a_dev_file_is_refused_and_touches_nothing(tmp_path):
    """--dev_ratio 0 writes no dev split: naming one to write is a contradiction, refused before anything is
    written; no file of an earlier run is deleted."""
    out = tmp_path / "out"
    assert convert_into(out, raw_corpus(tmp_path / "raw")).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = convert_into(out, raw_corpus(tmp_path / "raw"), "--dev_ratio", "0", dev_file="train.jsonl")
    assert_clean_failure(result, "--dev_ratio 0 writes no dev split", "--dev_file")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_row2_whitespace_around_labels_is_stripped_and_said_once(tmp_path):
    """"是 " and "是" are one judgement, "A " / "A\\n" and "A" one subtype: no conflict, no extra class."""
    folder = raw_corpus(tmp_path / "raw", subtypes=("A",), per_subtype=6)
    padded = [raw_sample("A ", "是 ", "int A_1(void);"),  # the same question as A_1 (是): a duplicate, no conflict
              raw_sample("A\n", " 否", "int A_padded(void);"), raw_sample("\tA", "是\n", "int A_tab(void);")]
    (folder / "padded.json").write_text(json.dumps(padded, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out"
    result = convert_into(out, folder)
    assert result.returncode == 0, result.stderr[-3000:]
    notes = [line for line in result.stderr.splitlines() if "stripped the whitespace" in line]
    assert len(notes) == 1, result.stderr
    assert "instruction[0].subtype of 3 sample(s)" in notes[0] and "output.judgement of 3 sample(s)" in notes[0]
    records = jsonl(out / "converted.jsonl")
    assert {r["subtype"] for r in records} == {"A"}
    assert {r["text"][-1]["content"].split("\n")[0] for r in records} == {"判断:是", "判断:否"}
    assert json.loads((out / "split_stats.json").read_text(encoding="utf-8"))["judgements"] == ["否", "是"]


def test_row2_a_control_character_inside_a_subtype_is_refused_by_converter_and_evaluator(tmp_path, good_jsonl):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "bad.json").write_text(json.dumps([raw_sample("空指针\n解引用", "是", "int f(void);")],
                                                ensure_ascii=False), encoding="utf-8")
    result = convert_into(tmp_path / "out", folder)
    assert_clean_failure(result, str(folder / "bad.json"), "sample 0", "field 'instruction[0].subtype'",
                         "control characters", "U+000A")
    # The same rule where evaluation (and training) read chat records.
    rows = jsonl(good_jsonl)
    rows[1]["subtype"] = "内存\t泄漏"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result = run_script(EVALUATE, "--model_path", tmp_path / "no-model", "--test_dataset_path", bad,
                        "--output_dir", tmp_path / "eval")
    assert_clean_failure(result, f"{bad}:2", "field 'subtype'", "control characters", "U+0009")


def test_row2_chat_records_get_the_same_rule(tmp_path, good_jsonl, caplog):
    from defect_judge.data.schema import read_records

    rows = jsonl(good_jsonl)
    rows[0]["subtype"] += " "
    rows[1]["text"][-1]["content"] = rows[1]["text"][-1]["content"].replace("判断:否", "判断: 否 ")
    padded = tmp_path / "padded.jsonl"
    padded.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        records = read_records(padded)
    assert records[0].subtype == rows[0]["subtype"].strip() and records[1].judgement == "否"
    notes = [r.getMessage() for r in caplog.records if "stripped the whitespace" in r.getMessage()]
    assert len(notes) == 1 and "judgement of 1 sample(s), subtype of 1 sample(s)" in notes[0], notes


def launcher_env(model: Path, data: Path, out: Path) -> dict[str, str]:
    return {"MODEL_PATH": str(model), "TRAIN_DATA": str(data), "TEST_DATA": str(data), "EVAL_DATA": str(data),
            "OUTPUT_DIR": str(out), "NUM_GPUS": "1"}


@pytest.mark.parametrize("setting, value", [
    ("LEARNING_RATE", "-1"), ("LEARNING_RATE", "3e-5x"), ("MAX_LENGTH", "abc"), ("SAVE_STEPS", "0"),
    ("MAX_EPOCHS", "0"), ("LORA_RANK", "1.5"), ("LORA_ALPHA", "abc"), ("PER_DEVICE_TRAIN_BATCH_SIZE", "0"),
    ("GRADIENT_ACCUMULATION_STEPS", "-2"), ("MASTER_PORT", "70000"), ("NUM_GPUS", "two")])
def test_row4_the_launcher_checks_every_number_before_launching(setting, value, tiny_model_dir, good_jsonl,
                                                                tmp_path):
    out = tmp_path / "out"
    env = launcher_env(tiny_model_dir, good_jsonl, out) | {setting: value}
    result = run_script(LAUNCHER, cwd=tmp_path, env=env, timeout=120)
    assert_clean_failure(result, f"{setting} must be", f"'{value}'")
    assert "deepspeed" not in result.stdout and not out.exists()


def test_row5_launcher_help_lists_its_settings_and_where_the_flags_are(tmp_path):
    """The launcher's --help is its own settings with their current values (a screen, not train_lora.py's
    hundreds of TrainingArguments lines), and says where the flags are."""
    result = run_script(LAUNCHER, "--help", cwd=tmp_path, env={"MODEL_PATH": str(tmp_path / "nowhere")}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model folder not found" not in result.stdout + result.stderr
    settings = result.stdout.index("Settings")
    for name in ("MODEL_PATH", "TRAIN_DATA", "OUTPUT_DIR", "LEARNING_RATE", "MAX_LENGTH", "SAVE_STEPS", "VERDICT_HEAD",
                 "MASTER_PORT", "DS_CONFIG"):
        assert settings < result.stdout.index(name), name
    assert str(tmp_path / "nowhere") in result.stdout  # current values, as the environment set them
    assert "train_lora.py --help" in result.stdout and len(result.stdout.splitlines()) <= 40


def test_row6_a_well_formed_other_judgement_is_wrong_not_invalid_and_one_class_warns(good_jsonl, tmp_path, caplog):
    """Every reference is 是: an answer 判断:否 is a wrong prediction, not invalid_format."""
    evaluation = load_script("eval/model_evaluation.py")
    from defect_judge.evaluate.metrics import metrics
    from defect_judge.templates import parse_answer

    rows = [r for r in jsonl(good_jsonl) if r["text"][-1]["content"].startswith("判断:是")]
    one_class = tmp_path / "yes_only.jsonl"
    one_class.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        records, vocabulary, skipped = evaluation.read_test_set(str(one_class), 0)
    assert vocabulary == ["否", "是"] and not skipped
    assert any("single judgement (是)" in r.getMessage() for r in caplog.records), caplog.text
    prediction = parse_answer("判断:否\n\n原因：检查过了。", vocabulary).judgement
    row = {"id": records[0].id, "subtype": records[0].subtype, "reference": records[0].judgement,
           "prediction": prediction, "correct": prediction == records[0].judgement}
    overall = metrics([row], vocabulary)["overall"]
    assert prediction == "否" and overall["invalid_format"] == 0 and overall["correct"] == 0


def test_row7_upper_case_suffixes_are_read_and_hidden_files_skipped_and_counted(tmp_path):
    folder = raw_corpus(tmp_path / "raw", name="a.JSON")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.json").write_text("not json", encoding="utf-8")
    (folder / "._a.json").write_bytes(b"\x00\x05\x16\x07Mac OS X        \x00\x02")  # a macOS resource fork
    (folder / "notes.txt").write_text("not data", encoding="utf-8")
    out = tmp_path / "out"
    result = convert_into(out, folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(jsonl(out / "converted.jsonl")) == 20
    assert "reading 1 raw file(s)" in result.stderr and "skipped 2 hidden entries" in result.stderr
    assert "1 file(s) not named *.json / *.jsonl" in result.stderr


def test_row8_a_split_far_from_the_requested_share_says_why(tmp_path):
    folder = raw_corpus(tmp_path / "raw")
    result = convert_into(tmp_path / "tiny", folder, "--test_ratio", "0.01")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the test split holds 4 of 20 samples (20.0%), not the requested 1.0%" in result.stderr
    assert "by design every subtype gets at least one test sample" in result.stderr
    assert "the dev split holds 4 of 20 samples (20.0%), not the requested 10.0%" in result.stderr
    result = convert_into(tmp_path / "fine", folder, "--test_ratio", "0.2", "--dev_ratio", "0.2")
    assert result.returncode == 0 and "not the requested" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def truncated_run(tiny_model_dir, good_jsonl, tmp_path_factory):
    """Generate mode with 2 new tokens: the random tiny model never reaches 判断: or its end of turn."""
    out = tmp_path_factory.mktemp("truncated") / "eval"
    result = run_script(EVALUATE, "--model_path", tiny_model_dir, "--test_dataset_path", good_jsonl, "--output_dir",
                        out, "--mode", "generate", "--max_new_tokens", "2", env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads((out / "evaluation_results.json").read_text(encoding="utf-8"))


def test_row9_answers_cut_by_max_new_tokens_are_counted_apart(truncated_run):
    result, results = truncated_run
    cut = [s for s in results["samples"] if s["stopped"] is False]
    assert cut, "the tiny model stopped every answer within 2 tokens"
    overall = results["overall"]
    assert overall["truncated"] == len(cut)
    assert overall["truncated_invalid"] == sum(1 for s in cut if s["prediction"] is None)
    assert sum(s["truncated"] for s in results["per_subtype"].values()) == len(cut)
    header = next(line for line in result.stdout.splitlines() if line.startswith("subtype"))
    assert header.split()[-2:] == ["invalid", "truncated"]
    assert f"truncated: {len(cut)} answer(s) hit the limit of 2 new tokens" in result.stdout


def test_row10_a_reference_without_judgement_is_an_error_naming_file_and_line(tmp_path, good_jsonl):
    rows = jsonl(good_jsonl)
    rows[2]["text"][-1]["content"] = "原因：只有原因，没有判断。"
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result = run_script(EVALUATE, "--model_path", tmp_path / "no-model", "--test_dataset_path", test_file,
                        "--output_dir", tmp_path / "out")
    assert_clean_failure(result, f"{test_file}:3", f"sample {rows[2]['id']}", "field 'text'", "no judgement",
                         "--skip_unlabelled")
    assert not (tmp_path / "out").exists()


def long_subtype_results(path: Path, model_path: str, subtypes: list[str], right: int) -> Path:
    """An evaluation_results.json from the real results code: 4 samples a subtype, ``right`` of them correct."""
    from defect_judge.evaluate.results import results_document

    samples = [{"id": f"s{i}-{k}", "subtype": name, "reference": "是", "prediction": "是" if k < right else "否",
                "correct": k < right} for i, name in enumerate(subtypes) for k in range(4)]
    document = results_document(model_path=model_path, model_kind="lora", test_dataset_path="test.jsonl",
                                mode="generate", settings={}, judgements=["否", "是"], samples=samples)
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def test_row11_long_and_emoji_subtype_names_are_wrapped_without_glyph_warnings(tmp_path):
    from PIL import Image

    subtypes = ["🐛 空指针解引用 🔥", "Use after free of the connection object in the packet parser of the network "
                "driver when a reset arrives", "整数溢出导致的缓冲区越界写入以及随后的堆破坏和任意代码执行", "除零"]
    base = long_subtype_results(tmp_path / "base.json", "runs/base", subtypes, 2)
    tuned = long_subtype_results(tmp_path / "tuned.json", "runs/tuned", subtypes, 3)
    out = tmp_path / "comparison"
    result = run_script(PLOT, "--results", base, tuned, "--output_dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Glyph" not in result.stderr and "missing from font" not in result.stderr, result.stderr
    with Image.open(out / "model_comparison.png") as png:
        assert 1000 <= png.width <= 1800, png.width  # the full names made it 2,900 px, the bars a third of it
    summary = (out / "comparison_summary.md").read_text(encoding="utf-8")
    assert all(f"| {name} |" in summary for name in subtypes)  # the full names stay in the summary
    from defect_judge.report.accuracy_bars import accuracy_figure
    from defect_judge.evaluate.metrics import summary as summarise

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = accuracy_figure(subtypes, [("m", [summarise([{"correct": True, "prediction": "是"}])] * 4)], title="t")
        fig.canvas.draw()
    assert not [w for w in caught if "Glyph" in str(w.message)]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "空指针解引用 (n=1)" and all(label.count("\n") <= 1 for label in labels)
    assert labels[1].endswith("… (n=1)") and labels[3] == "除零 (n=1)"


GPU_SECTIONS = {"docs/gpu.md": "## On a GPU box"}


@pytest.mark.parametrize("readme", sorted(GPU_SECTIONS))
def test_row12_the_gpu_steps_work_typed_in_order(readme):
    """No `cd` that a later step does not undo: every command runs from the root, and every script and config
    it names is there; an index URL always comes with torch pinned to what requirements.txt asks for."""
    text = (REPO_ROOT / readme).read_text(encoding="utf-8")
    section = text.split(GPU_SECTIONS[readme], 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)
                for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands and not [c for c in commands if re.match(r"(cd|pushd)\b", c)]
    for command in commands:
        for word in command.split():
            value = word.split("=", 1)[1] if re.match(r"[A-Z_]+=", word) else word
            if re.fullmatch(r"\.?/?[\w./-]+\.(py|sh)|[\w./-]*ds_config\w*\.json", value):
                assert (REPO_ROOT / value).exists(), f"{readme}: {command!r} names {value}, not there from the root"
    pin = re.search(r"^torch>=([\d.]+)", (REPO_ROOT / "requirements.txt").read_text(), re.M).group(1)
    installs = re.findall(r"pip install\s+(\S+)\s+--index-url\s+(\S+)", section)
    assert installs and all(spec.strip('"') == f"torch=={pin}" for spec, _ in installs), installs
    assert any(url.rstrip("`").endswith("/whl/cpu") for _, url in installs)  # how to get the CPU build


@pytest.fixture(scope="module")
def a_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("output-is-a-file") / "results"
    path.write_text("an existing file, not a folder\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("script", ["model_evaluation", "train_lora", "baseline", "plot_subtype_acc",
                                    "run_training_lora.sh"])
def test_row13_an_output_dir_that_is_a_file_is_named_as_such(script, a_file, tiny_model_dir, good_jsonl, tmp_path):
    env = ONE_THREAD
    command = {
        "model_evaluation": [EVALUATE, "--model_path", tiny_model_dir, "--test_dataset_path", good_jsonl,
                             "--output_dir", a_file],
        "train_lora": [TRAIN, "--model_path", tiny_model_dir, "--train_data", good_jsonl, "--eval_data", good_jsonl,
                       "--output_dir", a_file, "--report_to", "none"],
        "baseline": [BASELINE, "--train_dataset_path", good_jsonl, "--test_dataset_path", good_jsonl,
                     "--dev_dataset_path", "", "--output_dir", a_file],
        "plot_subtype_acc": [PLOT, "--results", good_jsonl, good_jsonl, "--output_dir", a_file],
        "run_training_lora.sh": [LAUNCHER],
    }[script]
    if script == "run_training_lora.sh":
        env = ONE_THREAD | launcher_env(tiny_model_dir, good_jsonl, a_file)
    result = run_script(*command, cwd=tmp_path, env=env, timeout=300)
    assert_clean_failure(result, str(a_file), "is a file, not a folder")
    assert a_file.read_text(encoding="utf-8") == "an existing file, not a folder\n"
