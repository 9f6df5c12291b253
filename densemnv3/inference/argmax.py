"""Label maps from NCHW class scores at the speed of memory, on the CPU.

``logits.argmax(1)`` over a contiguous ``(N, C, H, W)`` tensor reduces along a strided axis, which
on a CPU can cost more than the int8 network that produced the scores. :func:`label_map` computes
the same labels (the first index of the maximum, as ``argmax``) by a running maximum over the class
planes, in blocks of rows small enough that the running maximum stays in cache, on torch's thread
count (BENCHMARKS.md, label maps on CPU).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

__all__ = ["label_map"]

#: Rows per block: 64 rows of 1280 float32 columns keep the running maximum (320 kB) in L2.
BLOCK_ROWS = 64
_pool: ThreadPoolExecutor | None = None
_pool_threads = 0


def label_map(logits: Tensor, *, threads: int | None = None) -> np.ndarray:
    """``logits.argmax(1)`` as ``uint8`` NumPy labels, for ``(N, C, H, W)`` scores (C <= 256).

    Contiguous CPU float scores take the blocked running maximum (NumPy's ufuncs release the GIL, so
    the blocks run on ``threads`` threads, torch's count by default); any other tensor (CUDA,
    channels-last, half precision) its own ``argmax``, which is fast there.
    """
    if logits.dim() != 4 or logits.shape[1] > 256:
        raise ValueError(f"expected (N, C<=256, H, W) scores, got shape {tuple(logits.shape)}")
    if logits.device.type != "cpu" or logits.dtype != torch.float32 or not logits.is_contiguous():
        return logits.argmax(1).to(torch.uint8).cpu().numpy()
    scores = logits.detach().numpy()
    n, _, h, _ = scores.shape
    labels = np.zeros((n, h, scores.shape[3]), np.uint8)
    blocks = [(i, r, min(r + BLOCK_ROWS, h)) for i in range(n) for r in range(0, h, BLOCK_ROWS)]
    threads = max(1, min(threads or torch.get_num_threads(), len(blocks)))
    if threads == 1:
        for block in blocks:
            _block(scores, labels, *block)
    else:
        list(_threads(threads).map(lambda block: _block(scores, labels, *block), blocks))
    return labels


def _block(scores: np.ndarray, labels: np.ndarray, i: int, r0: int, r1: int) -> None:
    best = scores[i, 0, r0:r1].copy()
    out = labels[i, r0:r1]
    better = np.empty(best.shape, bool)
    for k in range(1, scores.shape[1]):
        plane = scores[i, k, r0:r1]
        np.greater(plane, best, out=better)  # strictly: ties keep the first class, as argmax
        out[better] = k
        np.maximum(best, plane, out=best)


def _threads(count: int) -> ThreadPoolExecutor:
    global _pool, _pool_threads
    if _pool is None or _pool_threads != count:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _pool_threads = (
            ThreadPoolExecutor(count, thread_name_prefix="densemnv3-argmax"),
            count,
        )
    return _pool
