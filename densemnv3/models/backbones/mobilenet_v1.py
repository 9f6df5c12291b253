"""MobileNetV1: depthwise-separable convolutions with a width multiplier α (Howard et al., 2017).

torchvision has no V1, so there are no checkpoints to match; layer layout follows the paper's
Table 1 (a 3×3 stem, then 13 depthwise 3×3 + pointwise 1×1 pairs, each with BN + ReLU).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.ops import Conv2dNormActivation

from .base import BlockSpec, FeatureBackbone, make_divisible
from .registry import register_backbone

# (out channels, stride) of each depthwise-separable block.
BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


@register_backbone("mobilenet_v1")
def mobilenet_v1(
    *,
    width_mult: float = 1.0,
    output_stride: int = 32,
    out_features: Sequence[str] = ("C4", "C5"),
    frozen_bn: bool = False,
) -> FeatureBackbone:
    """MobileNetV1 with width multiplier ``width_mult`` (α ∈ {1, 0.75, 0.5, 0.25} in the paper)."""
    stem = make_divisible(32 * width_mult)
    layers: list[nn.Module] = [Conv2dNormActivation(3, stem, kernel_size=3, stride=2)]
    specs = [BlockSpec(stem, downsamples=True)]
    in_channels = stem
    for channels, stride in BLOCKS:
        out_channels = make_divisible(channels * width_mult)
        layers.append(
            nn.Sequential(
                Conv2dNormActivation(
                    in_channels, in_channels, kernel_size=3, stride=stride, groups=in_channels
                ),
                Conv2dNormActivation(in_channels, out_channels, kernel_size=1),
            )
        )
        specs.append(BlockSpec(out_channels, downsamples=stride == 2))
        in_channels = out_channels
    return FeatureBackbone(
        nn.Sequential(*layers),
        specs,
        split_expand=None,
        output_stride=output_stride,
        out_features=out_features,
        frozen_bn=frozen_bn,
    )
