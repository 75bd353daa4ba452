"""The ranks of a data-parallel run (torchrun, accelerate, the DeepSpeed launcher): which one this process is, and
exchanging Python values between them. The same calls work in a single process (rank 0 of 1).

Used where every rank computes a share and one rank decides: the linear probe's features (``linear_probe.py``),
the verdict head's dev scores (``trainer.py``) and the evaluation's dev threshold (``eval/model_evaluation.py``).
"""
from __future__ import annotations

import os
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
