"""glibc malloc settings for a job: its large, short-lived arrays come from memory it already touched.

By default glibc gives every allocation above a moving threshold (128 kB up to 32 MB) its own mapping,
unmaps it when freed, and returns the free top of the heap to the system beyond twice that threshold. A
stage's frame-sized arrays (1-4 MB) thus went back to the system at its end and the next stage faulted them
in anew, page by page: a 121-frame build took about 310 thousand page faults and 2.6 s of system CPU on
2 cores. With the settings below, 145 thousand and 1.8 s, at the same peak memory (0.93 GB at 121 frames,
2.06 GB at 481, where system CPU fell from 9.2 to 4.0 s). Arrays of 4 MB and more are numpy's, which asks
for huge pages for them: few faults each.

The memory a job freed stays with the process until the job ends, then `give_back` returns it: a daemon
worker, or a program calling `build` job after job, holds no more between jobs than before.
With another C library (macOS, Windows, musl) these change nothing.

`untouched_zeros` is for a large array a stage writes only in parts (fusion's volume): whatever its size, its
pages are the system's until written.
"""
from __future__ import annotations

import ctypes
import functools
import mmap
from typing import Callable, TypeVar

import numpy as np

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 32 << 20  # glibc's largest: allocations below come from the heap and are reused there
TRIM_THRESHOLD = 1 << 30  # the free top of the heap is kept up to this size while a job runs
T = TypeVar("T")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  glibc's, not another C library's
        return libc
    except (OSError, AttributeError):
        return None


def tune_for_job() -> None:
    """Called before a job starts its threads. Also has all threads share one malloc arena: by default every
    thread that allocates gets its own (up to 8 a core), each keeping the high-water mark of its freed blocks;
    with the bake's threads and the walkthrough writer's that held 0.1-0.2 GB more at 481 frames."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def untouched_zeros(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An array of zeros in a mapping of its own, whatever its size: its pages cost memory only once written.
    np.zeros below MMAP_THRESHOLD comes from the heap, whose reused pages calloc clears, touching them all."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size == 0 or not hasattr(mmap, "MAP_PRIVATE"):  # Windows' mmap has no flags; its np.zeros is lazy anyway
        return np.zeros(shape, dtype)
    # Private: reading an untouched page of it maps the kernel's zero page (a shared mapping allocates one).
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    return np.frombuffer(mapping, dtype).reshape(shape)  # the array keeps the mapping alive


def give_back() -> None:
    """Return the heap's free pages to the system (all of them, not only the top's)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def gives_memory_back(job: Callable[..., T]) -> Callable[..., T]:
    """`job`, then `give_back`, however it ends."""
    @functools.wraps(job)
    def run(*args, **kwargs) -> T:
        try:
            return job(*args, **kwargs)
        finally:
            give_back()

    return run
