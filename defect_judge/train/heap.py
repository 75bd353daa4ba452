"""The C heap of a CPU training process: large allocations get their own mmap, so memory freed by autograd goes
back to the system at once (glibc only; no effect on GPU memory).

glibc raises its mmap threshold each time a large block is freed, so soon activation-sized tensors come from the
heap, and the holes left between the tensors autograd keeps make a CPU training process hold far more than it
uses. A fixed threshold returns each freed block to the system at once, at the price of page faults: at 2,048
tokens on the embedded model (``instruct_fine_tuning/bench_train.py``, 4 steps) peak RSS 3.9 GiB instead of
5.5-5.7 GiB, for ~25% slower steps. ``train_lora.py --cpu_heap_mmap_threshold_mb`` sets it (0: glibc's own).
"""
from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_MIB = 4  # activation-sized blocks (a 2,048 x 576 float32 tensor is 4.5 MiB) and up
MAX_MMAP_THRESHOLD_MIB = 32  # glibc's ceiling on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): mallopt refuses more


def limit_heap_fragmentation(threshold_mib: int = MMAP_THRESHOLD_MIB) -> bool:
    """Give every allocation of ``threshold_mib`` MiB (1 to 32) or more its own mmap; True when the C library took
    it. A value outside that range is a ValueError: mallopt takes a C int, and a larger one would wrap."""
    threshold_mib = int(threshold_mib)
    if not 1 <= threshold_mib <= MAX_MMAP_THRESHOLD_MIB:
        raise ValueError(f"an mmap threshold must be 1 to {MAX_MMAP_THRESHOLD_MIB} MiB, got {threshold_mib}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold_mib << 20))
    except (OSError, AttributeError):  # not glibc
        return False
