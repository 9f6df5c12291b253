"""MobileNetV2 backbone: torchvision's ``MobileNetV2(...).features`` with feature taps.

Its blocks are ours (passed through ``MobileNetV2``'s public ``block`` argument), with the same
layer names as torchvision's, so that the expansion output is read through a method of our own
rather than by indexing into torchvision's private block layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn
from torchvision.models import MobileNetV2
from torchvision.ops import Conv2dNormActivation

from .base import BlockSpec, FeatureBackbone, InvertedResidualBase
from .registry import register_backbone


class InvertedResidual(InvertedResidualBase):
    """MobileNetV2 block: 1×1 expand (ReLU6; omitted when ``expand_ratio == 1``) → 3×3 depthwise
    (ReLU6) → 1×1 linear projection, with a shortcut when stride is 1 and the shape is kept."""

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        hidden = int(round(inp * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(
                Conv2dNormActivation(
                    inp, hidden, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6
                )
            )
        layers += [
            Conv2dNormActivation(
                hidden,
                hidden,
                stride=stride,
                groups=hidden,
                norm_layer=norm_layer,
                activation_layer=nn.ReLU6,
            ),
            nn.Conv2d(hidden, oup, 1, bias=False),
            norm_layer(oup),
        ]
        self.conv = nn.Sequential(*layers)  # torchvision's name: its checkpoints load by key
        self.has_expansion = expand_ratio != 1
        self.use_res_connect = stride == 1 and inp == oup

    @property
    def layers(self) -> nn.Sequential:
        return self.conv


def _spec(layer: nn.Module) -> BlockSpec:
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    downsamples = any(conv.stride[0] == 2 for conv in convs)
    expand = None
    if isinstance(layer, InvertedResidual) and layer.has_expansion:
        expand = convs[0].out_channels
    return BlockSpec(convs[-1].out_channels, downsamples=downsamples, expand_channels=expand)


@register_backbone("mobilenet_v2")
def mobilenet_v2(
    *,
    width_mult: float = 1.0,
    output_stride: int = 32,
    out_features: Sequence[str] = ("C4", "C5"),
    frozen_bn: bool = False,
) -> FeatureBackbone:
    """MobileNetV2 (C5: the 1×1 conv to 1280 channels, or more for ``width_mult`` > 1)."""
    features = MobileNetV2(width_mult=width_mult, block=InvertedResidual).features
    return FeatureBackbone(
        features,
        [_spec(layer) for layer in features],
        split_expand=InvertedResidual.forward_with_expansion,
        output_stride=output_stride,
        out_features=out_features,
        frozen_bn=frozen_bn,
    )
