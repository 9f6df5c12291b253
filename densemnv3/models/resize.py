"""Bilinear resizing whose backward is deterministic on CUDA.

``F.interpolate(mode="bilinear")`` has no deterministic CUDA backward (its kernel accumulates
gradients with atomics), so under ``torch.use_deterministic_algorithms(True)`` training on a GPU
would stop at the first upsampling. :func:`resize_bilinear` computes the same resize as two
matrix products with the interpolation weights (``rows @ x @ cols.T``), whose backward is plain
matrix products, and uses it only there: on CUDA, with gradients, in deterministic mode.
Elsewhere it is ``F.interpolate``.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bilinear_matrix", "deterministic_cuda", "resize_bilinear", "resize_bilinear_matmul"]


def deterministic_cuda(x: Tensor) -> bool:
    """Whether ``x`` is on CUDA with deterministic algorithms on: where ops whose CUDA kernels
    accumulate with atomics must take another path."""
    return x.is_cuda and torch.are_deterministic_algorithms_enabled()


def resize_bilinear(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)``, with a deterministic
    backward on CUDA when deterministic algorithms are on."""
    size = (_dim(size[0]), _dim(size[1]))
    if not (x.requires_grad and torch.is_grad_enabled() and deterministic_cuda(x)):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return resize_bilinear_matmul(x, size)


def _dim(value) -> int:
    """``value`` as an int, left symbolic while ``torch.export`` traces dynamic sizes."""
    return value if isinstance(value, torch.SymInt) else int(value)


def resize_bilinear_matmul(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The bilinear resize of ``x`` ``(N, C, H, W)`` to ``size`` as ``rows @ x @ cols.T``."""
    rows = bilinear_matrix(x.shape[-2], size[0], x.device, x.dtype)  # autocast casts them as it
    cols = bilinear_matrix(x.shape[-1], size[1], x.device, x.dtype)  # casts x
    return torch.matmul(rows, torch.matmul(x, cols.t()))


@lru_cache(maxsize=32)
def bilinear_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(n_out, n_in)`` weights of 1-D linear interpolation as PyTorch's ``align_corners=False``
    computes them: source ``(i + 0.5) * n_in / n_out - 0.5`` clamped at 0, two neighbours."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    low = src.floor().long().clamp(max=n_in - 1)
    high = (low + 1).clamp(max=n_in - 1)
    frac = src - low
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    index = torch.arange(n_out)
    weights.index_put_((index, low), 1 - frac, accumulate=True)
    weights.index_put_((index, high), frac, accumulate=True)
    return weights.to(device=device, dtype=dtype)
