"""defect_judge/evaluate/judges.py's verdict-head judge through eval/model_evaluation.py, on a tiny real model: a
linear-probe run's OUTPUT_DIR (train_lora.py --finetuning_type none) evaluated in both modes, the model
alone kept beside the head, a dev threshold deciding generated answers, a head that does not fit, and a head that
reads the base model beside a LoRA adapter (and refused beside a fully fine-tuned model)."""
from __future__ import annotations

import json
import os

import pytest

from defect_judge.evaluate.results import load_results
from defect_judge.data.schema import read_records
from defect_judge.templates import answer_prefix, parse_answer
from defect_judge.model.head_files import HEAD_WEIGHTS_FILE
from helpers import EVALUATE, TRAIN, assert_clean_failure, build_tiny_model, run_script, twin_split

SPEC = "mean@0.5,1.0"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    os.environ.pop("OMP_NUM_THREADS", None)


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory, tiny_model_dir):
    """Twin pairs of the shipped data split three ways, and a verdict head fitted on the frozen tiny model."""
    folder = tmp_path_factory.mktemp("probe-run")
    data = twin_split(folder, pairs_per_file=6)
    out = folder / "probe"
    result = run_script(TRAIN, "--model_path", tiny_model_dir, "--train_data", data / "train.jsonl", "--eval_data",
                        data / "test.jsonl", "--output_dir", out, "--finetuning_type", "none", "--verdict_head", SPEC,
                        "--verdict_head_c_grid", "0.1", "--report_to", "none", check=True)
    assert "linear probe only" in result.stderr and not any(p.suffix == ".bin" for p in out.iterdir())
    return data, out


def evaluate(*args, out) -> dict:
    result = run_script(EVALUATE, *args, "--output_dir", out, check=True)
    return load_results(out / "evaluation_results.json") | {"stdout": result.stdout, "stderr": result.stderr}


def test_generate_mode_opens_each_answer_with_the_heads_verdict(probe_run, tmp_path):
    data, head_dir = probe_run
    results = evaluate("--model_path", head_dir, "--test_dataset_path", data / "test.jsonl", "--max_new_tokens", "6",
                       out=tmp_path / "generate")
    assert "linear-probe run: the frozen model" in results["stderr"]
    assert results["verdict_source"] == "head" and results["verdict_head"]["spec"] == SPEC
    assert results["schema"].endswith("/v3") and results["overall"]["invalid_format"] == 0
    for sample in results["samples"]:
        p = sample["probabilities"]["是"]
        assert sample["verdict_source"] == "head" and sample["prediction"] == ("是" if p >= 0.5 else "否")
        assert sample["response"].startswith(answer_prefix(sample["prediction"]))
        assert parse_answer(sample["response"], results["judgements"]).judgement == sample["prediction"]
    assert results["roc_auc"] is not None  # the head gives every answer a probability
    assert "verdicts: head" in results["stdout"]


def test_score_mode_keeps_what_the_model_alone_answers(probe_run, tiny_model_dir, tmp_path):
    data, head_dir = probe_run
    test = ["--test_dataset_path", data / "test.jsonl"]
    scored = evaluate("--model_path", head_dir, *test, "--mode", "score", out=tmp_path / "score")
    generated = evaluate("--model_path", head_dir, *test, "--max_new_tokens", "2", out=tmp_path / "generate")
    alone = evaluate("--model_path", tiny_model_dir, *test, "--mode", "score", out=tmp_path / "alone")
    for ours, theirs, model in zip(scored["samples"], generated["samples"], alone["samples"]):
        assert ours["probabilities"]["是"] == pytest.approx(theirs["probabilities"]["是"], abs=1e-5)
        assert ours["model_prediction"] == model["prediction"]
        assert ours["model_probabilities"]["是"] == pytest.approx(model["probabilities"]["是"], abs=1e-5)
    assert scored["model_alone"]["overall"]["accuracy"] == pytest.approx(alone["overall"]["accuracy"])
    agreement = sum(s["prediction"] == s["model_prediction"] for s in scored["samples"]) / len(scored["samples"])
    assert scored["model_alone"]["agreement"] == pytest.approx(agreement)
    assert "the model alone (scored)" in scored["stdout"]
    # The same head named with --verdict_head on the base model decides the same way.
    named = evaluate("--model_path", tiny_model_dir, *test, "--mode", "score", "--verdict_head", head_dir,
                     out=tmp_path / "named")
    assert [s["prediction"] for s in named["samples"]] == [s["prediction"] for s in scored["samples"]]


def test_a_dev_threshold_decides_the_heads_generated_verdicts(probe_run, tmp_path):
    data, head_dir = probe_run
    results = evaluate("--model_path", head_dir, "--test_dataset_path", data / "test.jsonl", "--max_new_tokens",
                       "2", "--threshold_from", data / "dev.jsonl", out=tmp_path / "threshold")
    dev = load_results(tmp_path / "threshold" / "threshold_dev" / "evaluation_results.json")
    assert dev["mode"] == "score" and [s["id"] for s in dev["samples"]] == [r.id for r in read_records(
        data / "dev.jsonl")]
    threshold = results["decision"]["threshold"]
    assert results["decision"]["headline"] == "threshold"
    for sample in results["samples"]:
        call = "是" if sample["probabilities"]["是"] >= threshold else "否"
        assert sample["prediction"] == call and sample["response"].startswith(answer_prefix(call))
        assert sample["argmax_prediction"] == ("是" if sample["probabilities"]["是"] >= 0.5 else "否")


def test_a_head_that_does_not_fit_is_one_clear_line(probe_run, tmp_path, embedded_tokenizer):
    data, head_dir = probe_run
    wide = build_tiny_model(tmp_path / "wide", embedded_tokenizer, hidden=96)
    out = tmp_path / "out"
    common = ["--test_dataset_path", data / "test.jsonl", "--output_dir", out]
    result = run_script(EVALUATE, "--model_path", wide, "--verdict_head", head_dir, *common)
    assert_clean_failure(result, str(head_dir), "hidden size 64 and 2 layers, this model has hidden size 96")
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in head_dir.iterdir():
        broken.joinpath(path.name).write_bytes(path.read_bytes()[:50] if path.name == HEAD_WEIGHTS_FILE
                                               else path.read_bytes())
    result = run_script(EVALUATE, "--model_path", wide, "--verdict_head", broken, *common)
    assert_clean_failure(result, str(broken / HEAD_WEIGHTS_FILE), "corrupt")
    result = run_script(EVALUATE, "--model_path", head_dir, "--verdict_head", "none", *common)
    assert_clean_failure(result, "linear-probe run is its head")
    assert not out.exists()
    # another vocabulary than the head's
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    for row in rows:
        row["text"][-1]["content"] = row["text"][-1]["content"].replace("判断:是", "判断:有缺陷").replace(
            "判断:否", "判断:无缺陷")
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result = run_script(EVALUATE, "--model_path", head_dir, "--test_dataset_path", other, "--output_dir", out)
    assert_clean_failure(result, "the head tells 是/否 apart")


def run_with_head(training_output_dir, head_dir, folder, *, reads_base: bool):
    """A copy of a LoRA run (random adapters in every layer) whose folders carry the probe's head."""
    import shutil

    from defect_judge.model.verdict_head import load_head

    shutil.copytree(training_output_dir, folder)
    head = load_head(head_dir)
    head.reads_base = reads_base
    for place in (folder, folder / "checkpoint-2", folder / "checkpoint-4"):
        head.save(place)
    return folder


def test_a_head_on_the_base_model_reads_it_with_the_adapter_off(probe_run, training_output_dir, tiny_model_dir,
                                                                tmp_path):
    """--verdict_head_reads_base: the adapter stays unmerged and is switched off while the head reads, so the head
    scores as on the base model itself; the adapter still writes the answers, as it does merged."""
    data, head_dir = probe_run
    test = ["--test_dataset_path", data / "test.jsonl"]
    on_base = run_with_head(training_output_dir, head_dir, tmp_path / "base-run", reads_base=True)
    on_tuned = run_with_head(training_output_dir, head_dir, tmp_path / "tuned-run", reads_base=False)
    ours = evaluate("--model_path", on_base, *test, "--mode", "score", out=tmp_path / "ours")
    base = evaluate("--model_path", tiny_model_dir, *test, "--mode", "score", "--verdict_head", head_dir,
                    out=tmp_path / "base")
    tuned = evaluate("--model_path", on_tuned, *test, "--mode", "score", out=tmp_path / "tuned")
    assert ours["verdict_head"]["reads_base"] and not tuned["verdict_head"]["reads_base"]
    p = [s["probabilities"]["是"] for s in ours["samples"]]
    assert p == pytest.approx([s["probabilities"]["是"] for s in base["samples"]], abs=1e-5)
    assert max(abs(a - s["probabilities"]["是"]) for a, s in zip(p, tuned["samples"])) > 1e-3  # the adapter moves it
    for a, b in zip(ours["samples"], tuned["samples"]):  # unmerged or merged, the adapted model answers alike
        assert a["model_probabilities"]["是"] == pytest.approx(b["model_probabilities"]["是"], abs=1e-4)
    written = evaluate("--model_path", on_base, *test, "--max_new_tokens", "4", out=tmp_path / "generate")
    merged = evaluate("--model_path", on_tuned, *test, "--max_new_tokens", "4", out=tmp_path / "merged")
    assert written["overall"]["invalid_format"] == 0
    assert [s["prediction"] for s in written["samples"]] == [s["prediction"] for s in ours["samples"]]
    same_verdict = [(a, b) for a, b in zip(written["samples"], merged["samples"]) if a["prediction"] == b["prediction"]]
    assert same_verdict and all(a["response"] == b["response"] for a, b in same_verdict)


def test_a_head_on_the_base_model_is_refused_beside_a_fully_fine_tuned_model(probe_run, tiny_model_dir, tmp_path):
    """A fully fine-tuned model has no adapter to switch off: a head that reads the base model would read the tuned
    weights instead, whether it comes in the model's folder or is named with --verdict_head."""
    import shutil

    from defect_judge.model.verdict_head import load_head
    from defect_judge.model.run_folder import TRAINER_STATE_FILE

    data, head_dir = probe_run
    full = tmp_path / "full"
    shutil.copytree(tiny_model_dir, full)
    (full / TRAINER_STATE_FILE).write_text("{}", encoding="utf-8")  # what marks a folder as trained
    on_base = tmp_path / "on-base"
    head = load_head(head_dir)
    head.reads_base = True
    head.save(on_base)
    out = tmp_path / "out"
    common = ["--test_dataset_path", data / "test.jsonl", "--mode", "score", "--output_dir", out]
    result = run_script(EVALUATE, "--model_path", full, "--verdict_head", on_base, *common)
    assert_clean_failure(result, str(on_base), "reads_base", "fully fine-tuned model with no adapter")
    head.save(full)
    result = run_script(EVALUATE, "--model_path", full, *common)
    assert_clean_failure(result, str(full), "fully fine-tuned model with no adapter")
    assert not out.exists()
    # the same head on the base model itself reads what it was fitted on
    base = evaluate("--model_path", tiny_model_dir, "--verdict_head", on_base, *common[:4], out=tmp_path / "base")
    assert base["verdict_head"]["reads_base"] and base["overall"]["invalid_format"] == 0
