"""LR-ASPP: the Lite Reduced Atrous Spatial Pyramid Pooling decoder of MobileNetV3.

The high-level feature (stride 16 on a dilated backbone) goes through a 1×1 conv + BN + ReLU and is
multiplied by a channel gate (average pool → 1×1 conv → sigmoid). The gated feature is classified,
upsampled to the low-level feature (stride 8) and added to a classifier of the low feature; the
result is logits at the low feature's resolution.

Two gates:
- ``pool="global"`` (torchvision): global average pooling; one gate per channel.
- ``pool="paper"`` (the paper, mmseg, fastseg): a 49×49 average pool with stride (16, 20) — tuned
  for 1024×2048 input (a 64×128 stride-16 map gives a 1×4 gate grid) — whose gate is bilinearly
  upsampled to the high feature's size. See :func:`clamped_avg_pool2d` for small maps.

Submodule names match torchvision's ``LRASPPHead`` (``cbr``, ``scale``, ``low_classifier``,
``high_classifier``) in both modes, so its checkpoints load by key.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densemnv3.errors import ConfigError

from ..resize import resize_bilinear

PoolMode = Literal["global", "paper"]


def clamped_avg_pool2d(
    x: Tensor, kernel_size: tuple[int, int] = (49, 49), stride: tuple[int, int] = (16, 20)
) -> Tensor:
    """Average pool without padding ("VALID"), with each kernel side clamped to the map size.

    A side of the map smaller than the kernel is averaged whole (one output along it) instead of
    raising, so training crops smaller than the 1024×2048 the kernel was tuned for still work. As
    with any VALID pool, rows/columns past the last window are not pooled.
    """
    kernel = (min(kernel_size[0], x.shape[-2]), min(kernel_size[1], x.shape[-1]))
    return F.avg_pool2d(x, kernel, stride)


class ClampedAvgPool2d(nn.Module):
    """Module form of :func:`clamped_avg_pool2d` (the paper's gate pool)."""

    def __init__(self, kernel_size: tuple[int, int] = (49, 49), stride: tuple[int, int] = (16, 20)):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)

    def forward(self, x: Tensor) -> Tensor:
        return clamped_avg_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, clamped to the input size"


class LRASPPHead(nn.Module):
    """LR-ASPP decoder: ``forward(low, high)`` → logits at the low feature's resolution.

    Args:
        low_channels: channels of the stride-8 feature.
        high_channels: channels of the high-level (last) feature.
        num_classes: output channels.
        inter_channels: width of the high branch (128 in the paper and torchvision).
        pool: ``"global"`` (torchvision) or ``"paper"`` (49×49 pool, stride (16, 20)).
        paper_pool_kernel, paper_pool_stride: the ``"paper"`` pool's window and stride.
    """

    def __init__(
        self,
        low_channels: int,
        high_channels: int,
        num_classes: int,
        inter_channels: int = 128,
        pool: PoolMode = "global",
        paper_pool_kernel: tuple[int, int] = (49, 49),
        paper_pool_stride: tuple[int, int] = (16, 20),
    ) -> None:
        super().__init__()
        if pool == "global":
            pool_layer: nn.Module = nn.AdaptiveAvgPool2d(1)
        elif pool == "paper":
            pool_layer = ClampedAvgPool2d(paper_pool_kernel, paper_pool_stride)
        else:
            raise ConfigError(f"LR-ASPP pool must be 'global' or 'paper', got {pool!r}")
        self.pool = pool
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(inplace=True),
        )
        self.scale = nn.Sequential(
            pool_layer,
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def gate(self, high: Tensor) -> Tensor:
        """The sigmoid gate, shaped to broadcast over ``cbr(high)``."""
        gate = self.scale(high)
        if self.pool == "global":
            return gate  # (N, C, 1, 1)
        if torch.compiler.is_exporting() or (
            gate.shape[-2] * gate.shape[-1] != 1 and gate.shape[-2:] != high.shape[-2:]
        ):
            # exported, the sizes are symbolic: always resize (a 1x1 gate resizes to a constant,
            # the same as broadcasting it)
            gate = resize_bilinear(gate, high.shape[-2:])
        return gate

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        x = self.cbr(high) * self.gate(high)
        # A 1×1 conv commutes with bilinear resizing (whose weights sum to 1), so classify first
        # and resize num_classes channels instead of inter_channels: same logits, less work.
        x = self.high_classifier(x)
        if torch.compiler.is_exporting() or x.shape[-2:] != low.shape[-2:]:
            x = resize_bilinear(x, low.shape[-2:])  # exported: sizes are symbolic, always resize
        return self.low_classifier(low) + x
