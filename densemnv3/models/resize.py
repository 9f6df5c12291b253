"""Bilinear resizing as ``F.interpolate`` computes it, taking the faster or the deterministic
path where ``F.interpolate``'s backward is slow or nondeterministic.

With gradients, :func:`resize_bilinear` computes the resize as two matrix products with the
interpolation weights (``rows @ x @ cols.T``, whose backward is two more) on CUDA under
``torch.use_deterministic_algorithms(True)``, where ``F.interpolate``'s atomic backward refuses to
run, and on CPU for inputs up to :data:`CPU_MATMUL_MAX_CELLS`, where the products cost less than
``upsample_bilinear2d``'s backward (BENCHMARKS.md, training step). Without gradients (evaluation,
export) it is always ``F.interpolate``.
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


#: Input cells (H x W) up to which the matrix products beat ``upsample_bilinear2d``'s backward on
#: CPU (logits at stride 8 of a 256x512 crop); at larger inputs the dense products do more work than
#: the kernel.
CPU_MATMUL_MAX_CELLS = 32 * 64


def resize_bilinear(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)``; with gradients, as
    matrix products on CUDA in deterministic mode and on CPU for small inputs (module doc)."""
    size = (_dim(size[0]), _dim(size[1]))
    if (
        x.requires_grad
        and torch.is_grad_enabled()
        and (
            deterministic_cuda(x)
            or (x.device.type == "cpu" and x.shape[-2] * x.shape[-1] <= CPU_MATMUL_MAX_CELLS)
        )
    ):
        return resize_bilinear_matmul(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


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
