"""The ranks of a data-parallel run (torchrun, accelerate, the DeepSpeed launcher): which one this process is, and
exchanging Python values between them. The same calls work in a single process (rank 0 of 1).

Used where every rank computes a share and one rank decides: the linear probe's features (``linear_probe.py``),
the verdict head's dev scores (``trainer.py``) and the evaluation's dev threshold (``eval/model_evaluation.py``).
An inference run (an evaluation, the judge of new code) joins its ranks with ``init_ranks``. Also: releasing the
shared memory DeepSpeed's CPU ranks would otherwise leave behind.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


class LaunchedRank(NamedTuple):
    rank: int        # among all processes
    world: int       # how many processes
    local_rank: int  # among this machine's processes: its GPU


def launched_rank() -> LaunchedRank:
    """This process's place as its launcher set it in the environment (RANK, WORLD_SIZE, LOCAL_RANK), before
    any process group exists; one plain process is rank 0 of 1."""
    return LaunchedRank(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                        int(os.environ.get("LOCAL_RANK", "0")))


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks in the initialised process group (0, 1 without one)."""
    if not _initialized():
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def all_ranks(value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank."""
    rank, world = rank_and_world()
    if world == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered


def from_rank_zero(value: T) -> T:
    """Rank 0's ``value`` on every rank (what the other ranks pass is ignored)."""
    if rank_and_world()[1] == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# DeepSpeed's CPU all-reduce (ops/csrc/cpu/comm/shm.cpp) maps one buffer per rank, named
# <prefix>_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>, and never unlinks it.
_DEEPSPEED_SHM_PREFIX = "deepspeed_allreduce_buffer"
_SHM_DIR = Path("/dev/shm")


def release_deepspeed_shared_memory() -> Path | None:
    """Unlink this rank's DeepSpeed shared-memory buffer once every rank has mapped it; returns what was removed
    (None: nothing, or already released).

    DeepSpeed leaves a 64 MiB file in /dev/shm per CPU rank and run, which holds RAM until the machine restarts
    (hundreds of test runs filled a 24 GiB machine). The ranks keep their mappings, so the run goes on, and the
    memory goes back when the last rank exits, however it ends. Nothing happens where DeepSpeed never started.
    """
    try:
        import deepspeed.comm as ds_comm
    except ImportError:
        return None
    if not ds_comm.is_initialized():
        return None
    rank, world = rank_and_world()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # each rank maps its peers' buffers while DeepSpeed starts; after this, none opens one again
    name = "_".join((_DEEPSPEED_SHM_PREFIX, str(os.getuid()), os.environ.get("MASTER_ADDR", ""),
                     os.environ.get("MASTER_PORT", ""), str(rank)))
    path = _SHM_DIR / name
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path


class Ranks(NamedTuple):
    """The ranks of a data-parallel inference run (an evaluation, the judge of new code): this one, how many, and
    the device it runs on."""
    rank: int
    world: int
    device: str

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def finish(self) -> None:
        """Leave the process group (nothing in a single process)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def init_ranks() -> Ranks:
    """One process, or one rank of torchrun / accelerate launch (they set RANK, WORLD_SIZE, LOCAL_RANK): its
    process group joined, its GPU chosen (gloo on CPUs)."""
    import torch

    rank, world, local_rank = launched_rank()
    cuda = torch.cuda.is_available()
    device = f"cuda:{local_rank}" if cuda else "cpu"
    if world > 1:
        import torch.distributed as dist

        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return Ranks(rank, world, device)


def setup_rank_logging() -> None:
    """INFO on rank 0, warnings only on the others, each line prefixed with its rank in a data-parallel run."""
    import logging

    rank, world, _ = launched_rank()
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s {prefix}%(message)s", datefmt="%H:%M:%S")
