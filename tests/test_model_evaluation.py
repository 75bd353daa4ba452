"""eval/model_evaluation.py, defect_judge/model/inference.py and model_paths.py, on real models and the shipped samples.

The embedded SmolLM2 runs where real answers matter (both modes end to end,
batched vs unbatched); a tiny random Llama carries the plumbing tests (resume
after SIGKILL, two ranks, adapters, errors).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from defect_judge import free_port
from defect_judge.model import inference
from defect_judge.model import paths as model_paths
from defect_judge.model.chat import render_prompt
from defect_judge.errors import InputError
from defect_judge.evaluate.results import SCHEMA, load_results, metrics, positive_judgement, roc_auc, summary
from defect_judge.evaluate.partial import PARTIAL_NAME
from defect_judge.data.schema import read_records
from defect_judge.data.splitting import spread_subset
from defect_judge.stats import wilson_interval
from defect_judge.templates import parse_answer
from helpers import EVALUATE, PYTHON, REPO_ROOT, build_tiny_model, run_script

SCRIPT = EVALUATE
BENCH = REPO_ROOT / "eval" / "bench_eval.py"
YES_NO = ["否", "是"]


# ------------------------------------------------------------------ fixtures

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
def embedded(embedded_model_dir):
    """The embedded model and tokenizer, loaded once as the evaluation loads them."""
    resolved = model_paths.resolve_model(embedded_model_dir)
    return model_paths.load_model_and_tokenizer(resolved, embedded_model_dir, dtype=None, device="cpu")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    resolved = model_paths.resolve_model(tiny_model_dir)
    return model_paths.load_model_and_tokenizer(resolved, tiny_model_dir, dtype=None, device="cpu")


def prompts_of(tokenizer, path: Path) -> list[tuple[str, list[int]]]:
    records = read_records(path)
    texts = [render_prompt(tokenizer, r.prompt_messages) for r in records]
    pairs = [(text, inference.encode_prompt(tokenizer, text)) for text in texts]
    return sorted(pairs, key=lambda pair: -len(pair[1]))


def evaluate(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return run_script(SCRIPT, *args, env=env, timeout=timeout)


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("model_evaluation.py: error:"), message
    for fragment in fragments:
        assert fragment in message, message


# -------------------------------------------------------------------- parser

@pytest.mark.parametrize("answer, vocabulary, judgement, reason", [
    ("判断:是\n\n原因：函数在 p 为 NULL 时仍解引用 p->next。", YES_NO, "是", "函数在 p 为 NULL 时仍解引用 p->next。"),
    ("判断：否\n\n原因：所有分配的内存都在返回前释放。", YES_NO, "否", "所有分配的内存都在返回前释放。"),
    ("判断 : 是\n原因 : 循环条件 i <= n 越界写入 buf[n]。", YES_NO, "是", "循环条件 i <= n 越界写入 buf[n]。"),
    ("判断：\n否\n\n原因：除数在调用前已检查非零。", YES_NO, "否", "除数在调用前已检查非零。"),
    ("**判断**：是\n\n**原因**：fclose 缺失。", YES_NO, "是", "fclose 缺失。"),
    ("**判断:** 否\n\n原因：没有问题。", YES_NO, "否", "没有问题。"),
    ("判断:**是**\n\n原因：free 之后继续使用了 node。", YES_NO, "是", "free 之后继续使用了 node。"),
    ("经过分析，我的结论如下。\n判断：是。原因：count 未初始化就参与了累加。", YES_NO, "是", "count 未初始化就参与了累加。"),
    ("判断:否", YES_NO, "否", None),
    ("判断：有缺陷\n\n原因：size*count 可能溢出。", ["无缺陷", "有缺陷"], "有缺陷", "size*count 可能溢出。"),
    ("判断：无缺陷", ["无缺陷", "有缺陷"], "无缺陷", None),
    ("判断:有缺陷", ["有", "有缺陷"], "有缺陷", None),  # the longest entry wins
    ("Judgement: yes\n\nReason: the pointer may be NULL.", YES_NO, None, None),
    ("Judgment: No. The code frees the buffer.", YES_NO, None, None),
    ("判断:可能是\n\n原因：不确定。", YES_NO, None, "不确定。"),
    ("这段代码存在空指针解引用。", YES_NO, None, None),
    ("", YES_NO, None, None),
    ("原因：只给了原因。", YES_NO, None, "只给了原因。"),
])
def test_parser_reads_real_looking_answers(answer, vocabulary, judgement, reason):
    parsed = parse_answer(answer, vocabulary)
    assert parsed.judgement == judgement
    assert parsed.reason == reason
    assert parsed.valid == (judgement is not None)


# ------------------------------------------------------------------- metrics

def sample(i, subtype, reference, prediction, p_yes=None):
    row = {"id": str(i), "subtype": subtype, "reference": reference, "prediction": prediction,
           "correct": prediction == reference}
    if p_yes is not None:
        row["probabilities"] = {"是": p_yes, "否": 1 - p_yes}
    return row


def test_wilson_interval_matches_hand_computed_values():
    # 7 of 10: centre (0.7 + z²/20) / (1 + z²/10), half-width z·sqrt(0.021 + z²/400) / (1 + z²/10)
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.396774, abs=1e-5) and high == pytest.approx(0.892209, abs=1e-5)
    assert wilson_interval(0, 4) == pytest.approx((0.0, 0.489891), abs=1e-5)
    assert wilson_interval(4, 4) == pytest.approx((0.510109, 1.0), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # the estimate stays inside its interval at the ends (no 2.8e-17 > 0.0 from rounding)
    assert wilson_interval(0, 6)[0] == 0.0 and wilson_interval(6, 6)[1] == 1.0


def test_metrics_per_subtype_judgement_confusion_and_f1():
    rows = [sample(0, "空指针解引用", "是", "是"), sample(1, "空指针解引用", "是", "否"),
            sample(2, "空指针解引用", "否", "否"), sample(3, "内存泄漏", "否", None),
            sample(4, "内存泄漏", "是", "是"), sample(5, "内存泄漏", "否", "是")]
    result = metrics(rows, YES_NO)
    assert result["overall"]["correct"] == 3 and result["overall"]["total"] == 6
    assert result["overall"]["accuracy"] == 0.5
    assert result["overall"]["invalid_format"] == 1
    assert result["overall"]["invalid_format_rate"] == pytest.approx(1 / 6)
    assert result["overall"]["ci95"] == pytest.approx(list(wilson_interval(3, 6)))
    assert result["per_subtype"]["空指针解引用"]["accuracy"] == pytest.approx(2 / 3)
    assert result["per_subtype"]["内存泄漏"]["accuracy"] == pytest.approx(1 / 3)
    assert result["confusion"] == {"否": {"否": 1, "是": 1, "invalid": 1}, "是": {"否": 1, "是": 2, "invalid": 0}}
    yes = result["per_judgement"]["是"]  # tp 2, fp 1, fn 1
    assert (yes["precision"], yes["recall"], yes["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    no = result["per_judgement"]["否"]  # tp 1, fp 1, fn 2 (the invalid answer is a miss)
    assert (no["precision"], no["recall"]) == pytest.approx((0.5, 1 / 3))
    assert no["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert summary([])["total"] == 0


def test_roc_auc_and_positive_judgement_rule():
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs won 3 of 4
    assert roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 1], [0.2, 0.3]) is None
    assert positive_judgement(["否", "是"])[0] == "是"
    assert positive_judgement(["无缺陷", "有缺陷"])[0] == "有缺陷"
    assert positive_judgement(["存在问题", "不存在问题"])[0] == "存在问题"
    assert positive_judgement(["no", "yes"])[0] == "yes"
    assert positive_judgement(["alpha", "beta"]) == ("alpha", "lexicographically first (no rule matched)")
    assert positive_judgement(["是", "否", "不确定"])[0] is None
    assert inference.probabilities([math.log(0.2), math.log(0.6)]) == pytest.approx([0.25, 0.75])


# ------------------------------------------------------- batched vs unbatched

def test_batched_generation_equals_unbatched(embedded, six_samples, monkeypatch):
    model, tokenizer = embedded
    pairs = prompts_of(tokenizer, six_samples)
    prompts = [ids for _, ids in pairs]
    stop_ids = inference.stop_token_ids(tokenizer, model)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_ids
    one_by_one = [inference.generate_batch(model, tokenizer, [p], max_new_tokens=12, stop_ids=stop_ids)[0]
                  for p in prompts]
    # The system prompt and the task's opening words run once per batch (SharedPrefix), the rest per group.
    assert inference.common_prefix_length(prompts, keep=2) >= inference.SHARED_PREFIX_MIN_TOKENS > 0
    monkeypatch.setattr(inference, "PREFILL_MAX_WASTE", 0.0)  # every prompt prefilled apart, all decoded together
    assert len(inference.prefill_groups([len(p) for p in prompts])) == len(prompts)
    assert inference._prefill_cache(model, prompts, 12, "cpu") is not None  # the preallocated-cache path runs
    apart = inference.generate_batch(model, tokenizer, prompts, max_new_tokens=12, stop_ids=stop_ids)
    monkeypatch.setattr(inference, "PREFILL_MAX_WASTE", 10.0)  # one prefill group: heavy left padding
    monkeypatch.setattr(inference, "PREFILL_MAX_TOKENS_CPU", 100_000)
    padded = inference.generate_batch(model, tokenizer, prompts, max_new_tokens=12, stop_ids=stop_ids)
    monkeypatch.setattr(inference, "SHARED_PREFIX_MIN_TOKENS", 0)  # every prompt prefilled whole
    whole = inference.generate_batch(model, tokenizer, prompts, max_new_tokens=12, stop_ids=stop_ids)
    assert [a["response"] for a in apart] == [a["response"] for a in one_by_one]
    assert [a["response"] for a in padded] == [a["response"] for a in one_by_one]
    assert [a["response"] for a in whole] == [a["response"] for a in one_by_one]
    assert [a["generated_tokens"] for a in padded] == [a["generated_tokens"] for a in one_by_one]
    assert all(1 <= a["generated_tokens"] <= 12 for a in padded)
    assert any(a["response"].strip() for a in padded)


def reference_logprob(model, candidate: inference.Candidate) -> float:
    """Full logits, one sequence at a time: the plain definition of log P(continuation | prompt)."""
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([candidate.input_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[t - 1, candidate.input_ids[t]].item() for t in range(candidate.start, len(candidate.input_ids)))


def test_score_batched_equals_unbatched_reference(embedded, six_samples, monkeypatch):
    model, tokenizer = embedded
    batch = [inference.candidate_sequences(tokenizer, text, YES_NO) for text, _ in prompts_of(tokenizer, six_samples)]
    for candidates in batch:  # the continuation is exactly 判断:{judgement}
        for c in candidates:
            assert tokenizer.decode(c.input_ids[c.start:]) == f"判断:{c.judgement}"
    expected = [[reference_logprob(model, c) for c in candidates] for candidates in batch]
    assert inference.common_prefix_length([c[0].input_ids for c in batch], keep=8) > 0  # the prefix runs once
    monkeypatch.setattr(inference, "PREFILL_MAX_WASTE", 10.0)  # all six in one left-padded forward
    monkeypatch.setattr(inference, "PREFILL_MAX_TOKENS_CPU", 100_000)
    assert len(inference.prefill_groups([len(c[0].input_ids) for c in batch],
                                        max_tokens=inference._token_budget("cpu"))) == 1
    got = inference.score_batch(model, batch, pad_id=tokenizer.pad_token_id)
    for row, want in zip(got, expected):
        assert row == pytest.approx(want, abs=1e-4)
    monkeypatch.setattr(inference, "PREFILL_MAX_WASTE", 0.0)  # each sample its own group after the shared prefix
    for row, want in zip(inference.score_batch(model, batch, pad_id=tokenizer.pad_token_id), expected):
        assert row == pytest.approx(want, abs=1e-4)


def test_score_multi_token_judgements_use_the_tail_pass(tiny, six_samples, monkeypatch):
    model, tokenizer = tiny
    vocabulary = ["无缺陷", "有缺陷", "不确定"]  # several tokens each, differing after the shared 判断:
    batch = [inference.candidate_sequences(tokenizer, text, vocabulary)
             for text, _ in prompts_of(tokenizer, six_samples)]
    assert any(len(c.input_ids) - inference._shared_prefix(cs) > 1 for cs in batch for c in cs)
    expected = [[reference_logprob(model, c) for c in candidates] for candidates in batch]
    monkeypatch.setattr(inference, "PREFILL_MAX_WASTE", 10.0)
    monkeypatch.setattr(inference, "PREFILL_MAX_TOKENS_CPU", 100_000)
    got = inference.score_batch(model, batch, pad_id=tokenizer.pad_token_id)
    for row, want in zip(got, expected):
        assert row == pytest.approx(want, abs=1e-4)


def test_common_prefix_length_leaves_own_tokens_and_skips_short_prefixes(monkeypatch):
    monkeypatch.setattr(inference, "SHARED_PREFIX_MIN_TOKENS", 3)
    head = [7, 7, 7, 7, 7]
    assert inference.common_prefix_length([head + [1, 2], head + [3, 4, 5]], keep=2) == 5
    assert inference.common_prefix_length([head + [1, 2], head + [1, 2, 5]], keep=2) == 5  # 7 shared, 2 kept
    assert inference.common_prefix_length([head + [1], head + [1, 9]], keep=3) == 3
    assert inference.common_prefix_length([[7, 7, 1], [7, 7, 2]], keep=1) == 0  # 2 < the minimum
    assert inference.common_prefix_length([head + [1, 2]], keep=1) == 0  # nothing to share with
    monkeypatch.setattr(inference, "SHARED_PREFIX_MIN_TOKENS", 0)
    assert inference.common_prefix_length([head + [1, 2], head + [3, 4, 5]], keep=2) == 0  # switched off


def test_prefill_groups_bound_padding_and_tokens():
    lengths = [500, 490, 480, 300, 295, 290, 100, 99]
    groups = inference.prefill_groups(lengths, max_waste=0.1, max_tokens=10_000)
    assert [list(g) for g in groups] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    by_tokens = inference.prefill_groups(lengths, max_waste=10, max_tokens=1000)
    assert [list(g) for g in by_tokens] == [[0, 1], [2, 3], [4, 5, 6], [7]]
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))


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
    assert not (output_dir / PARTIAL_NAME).exists()
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
    partial = out / PARTIAL_NAME
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
    (out / PARTIAL_NAME).write_text('{"partial": "defect-judge/evaluation-partial/v1", "fingerprint": {"mode": "x"}}\n'
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


def test_model_path_kinds(training_output_dir, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    resolved = model_paths.resolve_model(tiny_model_dir)
    assert resolved.kind == resolved.model_kind == "base_model" and not resolved.is_adapter
    assert not resolved.from_output_dir
    adapter = model_paths.resolve_model(training_output_dir / "checkpoint-2")
    assert adapter.kind == "lora_adapter" and adapter.base_model_path == tiny_model_dir
    assert "adapter_config.json" in adapter.base_model_source
    best = model_paths.resolve_model(training_output_dir)
    assert best.kind == "lora_adapter" and best.from_output_dir and best.is_adapter
    assert best.model_kind == best.to_json()["kind"] == "output_dir/lora_adapter"
    assert best.weights_path == training_output_dir / "checkpoint-4"
    assert "checkpoint-4" in best.describe() and "eval_loss" in best.describe()
    assert model_paths.resolve_tokenizer_path(best, "", explicit=False) == training_output_dir / "checkpoint-4"
    assert model_paths.resolve_tokenizer_path(best, "/nonexistent/default", explicit=False) == best.weights_path
    with pytest.raises(InputError, match="tokenizer path does not exist"):
        model_paths.resolve_tokenizer_path(best, "/nonexistent/given", explicit=True)

    full = tmp_path / "full"
    build_tiny_model(full, AutoTokenizer.from_pretrained(tiny_model_dir))
    (full / "trainer_state.json").write_text("{}")
    assert model_paths.resolve_model(full).kind == "full_model"


def test_output_dir_without_the_best_checkpoint_folder_uses_its_own_model(training_output_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(training_output_dir, run, ignore=shutil.ignore_patterns("checkpoint-4"))
    resolved = model_paths.resolve_model(run)
    assert resolved.model_kind == "output_dir/lora_adapter" and resolved.weights_path == run
    assert resolved.notes and "checkpoint-4 no longer exists" in resolved.notes[0]


def test_adapter_base_model_lookup(training_output_dir, tiny_model_dir, tmp_path):
    moved = tmp_path / "checkpoint-2"
    shutil.copytree(training_output_dir / "checkpoint-2", moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/data/Qwen2.5-Coder-7B-Instruct"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="cannot find the base model.*--base_model_path"):
        model_paths.resolve_model(moved)
    assert model_paths.resolve_model(moved, base_model_path=str(tiny_model_dir)).base_model_path == tiny_model_dir
    via_tokenizer = model_paths.resolve_model(moved, tokenizer_path=str(tiny_model_dir))
    assert via_tokenizer.base_model_path == tiny_model_dir and via_tokenizer.base_model_source == "tokenizer_path"
    with pytest.raises(InputError, match="--base_model_path does not exist"):
        model_paths.resolve_model(moved, base_model_path=str(tmp_path / "nowhere"))


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
    """Without the flag it is an error naming file and line (tests/test_bad_inputs.py); with it, skipped and
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
    assert not (out / "evaluation_results.json").exists() and not (out / PARTIAL_NAME).exists()


def test_help_lists_the_flags():
    result = run_script(SCRIPT, "--help", check=True)
    for flag in ("--model_path", "--test_dataset_path", "--tokenizer_path", "--output_dir", "--batch_size",
                 "--max_new_tokens", "--mode", "--limit", "--base_model_path", "--trust_remote_code", "--allow_pickle",
                 "--overwrite"):
        assert flag in result.stdout
    assert "--json" in run_script(BENCH, "--help", check=True).stdout


def test_benchmark_runs_and_accounts_for_its_time(tiny_model_dir, shipped_split, tmp_path):
    """bench_eval.py on a tiny model: every method timed, speed-ups and bounds consistent with the timings."""
    out = tmp_path / "bench.json"
    run_script(BENCH, "--model_path", tiny_model_dir, "--test_dataset_path", shipped_split["test_file"],
               "--num_samples", "4", "--batch_size", "4", "--max_new_tokens", "3", "--repeats", "1",
               "--threads", "1", "--json", out, check=True)
    result = json.loads(out.read_text())
    seconds = result["seconds_per_sample"]
    assert set(seconds) == {"naive", "generate", "score", "prefill", "naive_prefill"}
    assert all(value > 0 for value in seconds.values())
    assert result["speedup"]["generate_vs_naive"] == pytest.approx(seconds["naive"] / seconds["generate"])
    bounds = result["bounds"]
    assert bounds["max_speedup_reading_every_prompt"] == pytest.approx(seconds["naive"] / seconds["prefill"])
    assert 1 <= bounds["naive_mean_new_tokens"] <= 3
    assert 0 <= result["agreement"]["generate_vs_naive_judgement"] <= 1
    assert result["samples"] == 4 and set(result["targets_met"]) == set(result["targets"])


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
