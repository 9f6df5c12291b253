"""SSDLite layers: the four extra downsampling blocks and the class/box prediction head.

Built as torchvision's ``ssdlite`` (MobileNetV2 paper, section 6.2): depthwise-separable blocks
with BatchNorm (eps 0.001, momentum 0.03) and ReLU6, convolutions initialised normal(0, 0.03).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

#: torchvision's SSDLite BatchNorm (its ``norm_layer`` for the whole detector, backbone included).
SSDLITE_BN = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)

#: Output channels of the four extra blocks at width 1.0.
EXTRA_CHANNELS = (512, 256, 256, 128)

NormLayer = Callable[[int], nn.Module]


def normal_init_(module: nn.Module, std: float = 0.03) -> nn.Module:
    """Every conv below ``module``: weight ~ N(0, ``std``), bias 0 (torchvision's SSDLite init)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, mean=0.0, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def extra_channels(width_mult: float = 1.0, min_depth: int = 16) -> list[int]:
    """Channels of the extra blocks: ``max(min_depth, int(c * width_mult))`` as torchvision."""
    return [max(min_depth, int(c * width_mult)) for c in EXTRA_CHANNELS]


def extra_block(
    in_channels: int, out_channels: int, norm_layer: NormLayer = SSDLITE_BN
) -> nn.Sequential:
    """1×1 conv to ``out/2`` → 3×3 depthwise stride 2 → 1×1 conv to ``out``, each BN + ReLU6."""
    mid = out_channels // 2
    act = nn.ReLU6
    return nn.Sequential(
        Conv2dNormActivation(
            in_channels, mid, kernel_size=1, norm_layer=norm_layer, activation_layer=act
        ),
        Conv2dNormActivation(
            mid,
            mid,
            kernel_size=3,
            stride=2,
            groups=mid,
            norm_layer=norm_layer,
            activation_layer=act,
        ),
        Conv2dNormActivation(
            mid, out_channels, kernel_size=1, norm_layer=norm_layer, activation_layer=act
        ),
    )


def build_extra(
    in_channels: int, width_mult: float = 1.0, norm_layer: NormLayer = SSDLITE_BN
) -> nn.ModuleList:
    """The four extra blocks after the backbone (strides 64 … 512), normal-initialised."""
    channels = [in_channels, *extra_channels(width_mult)]
    blocks = nn.ModuleList(
        extra_block(c_in, c_out, norm_layer) for c_in, c_out in zip(channels, channels[1:])
    )
    return normal_init_(blocks)


def prediction_block(
    in_channels: int, out_channels: int, norm_layer: NormLayer = SSDLITE_BN
) -> nn.Sequential:
    """3×3 depthwise conv + BN + ReLU6, then a 1×1 conv (with bias) to ``out_channels``."""
    return nn.Sequential(
        Conv2dNormActivation(
            in_channels,
            in_channels,
            kernel_size=3,
            groups=in_channels,
            norm_layer=norm_layer,
            activation_layer=nn.ReLU6,
        ),
        nn.Conv2d(in_channels, out_channels, 1),
    )


class SSDLiteHead(nn.Module):
    """Class logits and box deltas for every default box of every feature map.

    ``forward(features)`` returns ``(cls_logits (N, A, num_classes), bbox_regression (N, A, 4))``
    with boxes ordered map, row, column, box — the order of :class:`DefaultBoxes`.
    ``classification[i]`` / ``regression[i]`` are torchvision's
    ``head.{classification,regression}_head.module_list[i]``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_anchors: Sequence[int],
        num_classes: int,
        norm_layer: NormLayer = SSDLITE_BN,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(num_anchors):
            raise ValueError("one anchor count per feature map is required")
        self.num_classes = num_classes
        self.num_anchors = list(num_anchors)
        self.classification = normal_init_(
            nn.ModuleList(
                prediction_block(c, a * num_classes, norm_layer)
                for c, a in zip(in_channels, num_anchors)
            )
        )
        self.regression = normal_init_(
            nn.ModuleList(
                prediction_block(c, a * 4, norm_layer) for c, a in zip(in_channels, num_anchors)
            )
        )

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        cls = [block(x) for block, x in zip(self.classification, features)]
        reg = [block(x) for block, x in zip(self.regression, features)]
        return _flatten_maps(cls, self.num_classes), _flatten_maps(reg, 4)


def _flatten_maps(outputs: list[Tensor], columns: int) -> Tensor:
    """``[(N, a*columns, H, W)]`` → ``(N, sum(H*W*a), columns)`` with one copy per map.

    Channel ``j*columns + c`` at ``(y, x)`` goes to row ``(y*W + x)*a + j``, column ``c`` — the same
    as torchvision's view/permute/reshape, but written straight into the output (no temporary per
    map; with channels_last outputs the copy is contiguous).
    """
    batch = outputs[0].shape[0]
    if (
        torch.compiler.is_exporting()
    ):  # symbolic sizes: a concatenation exports in a fraction of the time
        return torch.cat([o.permute(0, 2, 3, 1).reshape(batch, -1, columns) for o in outputs], 1)
    rows = [o.shape[1] // columns * o.shape[2] * o.shape[3] for o in outputs]
    out = outputs[0].new_empty(batch, sum(rows), columns)
    start = 0
    for o, n in zip(outputs, rows):
        _, c, h, w = o.shape
        out[:, start : start + n].view(batch, h, w, c).copy_(o.permute(0, 2, 3, 1))
        start += n
    return out


__all__ = [
    "EXTRA_CHANNELS",
    "SSDLITE_BN",
    "SSDLiteHead",
    "build_extra",
    "extra_block",
    "extra_channels",
    "normal_init_",
    "prediction_block",
]
