"""heap.py's malloc settings, measured in a fresh process (they last for the process that sets them)."""
import mmap
import subprocess
import sys

import numpy as np
import pytest

from lyra_assets import heap

pytestmark = pytest.mark.skipif(heap._libc() is None, reason="glibc only; other C libraries are left as they are")

# Two stages, one after the other, each making 300 MB of frame-sized blocks (2 MB) and freeing them at its end.
STAGES = """
import ctypes, resource, sys
from lyra_assets import heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    heap.tune_for_job()
SIZE, BLOCKS = 2 << 20, 150

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def stage():
    blocks = [libc.malloc(SIZE) for _ in range(BLOCKS)]
    for block in blocks:
        ctypes.memset(block, 1, SIZE)
    for block in blocks:
        libc.free(block)
"""
PROGRAM = STAGES + """
stage()
before = faults()
stage()
second = faults() - before
held = rss()
heap.give_back()
print(second, held, rss())
"""


def measure(mode: str) -> tuple[int, int, int]:
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return tuple(int(x) for x in done.stdout.split())


def test_a_job_reuses_the_memory_it_freed_and_gives_it_back_at_the_end():
    pages = 150 * (2 << 20) // 4096
    untuned_faults, _, _ = measure("default")
    faults, held, after = measure("tuned")
    # By default the first stage's blocks go back to the system when freed: the second faults them in anew.
    assert untuned_faults > 0.9 * pages
    # Tuned, the second stage reuses the first one's memory.
    assert faults < 0.1 * pages
    # The 300 MB freed stay with the process while the job runs, and go back when it ends.
    assert held > 250 << 20
    assert after < held - (250 << 20)


# A tuned job that freed 300 MB holds three 16 MB arrays of zeros (below the mmap threshold), writes an eighth
# of each, then needs its 300 MB again.
ZEROS_PROGRAM = STAGES + """
import numpy as np
make = heap.untouched_zeros if sys.argv[2] == "untouched" else np.zeros
stage()
arrays = [make((16, 1 << 18), np.float32) for _ in range(3)]
for array in arrays:
    assert not array.any()
    array[:2] = 1  # 2 of 16 MB written
stage()
# this program's own peak (ru_maxrss would start from the test process's size, which the child is forked from)
print(next(int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def peak_with_zeros(make: str) -> int:
    done = subprocess.run([sys.executable, "-c", ZEROS_PROGRAM, "tuned", make], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_untouched_zeros_cost_memory_only_where_written():
    # np.zeros takes the 48 MB from the freed heap and clears them, so the next stage needs 48 MB more from the
    # system; untouched_zeros maps its own pages, of which only the 6 MB written cost memory.
    assert peak_with_zeros("np") - peak_with_zeros("untouched") > 30 << 20


def test_untouched_zeros_are_plain_zeros_where_mmap_has_no_private_mappings(monkeypatch):
    monkeypatch.delattr(mmap, "MAP_PRIVATE")  # as on Windows
    zeros = heap.untouched_zeros((2, 3), np.float32)
    assert zeros.dtype == np.float32 and zeros.shape == (2, 3) and not zeros.any() and zeros.flags.writeable
