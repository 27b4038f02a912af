"""Process-wide settings of the `loopctr` commands (not applied on import: a library leaves its host process alone).

`keep_freed_memory()`: glibc's allocator returns large freed blocks to the kernel (blocks above its mmap
threshold, and the top of the heap above its trim threshold), so a model that allocates and frees tensors of
tens to hundreds of MB at every forward pass has each of them mapped again and zero-filled page by page by the
kernel. Raising both thresholds to 1 GiB keeps that memory in the process for reuse, as jemalloc or tcmalloc
would: evaluation of LoopCTR at batch 8192 runs about 2x faster on CPU (BENCHMARKS.md). The cost is that up to
1 GiB of freed memory stays resident. `LOOPCTR_MALLOC=default` in the environment leaves the allocator as it is.

`free_cores()`: the cores this process may use that other processes are not already busy on (its CPU affinity
less the 1-minute load average), at least 1: torch's default of one thread per core oversubscribes a shared
machine several-fold (OpenMP threads spin), so the demo and the benchmarks take this many instead.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds to 1 GiB; True if done (False off glibc or when turned off)."""
    if os.environ.get("LOOPCTR_MALLOC") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_cores() -> int:
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, available_cores() - int(round(busy)))
