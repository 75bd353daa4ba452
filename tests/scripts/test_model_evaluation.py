"""eval/model_evaluation.py on real models and the shipped samples.

The embedded SmolLM2 runs where real answers matter (both modes end to end); a tiny random Llama carries the
plumbing tests (resume after SIGKILL, two ranks, adapters, errors, the dev threshold). The library it runs on
has its own test files (model/test_inference.py, model/test_paths.py, test_metrics.py, test_labels.py, ...).
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from defect_judge import free_port
from defect_judge.data.schema import read_records
from defect_judge.data.splitting import spread_subset
from defect_judge.evaluate.metrics import roc_auc
from defect_judge.evaluate.results import SCHEMA, load_results
from defect_judge.evaluate.results_folder import partial_file
from defect_judge.model import inference
from defect_judge.model.chat import render_prompt
from defect_judge.templates import parse_answer
from helpers import EVALUATE, PYTHON, REPO_ROOT, build_tiny_model, reference_logprob, run_script

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread

SCRIPT = EVALUATE


def evaluate(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return run_script(SCRIPT, *args, env=env, timeout=timeout)


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("model_evaluation.py: error:"), message
    for fragment in fragments:
        assert fragment in message, message


# ------------------------------------------------------- end to end, embedded

def check_results(output_dir: Path, test_file: Path, mode: str) -> dict:
    from PIL import Image

    results = load_results(output_dir / "evaluation_results.json")
    assert results["schema"] == SCHEMA and results["mode"] == mode
    for key in ("model_path", "model_kind", "test_dataset_path", "created", "settings", "judgements", "overall",
                "per_subtype", "per_judgement", "confusion", "roc_auc", "samples"):
        assert key in results, key
    ids = [r.id for r in read_records(test_file)]
    assert [s["id"] for s in results["samples"]] == ids  # every id once, in the file's order
    assert results["overall"]["total"] == len(ids)
    assert set(results["judgements"]) == {"是", "否"}
    assert set(results["confusion"]["是"]) == {"是", "否", "invalid"}
    assert 0 <= results["overall"]["ci95"][0] <= results["overall"]["accuracy"] <= results["overall"]["ci95"][1] <= 1
    with Image.open(output_dir / "subtype_accuracy.png") as image:
        image.verify()
    with Image.open(output_dir / "subtype_accuracy.png") as image:
        assert image.format == "PNG" and image.width >= 800 and image.height >= 400
    assert not partial_file(output_dir).exists()
    return results


def test_real_run_generate_mode_with_embedded_model(embedded_model_dir, six_samples, tmp_path):
    out = tmp_path / "generate"
    result = evaluate("--model_path", embedded_model_dir, "--test_dataset_path", six_samples, "--output_dir", out,
                      "--max_new_tokens", "8", "--batch_size", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    results = check_results(out, six_samples, "generate")
    assert results["model_kind"] == "base_model"
    assert "base model with no fine-tuning" in result.stderr
    for row in results["samples"]:
        assert isinstance(row["response"], str) and 1 <= row["generated_tokens"] <= 8
        assert row["prediction"] == parse_answer(row["response"], results["judgements"]).judgement
    assert results["roc_auc"] is None
    assert "总体 overall" in result.stdout and "95% CI" in result.stdout


def test_real_run_score_mode_with_embedded_model(embedded_model_dir, six_samples, tmp_path):
    out = tmp_path / "score"
    result = evaluate("--model_path", embedded_model_dir, "--test_dataset_path", six_samples, "--output_dir", out,
                      "--mode", "score", "--tokenizer_path", embedded_model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    results = check_results(out, six_samples, "score")
    for row in results["samples"]:
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-9)
        assert row["prediction"] == max(row["probabilities"], key=row["probabilities"].get)
        assert all(value < 0 for value in row["logprobs"].values())
    assert results["roc_positive"]["judgement"] == "是"
    labels = [int(s["reference"] == "是") for s in results["samples"]]
    assert results["roc_auc"] == pytest.approx(roc_auc(labels, [s["probabilities"]["是"] for s in results["samples"]]))
    assert results["overall"]["invalid_format"] == 0


# ---------------------------------------------------- resume after SIGKILL

@pytest.fixture(scope="module")
def slow_tiny_model(tmp_path_factory, embedded_tokenizer) -> Path:
    """Big enough that a run takes a few seconds, small enough to load at once."""
    return build_tiny_model(tmp_path_factory.mktemp("slow-tiny"), embedded_tokenizer, seed=1, hidden=128, layers=4)


def sample_lines(path: Path) -> int:
    return max(0, path.read_bytes().count(b"\n") - 1) if path.exists() else 0


def test_resume_after_sigkill_gives_the_uninterrupted_results(slow_tiny_model, shipped_split, tmp_path):
    test_file = shipped_split["test_file"]
    common = ["--model_path", slow_tiny_model, "--test_dataset_path", test_file, "--limit", "24",
              "--batch_size", "2", "--max_new_tokens", "24"]
    out = tmp_path / "killed"
    partial = partial_file(out)
    process = subprocess.Popen([PYTHON, SCRIPT, *map(str, common), "--output_dir", str(out)], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while sample_lines(partial) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = sample_lines(partial)
    assert 2 <= done < 24
    assert not (out / "evaluation_results.json").exists()
    # What a kill in the middle of a write leaves: a torn last line.
    with partial.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "torn", "subtype": "空指')

    changed = evaluate(*common, "--output_dir", out, "--max_new_tokens", "12")
    assert_clean_error(changed, "other settings", "max_new_tokens", "--overwrite")
    assert partial.exists()

    resumed = evaluate(*common, "--output_dir", out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {done} samples already evaluated" in resumed.stderr
    assert not partial.exists()
    straight = evaluate(*common, "--output_dir", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    got = load_results(out / "evaluation_results.json")["samples"]
    want = load_results(tmp_path / "straight" / "evaluation_results.json")["samples"]
    assert [s["id"] for s in got] == [r.id for r in spread_subset(read_records(test_file), 24)]
    keys = ("id", "prediction", "response", "generated_tokens")
    assert [{k: s[k] for k in keys} for s in got] == [{k: s[k] for k in keys} for s in want]


def test_overwrite_discards_partial_results_of_other_settings(tiny_model_dir, six_samples, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    partial_file(out).write_text('{"partial": "defect-judge/evaluation-partial/v1", "fingerprint": {"mode": "x"}}\n'
                                    '{"id": "stale"}\n', encoding="utf-8")
    args = ["--model_path", tiny_model_dir, "--test_dataset_path", six_samples, "--output_dir", out,
            "--mode", "score"]
    assert_clean_error(evaluate(*args), "other settings", "--overwrite")
    result = evaluate(*args, "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stale" not in (out / "evaluation_results.json").read_text(encoding="utf-8")


# ------------------------------------------------------------- two ranks

def test_two_process_run_equals_single_process(tiny_model_dir, shipped_split, tmp_path):
    common = ["--model_path", tiny_model_dir, "--test_dataset_path", shipped_split["test_file"], "--limit", "10",
              "--batch_size", "3", "--mode", "score"]
    single = evaluate(*common, "--output_dir", tmp_path / "one")
    assert single.returncode == 0, single.stderr[-3000:]
    env = {"OMP_NUM_THREADS": "1"}
    double = run_script(PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(free_port()), SCRIPT, *common, "--output_dir", tmp_path / "two", env=env, timeout=600)
    assert double.returncode == 0, double.stderr[-3000:]
    one = load_results(tmp_path / "one" / "evaluation_results.json")
    two = load_results(tmp_path / "two" / "evaluation_results.json")
    assert two["settings"]["world_size"] == 2
    assert [s["id"] for s in two["samples"]] == [s["id"] for s in one["samples"]]
    assert [s["prediction"] for s in two["samples"]] == [s["prediction"] for s in one["samples"]]
    for a, b in zip(one["samples"], two["samples"]):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
    assert one["overall"] == two["overall"]
    assert not list((tmp_path / "two").glob("*.partial*"))


# ------------------------------------------------ adapters and OUTPUT_DIR

def test_evaluating_an_output_dir_scores_the_merged_best_checkpoint(training_output_dir, six_samples, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "eval"
    result = evaluate("--model_path", training_output_dir, "--test_dataset_path", six_samples, "--output_dir", out,
                      "--mode", "score", "--limit", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best checkpoint checkpoint-4" in result.stderr
    results = load_results(out / "evaluation_results.json")
    assert results["model_kind"] == "output_dir/lora_adapter"
    assert results["model"]["weights_path"].endswith("checkpoint-4")
    # The same numbers from the unmerged adapter, computed the plain way.
    info = json.loads((training_output_dir / "best_checkpoint.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(info["base_model_path"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, training_output_dir / "checkpoint-4").eval()
    tokenizer = AutoTokenizer.from_pretrained(training_output_dir / "checkpoint-4")
    for record, row in zip(read_records(six_samples)[:3], results["samples"]):
        candidates = inference.candidate_sequences(tokenizer, render_prompt(tokenizer, record.prompt_messages),
                                                   results["judgements"])
        assert [row["logprobs"][c.judgement] for c in candidates] == \
            pytest.approx([reference_logprob(model, c) for c in candidates], abs=1e-4)


# ------------------------------------------------------------------ errors

def test_bad_inputs_give_one_clear_error_and_write_nothing(tiny_model_dir, six_samples, tmp_path,
                                                           training_output_dir):
    out = tmp_path / "out"
    good = ["--test_dataset_path", six_samples, "--output_dir", out]
    assert_clean_error(evaluate("--model_path", tmp_path / "missing", *good), "model path does not exist")

    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert_clean_error(evaluate("--model_path", tiny_model_dir, "--test_dataset_path", empty, "--output_dir", out),
                       "empty.jsonl", "empty")

    broken = tmp_path / "broken.jsonl"
    lines = six_samples.read_text(encoding="utf-8").splitlines()
    broken.write_text(lines[0] + "\n" + lines[1][:40] + "\n", encoding="utf-8")
    assert_clean_error(evaluate("--model_path", tiny_model_dir, "--test_dataset_path", broken, "--output_dir", out),
                       "broken.jsonl:2", "invalid JSON")

    no_judgement = tmp_path / "no_judgement.jsonl"
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row["text"][-1]["content"] = "这段代码没有问题。"
    no_judgement.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert_clean_error(evaluate("--model_path", tiny_model_dir, "--test_dataset_path", no_judgement,
                                "--output_dir", out), "no_judgement.jsonl", "判断")

    orphan = tmp_path / "orphan"
    shutil.copytree(training_output_dir / "checkpoint-2", orphan)
    config = json.loads((orphan / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (orphan / "adapter_config.json").write_text(json.dumps(config))
    assert_clean_error(evaluate("--model_path", orphan, *good), "cannot find the base model", "--base_model_path")

    assert_clean_error(evaluate("--model_path", tiny_model_dir, *good, "--tokenizer_path", tmp_path / "no-tok"),
                       "tokenizer path does not exist")
    assert_clean_error(evaluate("--model_path", tiny_model_dir, *good, "--mode", "sample"), "--mode")
    assert not out.exists() or not any(out.iterdir())


def test_a_reference_without_judgement_is_skipped_and_counted_with_skip_unlabelled(tiny_model_dir, six_samples,
                                                                                    tmp_path):
    """Without the flag it is an error naming file and line (tests/end_to_end/test_bad_inputs.py); with it, skipped and
    counted in the results and the printed table."""
    rows = [json.loads(line) for line in six_samples.read_text(encoding="utf-8").splitlines()]
    rows[2]["text"][-1]["content"] = "原因：只有原因，没有判断。"
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result = evaluate("--model_path", tiny_model_dir, "--test_dataset_path", test_file, "--output_dir",
                      tmp_path / "out", "--mode", "score", "--skip_unlabelled")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping 1 sample(s)" in result.stderr
    assert "skipped: 1 sample(s) whose reference has no judgement (判断:…), not counted above" in result.stdout
    results = load_results(tmp_path / "out" / "evaluation_results.json")
    assert results["skipped_no_reference"] == [rows[2]["id"]] and results["settings"]["skip_unlabelled"] is True
    assert [s["id"] for s in results["samples"]] == [r["id"] for i, r in enumerate(rows) if i != 2]


def test_tokenizer_that_does_not_match_the_model_is_refused(tmp_path, six_samples, embedded_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    small = tmp_path / "small-vocab"
    config = LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(small)
    out = tmp_path / "out"
    result = evaluate("--model_path", small, "--tokenizer_path", embedded_model_dir, "--test_dataset_path",
                      six_samples, "--output_dir", out)
    assert_clean_error(result, "does not match the model")
    assert not (out / "evaluation_results.json").exists() and not partial_file(out).exists()


def test_help_lists_the_flags():
    result = run_script(SCRIPT, "--help", check=True)
    for flag in ("--model_path", "--test_dataset_path", "--tokenizer_path", "--output_dir", "--batch_size",
                 "--max_new_tokens", "--mode", "--limit", "--base_model_path", "--trust_remote_code", "--allow_pickle",
                 "--overwrite"):
        assert flag in result.stdout


# ------------------------------------------------- pairs and the dev threshold

def twin_split(tmp_path: Path) -> tuple[Path, Path]:
    """A test and a dev file of twin pairs (make_records gives a 是 and a 否 sample of a subtype in turn)."""
    from helpers import make_records, write_records

    def twins(rows: list[dict], prefix: str) -> list[dict]:
        return [r | {"pair_id": f"{prefix}-{i // 2}"} for i, r in enumerate(rows)]

    return (write_records(tmp_path / "test.jsonl", twins(make_records(16), "t")),
            write_records(tmp_path / "dev.jsonl", twins(make_records(16, start=100), "d")))


def test_score_mode_over_pairs_with_a_threshold_chosen_on_dev(tiny_model_dir, tmp_path):
    """The real script on a tiny model: pair outcomes, VD-S, ROC chart; the dev JSONL is scored first and its
    threshold decides the test predictions; the dev results file gives the same threshold again."""
    from PIL import Image

    test_file, dev_file = twin_split(tmp_path)
    common = ["--model_path", tiny_model_dir, "--test_dataset_path", test_file, "--mode", "score"]
    out = tmp_path / "out"
    result = evaluate(*common, "--output_dir", out, "--threshold_from", dev_file, "--vds_fpr", "0.1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("loaded in") == 1  # one model for both splits
    dev_results = load_results(out / "threshold_dev" / "evaluation_results.json")
    assert [s["id"] for s in dev_results["samples"]] == [r.id for r in read_records(dev_file)]
    results = load_results(out / "evaluation_results.json")
    decision = results["decision"]
    assert decision["headline"] == "threshold" and decision["chosen_on"]["test_dataset_path"] == str(dev_file)
    threshold = decision["threshold"]
    for sample, record in zip(results["samples"], read_records(test_file)):
        assert sample["pair_id"] == record.pair_id
        assert sample["argmax_prediction"] == max(sample["probabilities"], key=sample["probabilities"].get)
        assert sample["prediction"] == sample["threshold_prediction"] == \
            ("是" if sample["probabilities"]["是"] >= threshold else "否")
    assert results["pairs"]["overall"]["pairs"] == 8 and results["pairs"]["unpaired"]["samples"] == 0
    assert sum(results["pairs"]["overall"][o]["count"] for o in ("P-C", "P-V", "P-B", "P-R")) == 8
    assert [level["fpr_target"] for level in results["vd_s"]] == [0.005, 0.1]
    assert results["vd_s"][0]["note"] and "(8 < 200)" in results["vd_s"][0]["note"]
    assert results["overall"]["balanced_accuracy"] is not None and results["overall"]["mcc"] is not None
    for chart in ("subtype_accuracy.png", "pair_outcomes.png", "roc_curve.png"):
        with Image.open(out / chart) as png:
            assert png.format == "PNG" and png.width >= 900
    for line in ("pairs (PrimeVul", "VD-S (miss rate at FPR <= 0.5%)", "decision: P(是) >= ", "balanced accuracy"):
        assert line in result.stdout, line

    again = evaluate(*common, "--output_dir", tmp_path / "again", "--threshold_from", out / "threshold_dev")
    assert again.returncode == 0, again.stderr[-3000:]
    second = load_results(tmp_path / "again" / "evaluation_results.json")
    assert second["decision"]["threshold"] == threshold
    assert [s["prediction"] for s in second["samples"]] == [s["prediction"] for s in results["samples"]]
    assert not (tmp_path / "again" / "threshold_dev").exists()

    # a threshold is never chosen on the test split itself, nor applied to generated answers
    assert_clean_error(evaluate(*common, "--output_dir", tmp_path / "x", "--threshold_from", out),
                       "16 of its samples are in the test split too", "field 'threshold_from'")
    assert_clean_error(evaluate(*common, "--output_dir", tmp_path / "x", "--threshold_from", test_file),
                       "names the test split itself")
    assert_clean_error(evaluate(*common[:-2], "--output_dir", tmp_path / "x", "--threshold_from", dev_file),
                       "--threshold_from needs --mode score")
    other = json.loads((out / "threshold_dev" / "evaluation_results.json").read_text(encoding="utf-8"))
    other["model"]["weights_path"] = str(tmp_path / "another-model")
    (tmp_path / "other.json").write_text(json.dumps(other, ensure_ascii=False), encoding="utf-8")
    assert_clean_error(evaluate(*common, "--output_dir", tmp_path / "x", "--threshold_from", tmp_path / "other.json"),
                       "other.json", "results of another model", "field 'model'")
    assert not (tmp_path / "x").exists()


# -------------------------------------------------------------- a new user's runs

def test_a_finished_results_folder_is_refused_and_overwrite_leaves_nothing_stale(tiny_model_dir, tmp_path):
    """Evaluating into a folder that holds finished results is refused, byte for byte untouched; --overwrite
    replaces them, and what the new run does not write again (threshold_dev/, the ROC chart) goes."""
    test_file, dev_file = twin_split(tmp_path)
    out = tmp_path / "out"
    common = ["--model_path", tiny_model_dir, "--test_dataset_path", test_file, "--output_dir", out]
    first = evaluate(*common, "--mode", "score", "--threshold_from", dev_file)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "threshold_dev").is_dir() and (out / "roc_curve.png").is_file()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = evaluate(*common, "--mode", "score", "--max_new_tokens", "4")
    assert_clean_error(again, "evaluation_results.json", "finished results", "--overwrite")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    replaced = evaluate(*common, "--max_new_tokens", "2", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert load_results(out / "evaluation_results.json")["mode"] == "generate"
    assert not (out / "threshold_dev").exists() and not (out / "roc_curve.png").exists()


def test_a_dev_results_file_of_the_same_model_is_accepted_by_any_path_to_it(tiny_model_dir, tmp_path):
    """--threshold_from with dev results of the model reached through a symlink (runs/demo/latest/...) or from
    another folder: the same model folder, so the same model."""
    test_file, dev_file = twin_split(tmp_path)
    (tmp_path / "latest").symlink_to(tiny_model_dir)
    dev = run_script(SCRIPT, "--model_path", "latest", "--test_dataset_path", dev_file, "--output_dir",
                     tmp_path / "dev", "--mode", "score", cwd=tmp_path)
    assert dev.returncode == 0, dev.stderr[-3000:]
    test = evaluate("--model_path", tiny_model_dir.resolve(), "--test_dataset_path", test_file, "--output_dir",
                    tmp_path / "test", "--mode", "score", "--threshold_from", tmp_path / "dev")
    assert test.returncode == 0, test.stderr[-3000:]
    assert load_results(tmp_path / "test" / "evaluation_results.json")["decision"]["headline"] == "threshold"


def test_limit_takes_whole_pairs_spread_over_subtypes_and_judgements(tiny_model_dir, tmp_path):
    """--limit 6 on a test file sorted by subtype: three subtypes, both judgements, whole twin pairs (not the
    first six samples of the first subtype), and no tokenizer warning on a fresh machine."""
    from helpers import make_records, write_records

    rows = sorted((r | {"pair_id": f"p{i // 2}"} for i, r in enumerate(make_records(16))), key=lambda r: r["subtype"])
    test_file = write_records(tmp_path / "test.jsonl", rows)
    result = evaluate("--model_path", tiny_model_dir, "--test_dataset_path", test_file, "--output_dir",
                      tmp_path / "out", "--mode", "score", "--limit", "6")
    assert result.returncode == 0, result.stderr[-3000:]
    samples = load_results(tmp_path / "out" / "evaluation_results.json")["samples"]
    assert len(samples) == 6 and len({s["subtype"] for s in samples}) == 3
    assert sorted(s["reference"] for s in samples) == ["否"] * 3 + ["是"] * 3
    assert all(sum(t["pair_id"] == s["pair_id"] for t in samples) == 2 for s in samples)
    assert "--limit 6: 6 of the samples" in result.stderr
    assert "tokenizer_path" not in result.stderr and "FutureWarning" not in result.stderr


# ------------------------------------------------------ bad pair data (JSONL)
# A pair_id that is not a string, or a pair with two defective members, different subtypes or the same judgement
# twice, stops the run with one line naming the file, line, sample and field, before any model is looked at.

from helpers import assert_clean_failure, paired_rows, write_records  # noqa: E402  (this section's own helpers)


@pytest.mark.parametrize("case, bad_line, fragments", [
    ("number", 3, ["must be a non-empty string, got 7"]),
    ("same_judgement", 2, ["pair 'twin-0'", "all 2 samples have the same judgement (是)"]),
    ("two_defective", 9, ["pair 'twin-0'", "2 samples are defective (是); a pair has at most one"]),
    ("subtypes", 4, ["pair 'twin-1'", "different subtypes (内存泄漏 / 除零错误)"]),
])
def test_bad_pair_id_in_a_test_jsonl_is_one_line_naming_file_sample_and_field(case, bad_line, fragments, tmp_path):
    rows = paired_rows(10)
    if case == "number":
        rows[2]["pair_id"] = 7
    elif case == "same_judgement":
        rows[1] = rows[1] | {"text": rows[0]["text"]}  # the clean twin now says 是 too
    elif case == "two_defective":
        rows[8]["pair_id"] = "twin-0"  # a third version, defective like the first
    else:
        rows[3]["subtype"] = "除零错误"
    test_file = write_records(tmp_path / "test.jsonl", rows)
    result = run_script(EVALUATE, "--model_path", tmp_path / "no-model", "--test_dataset_path", test_file,
                        "--output_dir", tmp_path / "out", timeout=120)
    line = assert_clean_failure(result, f"{test_file}:{bad_line}", f"sample {rows[bad_line - 1]['id']}",
                                "field 'pair_id'", *fragments)
    assert "model path does not exist" not in line  # the data is checked before any model is looked at
    assert not (tmp_path / "out").exists()
