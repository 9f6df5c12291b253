"""MobileNetV3 Large/Small backbones.

``features`` matches torchvision's ``mobilenet_v3_*().features`` layer for layer and key for key,
so its checkpoints load as they are (see :func:`densemnv3.models.load_state_dict_checked`). The
blocks are written here from torchvision's public ops (``Conv2dNormActivation``,
``SqueezeExcitation``) rather than imported from its private ``mobilenetv3`` module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from torch import nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

from ..registry import named
from .base import BlockSpec, FeatureBackbone, InvertedResidualBase, make_divisible
from .registry import register_backbone

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


class InvertedResidual(InvertedResidualBase):
    """MobileNetV3 block: 1×1 expand (omitted when ``expanded == in``) → k×k depthwise
    (→ squeeze-excitation) → 1×1 linear projection, with a shortcut when shape allows.

    Layer names (``block.0``, ``block.1``, ...) are torchvision's, so its weights load by key.
    """

    def __init__(
        self,
        in_ch: int,
        kernel: int,
        expanded: int,
        out_ch: int,
        use_se: bool,
        activation: str,
        stride: int,
        norm_layer: Callable[[int], nn.Module],
    ):
        super().__init__()
        act = nn.Hardswish if activation == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != in_ch:
            layers.append(
                Conv2dNormActivation(
                    in_ch, expanded, kernel_size=1, norm_layer=norm_layer, activation_layer=act
                )
            )
        layers.append(
            Conv2dNormActivation(
                expanded,
                expanded,
                kernel_size=kernel,
                stride=stride,
                groups=expanded,
                norm_layer=norm_layer,
                activation_layer=act,
            )
        )
        if use_se:
            squeeze = make_divisible(expanded // 4, 8)
            layers.append(SqueezeExcitation(expanded, squeeze, scale_activation=nn.Hardsigmoid))
        layers.append(
            Conv2dNormActivation(
                expanded, out_ch, kernel_size=1, norm_layer=norm_layer, activation_layer=None
            )
        )
        self.block = nn.Sequential(*layers)
        self.has_expansion = expanded != in_ch
        self.use_res_connect = stride == 1 and in_ch == out_ch

    @property
    def layers(self) -> nn.Sequential:
        return self.block


def _mobilenet_v3(name: str, table: Sequence[tuple], doc: str) -> Callable[..., FeatureBackbone]:
    """The registered builder ``name``: MobileNetV3 with the blocks of ``table``."""

    def builder(
        *,
        width_mult: float = 1.0,
        reduced_tail: bool = False,
        output_stride: int = 32,
        out_features: Sequence[str] = ("C4", "C5"),
        frozen_bn: bool = False,
    ) -> FeatureBackbone:
        blocks = _reduce_tail(table) if reduced_tail else table
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        # channels scale with the width (torchvision's adjust_channels); kernel, SE, activation
        # and stride do not
        rows = [
            (
                make_divisible(i * width_mult),
                k,
                make_divisible(e * width_mult),
                make_divisible(o * width_mult),
                se,
                act,
                s,
            )
            for i, k, e, o, se, act, s in blocks
        ]
        stem_channels = rows[0][0]
        last_channels = 6 * rows[-1][3]
        layers: list[nn.Module] = [
            Conv2dNormActivation(
                3,
                stem_channels,
                kernel_size=3,
                stride=2,
                norm_layer=norm_layer,
                activation_layer=nn.Hardswish,
            )
        ]
        specs = [BlockSpec(stem_channels, downsamples=True)]
        for row in rows:
            in_ch, _, expanded, out_ch, _, _, stride = row
            layers.append(InvertedResidual(*row, norm_layer=norm_layer))
            expand = expanded if expanded != in_ch else None
            specs.append(BlockSpec(out_ch, downsamples=stride == 2, expand_channels=expand))
        layers.append(
            Conv2dNormActivation(
                rows[-1][3],
                last_channels,
                kernel_size=1,
                norm_layer=norm_layer,
                activation_layer=nn.Hardswish,
            )
        )
        specs.append(BlockSpec(last_channels, downsamples=False))
        return FeatureBackbone(
            nn.Sequential(*layers),
            specs,
            split_expand=InvertedResidual.forward_with_expansion,
            output_stride=output_stride,
            out_features=out_features,
            frozen_bn=frozen_bn,
        )

    return register_backbone(name, named(builder, name, doc))


mobilenet_v3_large = _mobilenet_v3(
    "mobilenet_v3_large",
    LARGE,
    "MobileNetV3-Large (C5: 960 channels at width 1.0, 480 with ``reduced_tail``).",
)
mobilenet_v3_small = _mobilenet_v3(
    "mobilenet_v3_small",
    SMALL,
    "MobileNetV3-Small (C5: 576 channels at width 1.0, 288 with ``reduced_tail``).",
)
