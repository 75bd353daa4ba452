"""Security, on the real scripts: code shipped in a model folder never runs unless the user passes
--trust_remote_code; a pickle file in a model folder is never unpickled unless asked for; secrets in
the environment never reach any file a run writes; paths inside data files never make a script
write outside its output folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from defect_judge import free_port
from helpers import (CONVERT, EVALUATE, LAUNCHER, PLOT, REPO_ROOT, TRAIN, assert_clean_failure, make_records,
                    run_script, write_records)

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("security-data")
    write_records(folder / "train.jsonl", make_records(2))
    write_records(folder / "test.jsonl", make_records(2, start=2))
    return folder


def train(model: Path, data: Path, out: Path, *extra, env: dict | None = None):
    return run_script(TRAIN, "--model_path", model, "--train_data", data / "train.jsonl", "--test_data",
                      data / "test.jsonl", "--output_dir", out, "--report_to", "none", "--max_steps", "1",
                      "--save_strategy", "no", "--eval_strategy", "no", "--max_length", "512", "--lora_rank", "4",
                      *extra, env=ONE_THREAD | (env or {}))


def evaluate(model: Path, data: Path, out: Path, *extra, env: dict | None = None, check: bool = False):
    return run_script(EVALUATE, "--model_path", model, "--test_dataset_path", data / "test.jsonl", "--output_dir",
                      out, "--mode", "score", *extra, env=ONE_THREAD | (env or {}), check=check)


# --------------------------------------------------------- trust_remote_code

REMOTE_CODE = '''\
"""Code shipped with a model folder: it runs only if the user trusts the folder."""
from pathlib import Path

Path({marker!r}).write_text("the model folder's code ran", encoding="utf-8")

from transformers import LlamaConfig, LlamaForCausalLM


class EvilConfig(LlamaConfig):
    model_type = "evil_llama"


class EvilForCausalLM(LlamaForCausalLM):
    config_class = EvilConfig
'''


@pytest.fixture
def remote_code_model(tiny_model_dir, tmp_path) -> tuple[Path, Path]:
    """The tiny model with an auto_map pointing at a .py file that writes a marker when imported."""
    folder, marker = tmp_path / "remote-code-model", tmp_path / "REMOTE_CODE_RAN"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "evil.py").write_text(REMOTE_CODE.format(marker=str(marker)), encoding="utf-8")
    config = json.loads((folder / "config.json").read_text())
    config |= {"model_type": "evil_llama", "architectures": ["EvilForCausalLM"],
               "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_code_in_a_model_folder_runs_only_with_trust_remote_code(stage, remote_code_model, data, tmp_path):
    folder, marker = remote_code_model
    run = train if stage == "train" else evaluate
    env = {"HF_MODULES_CACHE": str(tmp_path / "hf-modules")}  # where transformers copies trusted code
    refused = run(folder, data, tmp_path / "out", env=env)
    assert_clean_failure(refused, "trust_remote_code")
    assert not marker.exists(), "the model folder's code ran without --trust_remote_code"
    assert not (tmp_path / "hf-modules").exists() or not list((tmp_path / "hf-modules").rglob("evil.py"))
    # The same folder with the flag: the code runs (so the refusal above is the flag's doing).
    run(folder, data, tmp_path / "trusted", "--trust_remote_code", env=env)
    assert marker.read_text(encoding="utf-8") == "the model folder's code ran"


# -------------------------------------------------------------------- pickle

class _WritesMarker:
    """Unpickling this writes a file: what a malicious pytorch_model.bin can do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "unpickled"))


@pytest.fixture
def pickle_models(tiny_model_dir, tmp_path) -> tuple[Path, Path, Path]:
    """A model folder whose only weights are a pickle, and a LoRA adapter whose weights are a pickle."""
    import pickle

    marker = tmp_path / "PICKLE_LOADED"
    model = tmp_path / "pickle-model"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns("*.safetensors"))
    (model / "pytorch_model.bin").write_bytes(pickle.dumps({"payload": _WritesMarker(marker)}))
    adapter = tmp_path / "pickle-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": str(tiny_model_dir), "r": 2, "lora_alpha": 2,
         "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}))
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps({"payload": _WritesMarker(marker)}))
    return model, adapter, marker


def test_pickle_weights_are_refused_by_training_and_evaluation(pickle_models, data, tmp_path):
    model, adapter, marker = pickle_models
    assert_clean_failure(train(model, data, tmp_path / "t"), str(model), "pickle", "--allow_pickle")
    assert_clean_failure(evaluate(model, data, tmp_path / "e"), str(model), "pickle", "--allow_pickle")
    assert_clean_failure(evaluate(adapter, data, tmp_path / "a"), str(adapter), "safetensors", "pickle",
                         "--allow_pickle")
    assert not marker.exists(), "a pickle from a model folder was loaded"


def test_allow_pickle_still_loads_only_tensors(pickle_models, data, tmp_path):
    """--allow_pickle reads .bin weights, but with torch's weights-only unpickler: a pickle that
    would run code is still refused, with one line and no marker."""
    model, adapter, marker = pickle_models
    for folder in (model, adapter):
        assert_clean_failure(evaluate(folder, data, tmp_path / folder.name, "--allow_pickle"), str(folder))
    assert not marker.exists(), "--allow_pickle let a pickle run code"


def test_allow_pickle_evaluates_a_bin_model_like_its_safetensors_twin(tiny_model_dir, data, tmp_path):
    """The same tiny model saved as pytorch_model.bin and as safetensors: with --allow_pickle the
    .bin one loads and gives the same probabilities; without it, it is refused."""
    import torch
    from safetensors.torch import load_file

    bin_model = tmp_path / "bin-model"
    shutil.copytree(tiny_model_dir, bin_model, ignore=shutil.ignore_patterns("*.safetensors*"))
    torch.save(load_file(tiny_model_dir / "model.safetensors"), bin_model / "pytorch_model.bin")
    assert (bin_model / "pytorch_model.bin").is_file() and not list(bin_model.glob("*.safetensors"))
    assert_clean_failure(evaluate(bin_model, data, tmp_path / "refused"), "--allow_pickle")
    evaluate(bin_model, data, tmp_path / "bin", "--allow_pickle", check=True)
    evaluate(tiny_model_dir, data, tmp_path / "safetensors", check=True)
    samples = [{row["id"]: row["probabilities"] for row in
                json.loads((tmp_path / out / "evaluation_results.json").read_text())["samples"]}
               for out in ("bin", "safetensors")]
    assert samples[0].keys() == samples[1].keys() and samples[0]
    for key, probabilities in samples[0].items():
        assert probabilities == pytest.approx(samples[1][key], abs=1e-6)


# ------------------------------------------------------------------- secrets

def test_secrets_in_the_environment_reach_no_file_or_log(tiny_model_dir, data, tmp_path):
    """Training under the DeepSpeed launcher with wandb (offline) and evaluation of its output, with
    fake secrets in the environment: none of them appears in anything either run wrote or printed."""
    secrets = {name: f"fake-{name.lower()}-{uuid.uuid4().hex}" for name in
               ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY")}
    wandb_home = tmp_path / "wandb-home"
    env = ONE_THREAD | secrets | {
        "WANDB_MODE": "offline", "WANDB_CACHE_DIR": str(wandb_home / "cache"),
        "WANDB_CONFIG_DIR": str(wandb_home / "config"), "WANDB_DATA_DIR": str(wandb_home / "data"),
        "MASTER_PORT": str(free_port()), "MODEL_PATH": str(tiny_model_dir), "TRAIN_DATA": str(data / "train.jsonl"),
        "TEST_DATA": str(data / "test.jsonl"), "OUTPUT_DIR": str(tmp_path / "run"), "NUM_GPUS": "1",
        "LORA_RANK": "4", "GRADIENT_ACCUMULATION_STEPS": "1"}
    training = subprocess.run([str(LAUNCHER), "--max_steps", "2", "--save_steps", "2", "--max_length", "512",
                               "--logging_steps", "1", "--report_to", "wandb"], cwd=REPO_ROOT,
                              env=dict(os.environ) | env, capture_output=True, text=True, timeout=600)
    assert training.returncode == 0, (training.stdout + training.stderr)[-4000:]
    evaluation = evaluate(tmp_path / "run", data, tmp_path / "eval", env=secrets)
    assert evaluation.returncode == 0, evaluation.stderr[-4000:]

    run = tmp_path / "run"
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb")), "wandb wrote no offline run"
    assert (run / "checkpoint-2" / "training_args.bin").is_file()
    assert (tmp_path / "eval" / "evaluation_results.json").is_file()
    # Weights are written as safetensors, never as pickles.
    assert (run / "adapter_model.safetensors").is_file()
    assert not [p for p in run.rglob("*") if p.name in ("pytorch_model.bin", "adapter_model.bin")]

    written = [p for folder in (run, tmp_path / "eval", wandb_home) if folder.exists()
               for p in folder.rglob("*") if p.is_file()]
    assert len(written) > 20
    outputs = {"training output": training.stdout + training.stderr,
               "evaluation output": evaluation.stdout + evaluation.stderr}
    for name, value in secrets.items():
        for label, text in outputs.items():
            assert value not in text, f"{name} printed in the {label}"
        for path in written:
            assert value.encode() not in path.read_bytes(), f"{name} written into {path}"


# ---------------------------------------------------------------- path safety

def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_paths_in_data_files_do_not_move_outputs(tiny_model_dir, tmp_path):
    """Sample ids and subtypes like ../../evil or absolute paths are data, never file names: every
    file a run writes is inside its output folder."""
    escape = tmp_path / f"escaped-{uuid.uuid4().hex}"  # an absolute path no script may create
    hostile = ["../../evil", "../../../evil.json", str(escape / "evil"), "..", "/"]
    raw = tmp_path / "nested" / "deeper" / "raw"
    raw.mkdir(parents=True)
    samples = []
    for i, rows in enumerate(make_records(10)):
        user, assistant = rows["text"][0]["content"], rows["text"][1]["content"]
        samples.append({"instruction": [{"subtype": hostile[i % len(hostile)]}],
                        "input": {"task": "请判断下面静态分析工具报告的缺陷是否为真实缺陷。",
                                  "event": f"{user}\n#{i}", "output_format": "判断:是/否\n\n原因：简要说明理由"},
                        "output": {"judgement": assistant[3:4], "reason": f"原因 {i}"}})
    (raw / "samples.json").write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    before = files_under(tmp_path)

    split = tmp_path / "nested" / "deeper" / "split"
    run_script(CONVERT, "--input_dir", raw, "--converted_file", split / "converted.jsonl", "--train_file",
               split / "train.jsonl", "--test_file", split / "test.jsonl", "--test_ratio", "0.5", "--dev_ratio", "0",
               check=True)
    # Chat JSONL with hostile ids as well (the converter makes ids from file names).
    records = [json.loads(line) for line in (split / "converted.jsonl").read_text(encoding="utf-8").splitlines()]
    for record, name in zip(records, hostile * 2):
        record["id"] = name if name not in [r["id"] for r in records] else name + "#2"
    data = tmp_path / "nested" / "deeper" / "data"
    data.mkdir()
    write_records(data / "train.jsonl", records[:6])
    write_records(data / "test.jsonl", records[6:])
    outputs = {name: tmp_path / "nested" / "deeper" / name for name in ("run", "eval", "plots")}
    trained = run_script(TRAIN, "--model_path", tiny_model_dir, "--train_data", data / "train.jsonl", "--test_data",
                         data / "test.jsonl", "--output_dir", outputs["run"], "--report_to", "none",
                         "--max_steps", "1", "--save_steps", "1", "--max_length", "512", "--lora_rank", "4",
                         env=ONE_THREAD)
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = run_script(EVALUATE, "--model_path", tiny_model_dir, "--test_dataset_path", data / "train.jsonl",
                           "--output_dir", outputs["eval"], "--mode", "score", env=ONE_THREAD)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = outputs["eval"] / "evaluation_results.json"
    plotted = run_script(PLOT, "--result1_path", results, "--result2_path", results, "--output_dir",
                         outputs["plots"])
    assert plotted.returncode == 0, plotted.stderr[-3000:]

    assert not escape.exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "nested" / "evil").exists()
    new = files_under(tmp_path) - before
    allowed = (split, data, *outputs.values())
    outside = [p for p in new if not any(folder in p.parents for folder in allowed)]
    assert not outside, outside
    assert {s["subtype"] for s in json.loads(results.read_text(encoding="utf-8"))["samples"]} <= set(hostile)
