"""Keep the memory of freed tensors for the next ones, as torch's own CPU launcher does.

glibc's ``malloc`` maps every allocation above 32 MB afresh from the kernel and unmaps it on
``free``, so the next tensor of that size page-faults on every page of its first write. Dense
prediction allocates such tensors on every call (19-class logits at 1024x2048 are 160 MB), so a
tool that predicts frame after frame pays for zeroed pages each time, a large share of a frame
(BENCHMARKS.md). ``torch.backends.xeon.run_cpu`` preloads an allocator that never gives memory
back; with glibc, two ``mallopt`` calls do the same in the running process (large blocks from the
heap, which is never trimmed).

The command-line tools call :func:`keep_freed_memory` first (:func:`densemnv3.cli.entry.run_main`);
an application of its own calls it once at start. The cost: the process keeps its peak memory
until it exits. ``DENSEMNV3_KEEP_FREED_MEMORY=0`` turns it off; elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["ENV", "keep_freed_memory"]

ENV = "DENSEMNV3_KEEP_FREED_MEMORY"
#: ``mallopt`` parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Blocks below this come from the heap (kept and reused): above any one tensor of a frame.
MMAP_THRESHOLD = 1 << 30
#: Free memory at the heap's top is given back above this: never, in practice.
TRIM_THRESHOLD = 2**31 - 1

_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Make ``malloc`` keep freed memory for reuse (once per process); whether it took effect
    (False off glibc, with ``DENSEMNV3_KEEP_FREED_MEMORY=0`` or where glibc refuses)."""
    global _kept
    if _kept is None:
        _kept = (
            os.environ.get(ENV, "1") != "0"
            and _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and _mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    return _kept


def _mallopt(param: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(param, value) == 1
