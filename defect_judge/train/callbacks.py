"""The callbacks a training run adds to the Trainer: marking a checkpoint complete once every rank has written it
(the marker of ``model/run_folder.py``), recording the peak GPU memory in the final log entry, and releasing the
shared memory DeepSpeed's CPU ranks leave in /dev/shm.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import TrainerCallback

from defect_judge.distributed import release_deepspeed_shared_memory
from defect_judge.model.run_folder import checkpoint_name, mark_complete

log = logging.getLogger(__name__)


class MarkCheckpointCompleteCallback(TrainerCallback):
    """Marks a checkpoint complete once every rank has written its part.

    Trainer writes ``checkpoint-N`` in place, file by file; a run killed
    mid-save leaves a folder that looks like a checkpoint. The marker,
    written last, is what ``find_resume_checkpoint`` trusts.
    """

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / checkpoint_name(state.global_step)
            if folder.is_dir():
                mark_complete(folder, state.global_step, args.world_size)


class LogPeakGpuMemoryCallback(TrainerCallback):
    """Adds ``torch.cuda.max_memory_allocated()`` (this process's peak since it started, loading included) to
    the final training log entry, so ``trainer_state.json`` holds it as ``train_peak_gpu_memory_bytes``.

    transformers' own memory metrics (``--skip_memory_metrics false``) poll the process's RSS in a busy
    thread, which would slow the very steps being measured; this reads one counter once.
    """

    def on_train_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available() and state.log_history and "train_runtime" in state.log_history[-1]:
            state.log_history[-1]["train_peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
            log.info("peak GPU memory allocated: %.2f GiB", torch.cuda.max_memory_allocated() / 2 ** 30)


def release_shared_memory() -> None:
    """Unlinks the all-reduce buffers DeepSpeed's CPU ranks leave in /dev/shm, while the run is alive."""
    released = release_deepspeed_shared_memory()
    if released is not None:
        log.info("releasing DeepSpeed's shared-memory buffers (%s, one per rank): the memory returns when the "
                 "ranks exit", released)


class ReleaseSharedMemoryCallback(TrainerCallback):
    """Releases DeepSpeed's shared memory (``release_shared_memory``) at the first epoch: on CPU, DeepSpeed
    starts inside ``train()``, after ``on_train_begin``."""

    def __init__(self):
        self.released = False

    def on_epoch_begin(self, args, state, control, **kwargs):
        if not self.released:
            release_shared_memory()
            self.released = True
