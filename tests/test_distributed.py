"""defect_judge/distributed.py: one plain process is rank 0 of 1 (its place read from the launcher's environment,
values exchanged with itself, an inference run's ranks on the CPU); two real gloo ranks started as a launcher starts
them exchange values and log with their rank; DeepSpeed's shared-memory buffer of a CPU rank is released, once."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

from defect_judge import free_port
from defect_judge.distributed import (LaunchedRank, Ranks, all_ranks, from_rank_zero, init_ranks, launched_rank,
                                      rank_and_world, release_deepspeed_shared_memory)
from helpers import PYTHON, REPO_ROOT

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_SIZE")


@pytest.fixture
def plain_process(monkeypatch):
    """This process as a plain ``python script.py`` runs: no launcher variables."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------ one process

def test_the_launchers_environment_says_which_rank_this_is(monkeypatch, plain_process):
    assert launched_rank() == LaunchedRank(0, 1, 0)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched_rank() == LaunchedRank(rank=5, world=8, local_rank=1)


def test_one_process_exchanges_values_with_itself(plain_process):
    assert not torch.distributed.is_initialized()
    assert rank_and_world() == (0, 1)
    value = {"scores": [0.25, 0.75], "rank": 0}
    assert all_ranks(value) == [value]
    assert from_rank_zero(value) is value
    assert release_deepspeed_shared_memory() is None  # DeepSpeed never started here


def test_an_inference_run_in_one_process_joins_no_group(plain_process):
    ranks = init_ranks()
    assert ranks == Ranks(0, 1, "cuda:0" if torch.cuda.is_available() else "cpu")
    ranks.barrier()
    ranks.finish()
    assert not torch.distributed.is_initialized()


# ------------------------------------------------------------------ real ranks

def launch(code: str, world: int, **env: str) -> list[subprocess.CompletedProcess]:
    """``world`` Python processes running ``code``, with the variables torchrun sets (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and ``env``; each must exit 0."""
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    common = base | {"WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                     "OMP_NUM_THREADS": "1"} | env
    processes = [subprocess.Popen([PYTHON, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, text=True,
                                  env=common | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in range(world)]
    results = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank}:\n{result.stderr[-3000:]}"
    return results


TWO_RANKS = """
    import json, logging
    from defect_judge.distributed import (all_ranks, from_rank_zero, init_ranks, launched_rank, rank_and_world,
                                          setup_rank_logging)
    setup_rank_logging()
    ranks = init_ranks()
    logging.getLogger("t").info("info from rank %d", ranks.rank)
    logging.getLogger("t").warning("warning from rank %d", ranks.rank)
    report = {"launched": list(launched_rank()), "ranks": list(ranks), "rank_and_world": list(rank_and_world()),
              "all": all_ranks({"rank": ranks.rank, "share": [ranks.rank] * (ranks.rank + 1)}),
              "zero": from_rank_zero(f"chosen by rank {ranks.rank}")}
    ranks.barrier()
    ranks.finish()
    print(json.dumps(report))
"""


def test_two_gloo_ranks_exchange_values_in_rank_order():
    results = launch(TWO_RANKS, 2)
    reports = [json.loads(result.stdout) for result in results]
    every = [{"rank": 0, "share": [0]}, {"rank": 1, "share": [1, 1]}]
    for rank, report in enumerate(reports):
        assert report["launched"] == [rank, 2, rank]
        assert report["ranks"] == [rank, 2, "cpu"] and report["rank_and_world"] == [rank, 2]
        assert report["all"] == every  # in rank order, on every rank
        assert report["zero"] == "chosen by rank 0"  # rank 1's value is ignored
    # INFO on rank 0 only, warnings everywhere, each line with its rank
    assert "[rank 0/2] info from rank 0" in results[0].stderr and "[rank 0/2] warning from rank 0" in results[0].stderr
    assert "info from rank 1" not in results[1].stderr and "[rank 1/2] warning from rank 1" in results[1].stderr


DEEPSPEED_RANK = """
    import json, os
    from pathlib import Path
    import deepspeed
    import deepspeed.comm as comm
    import torch
    from defect_judge.distributed import release_deepspeed_shared_memory
    before = release_deepspeed_shared_memory()
    deepspeed.init_distributed(dist_backend="gloo")
    pattern = f"deepspeed_allreduce_buffer_*_{os.environ['MASTER_PORT']}_*"
    mapped = sorted(p.name for p in Path("/dev/shm").glob(pattern))
    released = release_deepspeed_shared_memory()
    again = release_deepspeed_shared_memory()
    summed = torch.ones(2)
    comm.all_reduce(summed)  # the run goes on: the ranks keep their mappings
    comm.barrier()
    print(json.dumps({"before": before, "mapped": mapped, "released": str(released), "again": again,
                      "left": sorted(p.name for p in Path("/dev/shm").glob(pattern)), "sum": summed.tolist()}))
"""


def test_deepspeeds_shared_memory_buffer_is_released_once_per_rank():
    """DeepSpeed's CPU ranks on one machine (LOCAL_SIZE, as its launcher sets it) map a buffer each in /dev/shm
    and never unlink it: each rank unlinks its own, once, after both have mapped them, and the all-reduce still
    works."""
    world, port = 2, str(free_port())
    results = launch(DEEPSPEED_RANK, world, LOCAL_SIZE=str(world), MASTER_PORT=port)
    names = [f"deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_{port}_{rank}" for rank in range(world)]
    for rank, result in enumerate(results):
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["before"] is None and report["again"] is None
        assert report["mapped"] == names  # the buffers DeepSpeed made, named as release_ expects
        assert report["released"] == str(Path("/dev/shm") / names[rank])
        assert report["left"] == [] and report["sum"] == [float(world)] * 2
    assert not [name for name in names if (Path("/dev/shm") / name).exists()]
