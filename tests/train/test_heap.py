"""defect_judge/train/heap.py, observed through glibc's own accounting (mallinfo2: the blocks that have their own
mmap) in a fresh Python process each, so this one's heap is left as it was: the threshold it sets holds, and holds
after a large block is freed (glibc's dynamic threshold would otherwise rise past it); an activation-sized tensor
gets its own mmap and goes back to the system when freed; no effect off Linux; and what a C int cannot hold."""
from __future__ import annotations

import json
import sys

import pytest

from defect_judge.train.heap import MMAP_THRESHOLD_MIB, limit_heap_fragmentation
from helpers import PYTHON, REPO_ROOT, run_script

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

# argv: the threshold to set ("-": none; "default": the function's default), the MiB the sizes are chosen around,
# and the platform the process says it is. Prints what the call returned (or raised) and, for each allocation,
# whether glibc gave it its own mmap and how much of it went back to the system when it was freed.
PROBE = r"""
import ctypes, json, sys
from defect_judge.train import heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
MiB = 1 << 20
setting, around, sys.platform = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    took = None if setting == "-" else heap.limit_heap_fragmentation(*([] if setting == "default" else [int(setting)]))
except Exception as error:
    took = f"{type(error).__name__}: {error}"

def mapped():
    return libc.mallinfo2().hblkhd  # bytes in blocks that have their own mmap

def allocate(size):
    before = mapped()
    block = libc.malloc(size)
    held = mapped() - before
    libc.free(block)
    return {"own_mmap": held >= size, "returned": held - (mapped() - before)}

report = {"took": took, "below": allocate(around * MiB - 64 * 1024)}   # in a fresh process
report["large"] = allocate((2 * around + 8) * MiB)                      # freed: glibc raises its threshold
report["above"] = allocate(around * MiB + 64 * 1024)
if len(sys.argv) > 4:
    import torch
    torch.empty(2 * around + 8, MiB // 4)                               # a large tensor, freed at once
    before = mapped()
    activation = torch.empty(2048, 576)                                 # 4.5 MiB of float32
    held = mapped() - before
    del activation
    report["activation"] = {"own_mmap": held >= 2048 * 576 * 4, "returned": mapped() == before}
print(json.dumps(report))
"""


def probe(setting: str, around: int = MMAP_THRESHOLD_MIB, platform: str = "linux", tensor: bool = False) -> dict:
    result = run_script(PYTHON, "-c", PROBE, setting, str(around), platform, *(["tensor"] if tensor else []),
                        cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def untouched() -> dict:
    """glibc's own threshold: 128 KiB in a fresh process, then as large as the largest block freed."""
    report = probe("-")
    assert report["below"]["own_mmap"] and report["large"]["own_mmap"], report
    assert not report["above"]["own_mmap"], report  # the dynamic threshold rose past it: this is what heap.py fixes
    return report


def test_the_default_is_activation_sized():
    assert MMAP_THRESHOLD_MIB == 4 and 2048 * 576 * 4 >= MMAP_THRESHOLD_MIB << 20  # the docstring's 4.5 MiB tensor


@pytest.mark.parametrize("setting, around", [("default", MMAP_THRESHOLD_MIB), ("1", 1), ("16", 16)])
def test_the_threshold_set_holds_after_large_blocks_are_freed(untouched, setting, around):
    report = probe(setting, around)
    assert report["took"] is True, report
    assert not report["below"]["own_mmap"], report   # below the threshold: from the heap, even in a fresh process
    assert report["large"]["own_mmap"] and report["above"]["own_mmap"], report  # above it: its own mmap, always
    assert report["above"]["returned"] >= around << 20, report  # ... given back to the system when freed


def test_an_activation_tensor_gets_its_own_mmap_and_goes_back_when_freed():
    limited, plain = probe("default", tensor=True), probe("-", tensor=True)
    assert limited["activation"] == {"own_mmap": True, "returned": True}, limited
    assert plain["activation"]["own_mmap"] is False, plain  # glibc alone: from the heap, after a larger tensor


def test_off_linux_it_takes_nothing_and_changes_nothing(untouched):
    report = probe("default", platform="darwin")
    assert report["took"] is False
    assert {k: report[k]["own_mmap"] for k in ("below", "large", "above")} == \
        {k: untouched[k]["own_mmap"] for k in ("below", "large", "above")}


def test_a_value_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError):
        limit_heap_fragmentation("four")  # before the C library is asked: nothing changes in this process


@pytest.mark.parametrize("setting", ["-1", "0", "33", "2048", "4096"])
def test_a_threshold_outside_glibcs_range_is_refused_and_not_applied(untouched, setting):
    """glibc takes 1 to 32 MiB on 64-bit; mallopt's C int would wrap a larger value (4096 -> 0: every
    allocation mmapped) and report it taken."""
    report = probe(setting)
    assert report["took"] == f"ValueError: an mmap threshold must be 1 to 32 MiB, got {setting}", report
    assert {k: report[k]["own_mmap"] for k in ("below", "large", "above")} == \
        {k: untouched[k]["own_mmap"] for k in ("below", "large", "above")}, report
