"""MobileNetV3 Large/Small backbones, built from torchvision's public blocks.

``features`` matches torchvision's ``mobilenet_v3_*().features`` layer for layer, so its
checkpoints load by key (see :func:`densemnv3.models.load_torchvision_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import Tensor, nn
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
from torchvision.ops import Conv2dNormActivation

from .base import BlockSpec, FeatureBackbone

# (in, kernel, expanded, out, SE, activation, stride) per block: Tables 1 and 2 of the paper.
LARGE = (
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
)
SMALL = (
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
)


def _reduce_tail(table: Sequence[tuple]) -> list[tuple]:
    """Halve the output of the block opening stride 32, and the input, expansion and output of the
    blocks after it (as torchvision's ``reduced_tail``)."""
    rows = [list(row) for row in table]
    opener = max(i for i, row in enumerate(rows) if row[6] == 2)
    rows[opener][3] //= 2
    for row in rows[opener + 1 :]:
        row[0] //= 2
        row[2] //= 2
        row[3] //= 2
    return [tuple(row) for row in rows]


def _split_expand(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    expanded = block.block[0](x)
    out = block.block[1:](expanded)
    if block.use_res_connect:
        out = out + x
    return expanded, out


def _build(
    table: Sequence[tuple],
    *,
    width_mult: float,
    reduced_tail: bool,
    output_stride: int,
    out_features: Sequence[str],
    frozen_bn: bool,
) -> FeatureBackbone:
    if reduced_tail:
        table = _reduce_tail(table)
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
    configs = [InvertedResidualConfig(*row, dilation=1, width_mult=width_mult) for row in table]
    stem_channels = configs[0].input_channels
    last_channels = 6 * configs[-1].out_channels
    layers: list[nn.Module] = [
        Conv2dNormActivation(
            3, stem_channels, kernel_size=3, stride=2, norm_layer=norm_layer,
            activation_layer=nn.Hardswish,
        )
    ]
    specs = [BlockSpec(stem_channels, downsamples=True)]
    for cnf in configs:
        layers.append(InvertedResidual(cnf, norm_layer))
        expand = cnf.expanded_channels if cnf.expanded_channels != cnf.input_channels else None
        specs.append(BlockSpec(cnf.out_channels, downsamples=cnf.stride == 2, expand_channels=expand))
    layers.append(
        Conv2dNormActivation(
            configs[-1].out_channels, last_channels, kernel_size=1, norm_layer=norm_layer,
            activation_layer=nn.Hardswish,
        )
    )
    specs.append(BlockSpec(last_channels, downsamples=False))
    return FeatureBackbone(
        nn.Sequential(*layers),
        specs,
        split_expand=_split_expand,
        output_stride=output_stride,
        out_features=out_features,
        frozen_bn=frozen_bn,
    )


def mobilenet_v3_large(
    *,
    width_mult: float = 1.0,
    reduced_tail: bool = False,
    output_stride: int = 32,
    out_features: Sequence[str] = ("C4", "C5"),
    frozen_bn: bool = False,
) -> FeatureBackbone:
    """MobileNetV3-Large (C5: 960 channels at width 1.0, 480 with ``reduced_tail``)."""
    return _build(
        LARGE, width_mult=width_mult, reduced_tail=reduced_tail, output_stride=output_stride,
        out_features=out_features, frozen_bn=frozen_bn,
    )


def mobilenet_v3_small(
    *,
    width_mult: float = 1.0,
    reduced_tail: bool = False,
    output_stride: int = 32,
    out_features: Sequence[str] = ("C4", "C5"),
    frozen_bn: bool = False,
) -> FeatureBackbone:
    """MobileNetV3-Small (C5: 576 channels at width 1.0, 288 with ``reduced_tail``)."""
    return _build(
        SMALL, width_mult=width_mult, reduced_tail=reduced_tail, output_stride=output_stride,
        out_features=out_features, frozen_bn=frozen_bn,
    )
