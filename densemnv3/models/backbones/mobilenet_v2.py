"""MobileNetV2 backbone: torchvision's ``MobileNetV2(...).features`` with feature taps."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models import MobileNetV2

from .base import BlockSpec, FeatureBackbone


def _split_expand(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    expanded = block.conv[0](x)
    out = block.conv[1:](expanded)
    if block.use_res_connect:
        out = out + x
    return expanded, out


def _spec(layer: nn.Module) -> BlockSpec:
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    downsamples = any(conv.stride[0] == 2 for conv in convs)
    expand = None
    if hasattr(layer, "use_res_connect") and len(convs) == 3:  # 1x1 expand, 3x3 dw, 1x1 project
        expand = convs[0].out_channels
    return BlockSpec(convs[-1].out_channels, downsamples=downsamples, expand_channels=expand)


def mobilenet_v2(
    *,
    width_mult: float = 1.0,
    output_stride: int = 32,
    out_features: Sequence[str] = ("C4", "C5"),
    frozen_bn: bool = False,
) -> FeatureBackbone:
    """MobileNetV2 (C5: the 1×1 conv to 1280 channels, or more for ``width_mult`` > 1)."""
    features = MobileNetV2(width_mult=width_mult).features
    return FeatureBackbone(
        features,
        [_spec(layer) for layer in features],
        split_expand=_split_expand,
        output_stride=output_stride,
        out_features=out_features,
        frozen_bn=frozen_bn,
    )
