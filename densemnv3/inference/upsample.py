"""Label maps at a larger size than the scores, without upsampling the scores.

Segmentation networks score classes at a fraction of the image size (LR-ASPP: stride 8) and the
label map is ``argmax(bilinear_upsample(logits))``. Upsampling first writes ``C`` float planes at
the full size (19x720x1280: 70 MB) only for most of them to be thrown away by the argmax.

:func:`upsampled_labels` gives the same labels from the small scores. A bilinear value is a convex
combination of the four source pixels around it; where those four share their best class ``k``,
``k`` is the best class of every combination of them (each of the four has score ``k`` >= score
``j``; so has any sum of them with non-negative weights). So an output pixel whose four source
pixels agree takes their label, and only the pixels on class boundaries (a few percent of an
image) are interpolated over the classes and compared. Ties aside (where ``argmax`` takes the
first class and rounding can order two equal scores either way), the labels are ``argmax``'s of
``F.interpolate(logits, size, mode="bilinear", align_corners=False)``.

Where boundaries are dense (more than :data:`FULL_ABOVE` of the score cells), upsampling every
score and taking :func:`~densemnv3.inference.argmax.label_map` over them costs less, and it runs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .argmax import label_map

__all__ = ["FULL_ABOVE", "upsampled_labels"]

#: The share of score cells on a class boundary above which the full upsample costs less: 720p
#: labels from 90x160 scores, 2 threads, freed memory kept (BENCHMARKS.md): 0.31 of the cells,
#: 41 ms the boundaries against 26 ms the full upsample; 0.16, 27 against 25; 0.10, 19 against 25.
FULL_ABOVE = 0.15


def _source(out: int, src: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``out`` output positions: the two source indices and the weight of the second,
    as ``F.interpolate(..., align_corners=False)`` computes them (float32, clamped at 0)."""
    scale = np.float32(src / out)
    pos = np.maximum((np.arange(out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    first = np.minimum(pos.astype(np.int64), src - 1)
    second = np.minimum(first + 1, src - 1)
    return first, second, (pos - first).astype(np.float32)


def upsampled_labels(logits: Tensor, size: tuple[int, int], *, threads: int | None = None) -> np.ndarray:
    """``F.interpolate(logits, size, mode="bilinear", align_corners=False).argmax(1)`` as ``uint8``
    NumPy labels ``(N, *size)``, for ``(N, C, h, w)`` scores (C <= 256) no larger than ``size``.

    CPU float32 scores take the shortcut of the module docstring; others (CUDA, half precision,
    a smaller ``size``) upsample and take :func:`label_map`.
    """
    height, width = size
    n, classes, h, w = logits.shape
    if (logits.device.type != "cpu" or logits.dtype != torch.float32 or height < h or width < w
            or classes > 256):
        up = F.interpolate(logits.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear",
                           align_corners=False)
        return label_map(up.contiguous(), threads=threads)
    low = label_map(logits.detach().contiguous(), threads=threads)  # (N, h, w) at the scores' size
    agreeing = [_agree(labels) for labels in low]
    if 1 - np.mean(agreeing) > FULL_ABOVE:
        up = F.interpolate(logits.detach().contiguous(), size=size, mode="bilinear", align_corners=False)
        return label_map(up, threads=threads)  # NCHW: label_map's blocks are planes of a class
    y0, y1, wy = _source(height, h)
    x0, x1, wx = _source(width, w)
    out = np.empty((n, height, width), np.uint8)
    for i, agree in enumerate(agreeing):
        out[i] = low[i].take(y0, 0).take(x0, 1)  # every output pixel: its top-left source pixel's label
        ys, xs = np.nonzero(~agree.take(y0, 0).take(x0, 1))  # those whose four source pixels disagree
        if len(ys) == 0:
            continue
        a = wy[ys, None]
        # F.interpolate's order: (1 - a) * ((1 - b) * v00 + b * v01) + a * ((1 - b) * v10 + b * v11)
        if h * width < 2 * len(ys):  # many: interpolate every source row along x once, then gather
            rows = F.interpolate(logits[i:i + 1].detach(), size=(h, width), mode="bilinear", align_corners=False)
            rows = rows[0].permute(1, 2, 0).contiguous().numpy().reshape(h * width, classes)
            upper = np.take(rows, y0[ys] * width + xs, axis=0)
            lower = np.take(rows, y1[ys] * width + xs, axis=0)
        else:  # few: four source pixels each
            scores = logits[i].detach().permute(1, 2, 0).contiguous().numpy().reshape(h * w, classes)
            top, bottom, left, right, b = y0[ys] * w, y1[ys] * w, x0[xs], x1[xs], wx[xs, None]
            upper = _lerp(np.take(scores, top + left, axis=0), np.take(scores, top + right, axis=0), b)
            lower = _lerp(np.take(scores, bottom + left, axis=0), np.take(scores, bottom + right, axis=0), b)
        out[i, ys, xs] = _lerp(upper, lower, a).argmax(1)
    return out


def _agree(labels: np.ndarray) -> np.ndarray:
    """Whether each cell's label is also its right, lower and lower-right neighbours' (the edge
    repeated past the last row and column)."""
    edge = np.pad(labels, ((0, 1), (0, 1)), mode="edge")
    corner = edge[:-1, :-1]
    return (corner == edge[1:, :-1]) & (corner == edge[:-1, 1:]) & (corner == edge[1:, 1:])


def _lerp(first: np.ndarray, second: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``(1 - weight) * first + weight * second``, in ``first``'s memory (``second`` is spent)."""
    first *= 1 - weight
    second *= weight
    first += second
    return first
