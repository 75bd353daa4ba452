"""Faults with real processes and real signals: training killed (SIGKILL of the
whole DeepSpeed process group) right after a checkpoint and resumed, evaluation
killed mid-run (two ranks, score mode) and run again, the converter killed while
it writes, and outputs on a full disk, a read-only file system or under a file.

What a kill must never cost: a step of training (the resumed run reproduces the
uninterrupted one), a sample of evaluation (every id exactly once), or the
previous good train/test split (atomic replace)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from defect_judge import free_port
from defect_judge.model.run_folder import (BEST_CHECKPOINT_FILE, CHECKPOINT_COMPLETE_FILE, TRAINER_STATE_FILE,
                                           checkpoint_name, checkpoint_step, list_checkpoints)
from defect_judge.evaluate.results_folder import partial_files
from helpers import (CONVERT, EVALUATE, LAUNCHER, PYTHON, REPO_ROOT, TRAIN, assert_clean_failure, make_records,
                    run_script, write_records)

# 8 optimizer steps of 2 micro-batches, a checkpoint and an evaluation every 2: the kill lands after
# checkpoint-2 with steps left to redo.
TRAIN_ARGS = ("--max_steps", "8", "--save_steps", "2", "--max_length", "256", "--logging_steps", "1",
              "--learning_rate", "1e-2", "--per_device_eval_batch_size", "4", "--report_to", "none",
              "--seed", "7")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first found first."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                children = [int(c) for c in task.read_text().split()]
                found += children
                queue += children
    return found


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process's whole process group, as a crash or the OOM killer takes a job down, and
    every process below it: torchrun starts each rank in a session of its own, which a group kill
    would leave running."""
    below = descendants(process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=60)


def wait_for(condition, process: subprocess.Popen, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the run ended (rc {process.returncode}) before {what}:\n{output[-4000:]}")
        if time.monotonic() > deadline:
            kill_group(process)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -------------------------------------------------------------- training

@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fault-train-data")
    write_records(folder / "train.jsonl", make_records(4, event_repeat=2) + make_records(4, start=4))
    write_records(folder / "test.jsonl", make_records(3, start=1))
    return folder


def launch_training(output_dir: Path, data: Path, model: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ) | ONE_THREAD | {
        "MASTER_PORT": str(free_port()), "MODEL_PATH": str(model), "TRAIN_DATA": str(data / "train.jsonl"),
        "TEST_DATA": str(data / "test.jsonl"), "OUTPUT_DIR": str(output_dir), "NUM_GPUS": "1", "LORA_RANK": "4",
        "GRADIENT_ACCUMULATION_STEPS": "2"}
    return subprocess.Popen([str(LAUNCHER), *TRAIN_ARGS, *extra], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        raise
    assert process.returncode == 0, output[-6000:]
    return output


def trainer_log(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / TRAINER_STATE_FILE).read_text())["log_history"]


def by_step(history: list[dict], key: str) -> dict[int, float]:
    return {entry["step"]: entry[key] for entry in history if key in entry}


def test_training_killed_after_a_checkpoint_resumes_to_the_same_run(train_data, tiny_model_dir, tmp_path):
    """SIGKILL of the launcher's whole process group once checkpoint-2 is complete; a checkpoint that
    was being written (real, or planted: a truncated adapter without its completion marker) is
    skipped; the resumed run matches an uninterrupted one step for step."""
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight = launch_training(straight_dir, train_data, tiny_model_dir)  # the reference, run meanwhile
    killed = launch_training(killed_dir, train_data, tiny_model_dir)
    wait_for(lambda: (killed_dir / checkpoint_name(2) / CHECKPOINT_COMPLETE_FILE).is_file(), killed,
             what="checkpoint-2 was complete")
    kill_group(killed)
    assert killed.returncode == -signal.SIGKILL, "the launcher ended before the kill"
    killed.stdout.close()
    assert not (killed_dir / BEST_CHECKPOINT_FILE).exists()
    checkpoints = list_checkpoints(killed_dir)
    complete = [p for p in checkpoints if (p / CHECKPOINT_COMPLETE_FILE).is_file()]
    newest_step = checkpoint_step(complete[-1])
    assert newest_step < 8, "the kill came too late: nothing left to resume"
    # What a kill during the next save leaves: the adapter cut short, no completion marker.
    planted = killed_dir / checkpoint_name(newest_step + 2)
    if not planted.exists():
        planted.mkdir()
        adapter = (complete[-1] / "adapter_model.safetensors").read_bytes()
        (planted / "adapter_model.safetensors").write_bytes(adapter[:len(adapter) // 3])
    assert not (planted / CHECKPOINT_COMPLETE_FILE).exists()

    straight_output = finish(straight)
    resumed_output = finish(launch_training(killed_dir, train_data, tiny_model_dir,
                                            "--resume_from_checkpoint", "auto"))
    assert "skipping incomplete checkpoint(s)" in resumed_output and planted.name in resumed_output
    assert f"resuming from {killed_dir / checkpoint_name(newest_step)}" in resumed_output
    assert "Traceback" not in resumed_output + straight_output

    got, want = trainer_log(killed_dir), trainer_log(straight_dir)
    assert max(e["step"] for e in got) == max(e["step"] for e in want) == 8
    for key in ("loss", "eval_loss"):
        resumed_values = {s: v for s, v in by_step(got, key).items() if s > newest_step}
        straight_values = {s: v for s, v in by_step(want, key).items() if s > newest_step}
        assert resumed_values and sorted(resumed_values) == sorted(straight_values), (key, got, want)
        for step in straight_values:
            assert resumed_values[step] == pytest.approx(straight_values[step], abs=1e-5), (key, step)
    best_got = json.loads((killed_dir / BEST_CHECKPOINT_FILE).read_text())
    best_want = json.loads((straight_dir / BEST_CHECKPOINT_FILE).read_text())
    assert best_got["best_checkpoint"] == best_want["best_checkpoint"]
    assert best_got["value"] == pytest.approx(best_want["value"], abs=1e-5)
    assert (killed_dir / best_got["best_checkpoint"] / CHECKPOINT_COMPLETE_FILE).is_file()
    # Every checkpoint left behind is complete (the planted one was removed or rewritten whole).
    assert all((p / CHECKPOINT_COMPLETE_FILE).is_file() for p in list_checkpoints(killed_dir))


# ------------------------------------------------------------ evaluation

@pytest.fixture(scope="module")
def slow_tiny_model(tmp_path_factory, embedded_tokenizer) -> Path:
    """Slow enough that a kill lands mid-run, small enough to load at once."""
    from helpers import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("fault-slow-tiny"), embedded_tokenizer, seed=3, hidden=128,
                            layers=4)


def finished_lines(output_dir: Path) -> int:
    """Complete sample lines (newline-terminated, after the header) over every rank's partial file."""
    return sum(max(0, p.read_bytes().count(b"\n") - 1) for p in partial_files(output_dir))


def test_two_rank_score_evaluation_killed_mid_run_completes_every_id_once(slow_tiny_model, shipped_split,
                                                                           tmp_path):
    """tests/scripts/test_model_evaluation.py kills a one-process generate run; here both ranks of a torchrun
    score run die together and the rerun finishes the rest."""
    test_file = shipped_split["test_file"]
    common = ["--model_path", str(slow_tiny_model), "--test_dataset_path", str(test_file), "--mode", "score",
              "--batch_size", "1"]
    out = tmp_path / "killed"

    def torchrun() -> list[str]:
        return [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                str(EVALUATE), *common, "--output_dir", str(out)]

    env = dict(os.environ) | ONE_THREAD
    process = subprocess.Popen(torchrun(), cwd=REPO_ROOT, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: len(partial_files(out)) == 2 and finished_lines(out) >= 4, process,
             what="both ranks had evaluated samples")
    kill_group(process)
    process.stdout.close()
    done = finished_lines(out)
    total = len(test_file.read_text(encoding="utf-8").splitlines())
    assert 4 <= done < total, "the run ended before the kill"
    assert not (out / "evaluation_results.json").exists()
    assert len(partial_files(out)) == 2  # both ranks had written

    resumed = run_script(*torchrun(), env=ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resuming: {done} samples already evaluated" in resumed.stderr, resumed.stderr[-5000:]
    assert not partial_files(out)
    straight = run_script(EVALUATE, *common, "--output_dir", tmp_path / "straight", env=ONE_THREAD)
    assert straight.returncode == 0, straight.stderr[-4000:]
    got = json.loads((out / "evaluation_results.json").read_text(encoding="utf-8"))
    want = json.loads((tmp_path / "straight" / "evaluation_results.json").read_text(encoding="utf-8"))
    ids = [json.loads(line)["id"] for line in test_file.read_text(encoding="utf-8").splitlines()]
    assert [s["id"] for s in got["samples"]] == ids  # every id, once, in the test file's order
    assert [s["prediction"] for s in got["samples"]] == [s["prediction"] for s in want["samples"]]
    for a, b in zip(got["samples"], want["samples"]):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-4), a["id"]
    assert got["overall"] == want["overall"]


# ------------------------------------------------------------ conversion

def write_big_raw_input(folder: Path, n: int) -> Path:
    """``n`` distinct valid raw samples in one JSONL file (~1 KB event each)."""
    folder.mkdir(parents=True, exist_ok=True)
    subtypes = ["空指针解引用", "内存泄漏", "数组越界", "资源泄漏"]
    code = "char *buf = malloc(n);\nif (read(fd, buf, n) < 0) return -1;\nfree(buf);\n" * 12
    with open(folder / "big.jsonl", "w", encoding="utf-8") as handle:
        for i in range(n):
            sample = {"instruction": [{"subtype": subtypes[i % 4]}],
                      "input": {"task": "请判断下面静态分析工具报告的缺陷是否为真实缺陷。",
                                "event": f"文件 src/mod_{i}.c 第 {i % 500 + 1} 行：\n{code}",
                                "output_format": "判断:是/否\n\n原因：简要说明理由"},
                      "output": {"judgement": "是" if i % 3 else "否", "reason": f"第 {i} 个样本的原因。"}}
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return folder


def convert_args(input_dir: Path, out: Path) -> list[str]:
    return [str(CONVERT), "--input_dir", str(input_dir), "--converted_file", str(out / "converted.jsonl"),
            "--train_file", str(out / "train.jsonl"), "--test_file", str(out / "test.jsonl")]


def test_converter_killed_while_writing_never_leaves_a_truncated_split(tmp_path):
    out = tmp_path / "out"
    small = write_big_raw_input(tmp_path / "small", 40)
    run_script(*convert_args(small, out), check=True)
    old = snapshot(out)
    big = write_big_raw_input(tmp_path / "big", 20000)
    process = subprocess.Popen([PYTHON, *convert_args(big, out)], cwd=REPO_ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    writing_split = lambda: any(n.startswith((".train.jsonl.", ".dev.jsonl.", ".test.jsonl."))
                                for n in os.listdir(out))
    wait_for(writing_split, process, what="the split files were being written")
    kill_group(process)
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    after_kill = {name: data for name, data in snapshot(out).items() if not name.startswith(".")}
    # The run starts again and finishes; what the kill left is each file's old or final bytes.
    again = run_script(*convert_args(big, out))
    assert again.returncode == 0, again.stderr[-3000:]
    new = {name: data for name, data in snapshot(out).items() if not name.startswith(".")}
    assert set(after_kill) == set(old) == set(new)
    for name, data in after_kill.items():
        assert data in (old[name], new[name]), f"{name} is neither the old nor the new file"
    splits = ("train.jsonl", "dev.jsonl", "test.jsonl")  # dev.jsonl lands beside a moved train.jsonl
    assert any(after_kill[name] == old[name] for name in splits), "the kill came after every split was written"
    assert sum(new[name].count(b"\n") for name in splits) == 20000


# ------------------------------------------- full disk, read-only, under a file

@contextlib.contextmanager
def tmpfs(mountpoint: Path, options: str):
    """A real tmpfs (root with CAP_SYS_ADMIN only); skips the test where it cannot be mounted."""
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory, shipped_split, tiny_model_dir) -> Path:
    folder = tmp_path_factory.mktemp("fault-eval-inputs")
    lines = shipped_split["test_file"].read_text(encoding="utf-8").splitlines(keepends=True)[:4]
    (folder / "test.jsonl").write_text("".join(lines), encoding="utf-8")
    shutil.copytree(tiny_model_dir, folder / "model")
    return folder


def stage_commands(inputs: Path, train_data: Path, out: Path) -> dict[str, list[str]]:
    return {
        "convert": convert_args(REPO_ROOT / "dataset" / "output", out),
        "evaluate": [str(EVALUATE), "--model_path", str(inputs / "model"), "--test_dataset_path",
                     str(inputs / "test.jsonl"), "--output_dir", str(out), "--mode", "score"],
        "train": [str(TRAIN), "--model_path", str(inputs / "model"), "--train_data", str(train_data / "train.jsonl"),
                  "--test_data", str(train_data / "test.jsonl"), "--output_dir", str(out), "--max_steps", "1",
                  "--report_to", "none", "--max_length", "256", "--lora_rank", "4"],
    }


def assert_nothing_half_written(folder: Path) -> None:
    """Every output left is whole: JSON parses, JSONL lines parse, a PNG ends with its IEND chunk; a
    checkpoint that could not be saved whole is not marked complete (resume skips it)."""
    for path in folder.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".jsonl":
            assert data.endswith(b"\n"), path
            [json.loads(line) for line in data.splitlines()]
        elif path.suffix == ".png":
            assert data.startswith(b"\x89PNG") and data[-12:-4] == b"\x00\x00\x00\x00IEND", path
    for checkpoint in list_checkpoints(folder / "out"):
        assert not (checkpoint / CHECKPOINT_COMPLETE_FILE).exists(), checkpoint


@pytest.mark.parametrize("stage", ["convert", "evaluate", "train"])
@pytest.mark.parametrize("fault", ["disk_full", "read_only", "under_a_file"])
def test_unwritable_output_is_one_clear_error_and_inputs_stay_untouched(stage, fault, eval_inputs, train_data,
                                                                         tmp_path):
    inputs_before = snapshot(eval_inputs) | {f"data/{k}": v for k, v in snapshot(train_data).items()}
    with contextlib.ExitStack() as stack:
        if fault == "disk_full":
            # 3 pages: the output folder can be made, the outputs (a plot, a tokenizer) do not fit.
            out = stack.enter_context(tmpfs(tmp_path / "mnt", "size=12k")) / "out"
            expected = "No space left on device"
        elif fault == "read_only":
            out = stack.enter_context(tmpfs(tmp_path / "mnt", "size=1m,ro")) / "out"
            expected = "Read-only file system"
        else:
            (tmp_path / "a_file").write_text("not a folder", encoding="utf-8")
            out = tmp_path / "a_file" / "out"
            expected = "Not a directory"
        args = stage_commands(eval_inputs, train_data, out)[stage]
        result = run_script(*args, env=ONE_THREAD, timeout=600)
        line = assert_clean_failure(result, expected)
        if not (stage == "train" and fault == "disk_full"):
            # Training fails inside safetensors' Rust writer, whose error names no file.
            assert str(out.parent) in line, line  # names where it could not write
        if out.parent.is_dir():
            assert_nothing_half_written(out.parent)
    after = snapshot(eval_inputs) | {f"data/{k}": v for k, v in snapshot(train_data).items()}
    assert after == inputs_before


# ------------------------------------------------------- the launcher's rendezvous port

DEFAULT_MASTER_PORT = 29500


@contextlib.contextmanager
def default_port_taken():
    """Port 29500 held by a listening socket, as another run (or `make demo`) holds it; when something on
    this machine already holds it, it is taken all the same."""
    with socket.socket() as holder:
        with contextlib.suppress(OSError):
            holder.bind(("", DEFAULT_MASTER_PORT))
            holder.listen()
        yield


def test_launcher_picks_a_free_port_when_29500_is_taken_or_names_a_taken_master_port(train_data, tiny_model_dir,
                                                                                      tmp_path):
    """The run used to die in ~40 lines of DistNetworkError EADDRINUSE at the rendezvous. Bad training data makes
    the run stop right after it: reaching that error proves the rendezvous port worked."""
    bad = tmp_path / "train.jsonl"
    bad.write_text("{not json\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "MASTER_PORT"} | ONE_THREAD | {
        "MODEL_PATH": str(tiny_model_dir), "TRAIN_DATA": str(bad), "TEST_DATA": str(train_data / "test.jsonl"),
        "OUTPUT_DIR": str(tmp_path / "out"), "NUM_GPUS": "1"}
    with default_port_taken():
        result = run_script(LAUNCHER, "--report_to", "none", env=env, timeout=300)
        output = result.stdout + result.stderr
        chosen = re.search(r"port 29500 is in use \(another run\?\): using MASTER_PORT=(\d+)", result.stdout)
        assert chosen, output[-3000:]
        assert f"--master_port {chosen.group(1)}" in result.stdout and chosen.group(1) != str(DEFAULT_MASTER_PORT)
        assert "EADDRINUSE" not in output and "DistNetworkError" not in output
        assert_clean_failure(result, f"{bad}:1", "invalid JSON")
        # A port the user chose is theirs to change: one line naming MASTER_PORT, nothing launched.
        result = run_script(LAUNCHER, env=env | {"MASTER_PORT": str(DEFAULT_MASTER_PORT)}, timeout=120)
    assert_clean_failure(result, "MASTER_PORT 29500 is in use", "unset MASTER_PORT")
    assert "deepspeed" not in result.stdout and not (tmp_path / "out").exists()
