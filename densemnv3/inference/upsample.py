"""Label maps at a larger size than the scores, without upsampling the scores.

The label map is ``argmax(bilinear_upsample(logits))``; upsampling first writes ``C`` float planes
at the full size only for the argmax to throw most of them away. :func:`upsampled_labels` gives the
same labels from the small scores: every output pixel lies in a *cell* of four source pixels, and
its scores are a convex combination of theirs. Where the four share their best class, every pixel
of the cell takes it without arithmetic. On a class boundary, a class can win only if its largest
corner score reaches the largest of the classes' smallest corner scores; the cell's pixels are
interpolated over those few candidates, in ``F.interpolate``'s order, and compared in class order.

Ties aside, the labels are ``argmax``'s of ``F.interpolate(logits, size, mode="bilinear",
align_corners=False)``. Where more than :data:`FULL_ABOVE` of the cells are on a boundary,
upsampling every score and taking :func:`~densemnv3.inference.argmax.label_map` costs less, and
that runs instead.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .argmax import label_map

__all__ = ["FULL_ABOVE", "agreeing_cells", "upsampled_labels"]

#: The share of cells on a class boundary above which the full upsample costs less (BENCHMARKS.md,
#: label maps on CPU).
FULL_ABOVE = 0.5
#: A class is a candidate in a cell when its largest corner score is at least the bound less this
#: share of it (at least 1): room for the rounding of the interpolation, so no winner is left out.
SLACK = 1e-5
#: Cells are interpolated in groups of at most this many candidate classes (fewer classes, less
#: work).
GROUPS = (2, 3, 4, 6, 8, 12, 16, 256)


def _source(out: int, src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``out`` output positions: the two source indices and the weight of the second,
    as ``F.interpolate(..., align_corners=False)`` computes them (float32, clamped at 0)."""
    scale = np.float32(src / out)
    pos = np.maximum(
        (np.arange(out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0
    )
    first = np.minimum(pos.astype(np.int64), src - 1)
    second = np.minimum(first + 1, src - 1)
    return first, second, (pos - first).astype(np.float32)


@lru_cache(maxsize=32)
def _runs(out: int, src: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``out`` positions in runs of one source index (:func:`_source`'s first), at most
    ``ceil(out / src)`` long: the source index of each run ``(R,)`` and its positions ``(R, L)``,
    a short run padded with its last position (computed twice, written twice: the same label)."""
    first = _source(out, src)[0]
    limit = -(-out // src)
    starts = np.flatnonzero(np.r_[True, first[1:] != first[:-1]])
    ends = np.r_[starts[1:], out]
    runs = np.array(
        [(s, min(s + limit, e)) for s0, e in zip(starts, ends) for s in range(s0, e, limit)]
    )
    positions = np.minimum(runs[:, :1] + np.arange(limit), runs[:, 1:] - 1)
    return first[runs[:, 0]], positions


def upsampled_labels(
    logits: Tensor, size: tuple[int, int], *, threads: int | None = None
) -> np.ndarray:
    """``F.interpolate(logits, size, mode="bilinear", align_corners=False).argmax(1)`` as ``uint8``
    NumPy labels ``(N, *size)``, for ``(N, C, h, w)`` scores (C <= 256) no larger than ``size``.

    CPU float32 scores take the shortcut of the module docstring; others (CUDA, half precision,
    a smaller ``size``) upsample and take :func:`label_map`.
    """
    height, width = size
    n, classes, h, w = logits.shape
    if (
        logits.device.type != "cpu"
        or logits.dtype != torch.float32
        or height < h
        or width < w
        or classes > 256
    ):
        up = F.interpolate(
            logits.contiguous(memory_format=torch.channels_last),
            size=size,
            mode="bilinear",
            align_corners=False,
        )
        return label_map(up.contiguous(), threads=threads)
    low = label_map(logits.detach().contiguous(), threads=threads)  # (N, h, w) at the scores' size
    agreeing = [agreeing_cells(labels) for labels in low]
    if 1 - np.mean(agreeing) > FULL_ABOVE:
        up = F.interpolate(
            logits.detach().contiguous(), size=size, mode="bilinear", align_corners=False
        )
        return label_map(up, threads=threads)  # NCHW: label_map's blocks are planes of a class
    y0, _, wy = _source(height, h)
    x0, _, wx = _source(width, w)
    run_y, rows_of = _runs(height, h)
    run_x, cols_of = _runs(width, w)
    out = np.empty((n, height, width), np.uint8)
    for i, agree in enumerate(agreeing):
        out[i] = (
            low[i].take(y0, 0).take(x0, 1)
        )  # every output pixel: its top-left source pixel's label
        ty, tx = np.nonzero(
            ~agree[run_y][:, run_x]
        )  # the cells (runs of rows x runs of columns) to compute
        if len(ty) == 0:
            continue
        rows, cols = rows_of[ty], cols_of[tx]
        top, left = run_y[ty], run_x[tx]
        bottom, right = np.minimum(top + 1, h - 1), np.minimum(left + 1, w - 1)
        scores = logits[i].detach().permute(1, 2, 0).contiguous().numpy().reshape(h * w, classes)
        # (cells, 4, C): the corners in F.interpolate's order: top-left, top-right, bottom-left,
        # bottom-right
        corners = np.stack(
            [
                scores[top * w + left],
                scores[top * w + right],
                scores[bottom * w + left],
                scores[bottom * w + right],
            ],
            axis=1,
        )
        bound = corners.min(1).max(1, keepdims=True)
        candidate = corners.max(1) >= bound - SLACK * np.maximum(np.abs(bound), 1)
        count = candidate.sum(1)
        order = np.argsort(~candidate, axis=1, kind="stable")  # candidates first, in class order
        fewer = 0
        for most in GROUPS:
            cells = np.flatnonzero((count > fewer) & (count <= most))
            fewer = most
            if len(cells):
                ys, xs = rows[cells], cols[cells]
                labels = _cell_labels(
                    corners[cells], order[cells, : min(most, classes)], wy[ys], wx[xs]
                )
                out[i][ys[:, :, None], xs[:, None, :]] = labels
    return out


def _cell_labels(
    corners: np.ndarray, classes: np.ndarray, wy: np.ndarray, wx: np.ndarray
) -> np.ndarray:
    """The labels ``(M, Ly, Lx)`` of M cells from their ``corners`` ``(M, 4, C)``, over their
    candidate ``classes`` ``(M, K)`` (in class order), at the row and column weights ``wy``
    ``(M, Ly)`` and ``wx`` ``(M, Lx)``."""
    k = classes.shape[1]
    scores = np.take_along_axis(corners, classes[:, None, :], axis=2)[..., None]  # (M, 4, K, 1)
    b, a = wx[:, None, :], wy[:, None, :, None]
    # F.interpolate's order: (1 - a) * ((1 - b) * v00 + b * v01) + a * ((1 - b) * v10 + b * v11)
    upper = (1 - b) * scores[:, 0] + b * scores[:, 1]  # (M, K, Lx)
    lower = (1 - b) * scores[:, 2] + b * scores[:, 3]
    values = (1 - a) * upper[:, :, None] + a * lower[:, :, None]  # (M, K, Ly, Lx)
    best, which = values[:, 0].copy(), np.zeros(values[:, 0].shape, np.uint8)
    better = np.empty(best.shape, bool)
    for j in range(1, k):
        np.greater(values[:, j], best, out=better)  # strictly: ties keep the first class, as argmax
        which[better] = j
        np.maximum(best, values[:, j], out=best)
    picked = np.take_along_axis(classes, which.reshape(len(classes), -1).astype(np.intp), axis=1)
    return picked.reshape(which.shape).astype(np.uint8)


def agreeing_cells(labels: np.ndarray) -> np.ndarray:
    """Whether each cell's label is also its right, lower and lower-right neighbours' (the edge
    repeated past the last row and column)."""
    edge = np.pad(labels, ((0, 1), (0, 1)), mode="edge")
    corner = edge[:-1, :-1]
    return (corner == edge[1:, :-1]) & (corner == edge[:-1, 1:]) & (corner == edge[1:, 1:])
