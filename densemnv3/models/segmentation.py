"""LR-ASPP semantic segmentation: a feature backbone + :class:`LRASPPHead` → logits at input size.

Channels and taps come from the backbone's ``feature_info``: the low feature is the block that
opens the stride-8 stage (``backbone.first_block_at_stride(8)``, torchvision's choice), the high
feature is ``C5``. Any registered backbone works: ``lraspp("mobilenet_v2")``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from torch import Tensor, nn

from .backbones import create_backbone
from .heads.lraspp import LRASPPHead, PoolMode
from .registry import register_model
from .resize import resize_bilinear
from .weights import LoadResult, load_state_dict_checked

Checkpoint = Mapping[str, Tensor] | str | os.PathLike

_TORCHVISION_BACKBONE_KEY = re.compile(r"^backbone\.(\d+)\.")


class LRASPP(nn.Module):
    """Backbone + LR-ASPP head; ``forward(x)`` returns logits ``(N, num_classes, H, W)``.

    Args:
        backbone: returns a dict holding ``low_tap`` and ``high_tap`` (a ``FeatureBackbone``).
        head: an :class:`LRASPPHead` sized for those taps.
        low_tap, high_tap: the backbone taps fed to the head as ``low`` and ``high``.
    """

    #: Every key of torchvision's ``lraspp_mobilenet_v3_*`` checkpoint is used.
    torchvision_ignored_prefixes: tuple[str, ...] = ()

    def __init__(
        self, backbone: nn.Module, head: LRASPPHead, *, low_tap: str, high_tap: str = "C5"
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.low_tap = low_tap
        self.high_tap = high_tap

    @property
    def num_classes(self) -> int:
        return self.head.low_classifier.out_channels

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)
        logits = self.head(features[self.low_tap], features[self.high_tap])
        return resize_bilinear(logits, x.shape[-2:])

    def convert_torchvision_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Rename torchvision's LR-ASPP keys: ``backbone.<i>.`` → ``backbone.features.<i>.``,
        ``classifier.`` → ``head.``. Keys already in this model's naming pass unchanged."""
        converted = {}
        for key, value in state.items():
            if _TORCHVISION_BACKBONE_KEY.match(key):
                key = _TORCHVISION_BACKBONE_KEY.sub(r"backbone.features.\1.", key)
            elif key.startswith("classifier."):
                key = "head." + key.removeprefix("classifier.")
            converted[key] = value
        return converted

    def load_backbone_weights(self, checkpoint: Checkpoint) -> LoadResult:
        """Load a torchvision ImageNet classification checkpoint (e.g. ``mobilenet_v3_large``'s
        state dict, or a path to one) into the backbone; its classifier is ignored."""
        return load_state_dict_checked(self.backbone, checkpoint)


def lraspp(
    backbone: str,
    *,
    num_classes: int = 19,
    output_stride: int = 16,
    pool: PoolMode = "global",
    inter_channels: int = 128,
    frozen_bn: bool = False,
    low_tap: str | None = None,
    backbone_weights: Checkpoint | None = None,
    **backbone_kwargs,
) -> LRASPP:
    """LR-ASPP on any registered backbone (``output_stride`` 8, 16 — the paper's — or 32).

    ``low_tap`` defaults to the block opening the stride-8 stage; ``backbone_kwargs`` (e.g.
    ``width_mult``, ``reduced_tail``) go to :func:`create_backbone`; ``backbone_weights`` is a
    torchvision classification checkpoint for the backbone. ``frozen_bn`` freezes the backbone's
    BatchNorm only.
    """
    net = create_backbone(
        backbone, output_stride=output_stride, out_features=("C5",), frozen_bn=frozen_bn,
        **backbone_kwargs,
    )
    if low_tap is None:
        low_tap = net.first_block_at_stride(8)
    net.set_out_features((low_tap, "C5"))
    head = LRASPPHead(
        net.feature_info[low_tap].channels,
        net.feature_info["C5"].channels,
        num_classes,
        inter_channels=inter_channels,
        pool=pool,
    )
    model = LRASPP(net, head, low_tap=low_tap, high_tap="C5")
    if backbone_weights is not None:
        model.load_backbone_weights(backbone_weights)
    return model


@register_model()
def lraspp_mobilenet_v3_large(
    *,
    num_classes: int = 19,
    pool: PoolMode = "global",
    width_mult: float = 1.0,
    reduced_tail: bool = False,
    output_stride: int = 16,
    frozen_bn: bool = False,
    inter_channels: int = 128,
    backbone_weights: Checkpoint | None = None,
) -> LRASPP:
    """LR-ASPP on MobileNetV3-Large; with the defaults (and ``num_classes=21``) it matches
    torchvision's ``lraspp_mobilenet_v3_large`` key for key."""
    return lraspp(
        "mobilenet_v3_large", num_classes=num_classes, output_stride=output_stride, pool=pool,
        inter_channels=inter_channels, frozen_bn=frozen_bn, backbone_weights=backbone_weights,
        width_mult=width_mult, reduced_tail=reduced_tail,
    )


@register_model()
def lraspp_mobilenet_v3_small(
    *,
    num_classes: int = 19,
    pool: PoolMode = "global",
    width_mult: float = 1.0,
    reduced_tail: bool = False,
    output_stride: int = 16,
    frozen_bn: bool = False,
    inter_channels: int = 128,
    backbone_weights: Checkpoint | None = None,
) -> LRASPP:
    """LR-ASPP on MobileNetV3-Small (torchvision has no pretrained one, but the same layout)."""
    return lraspp(
        "mobilenet_v3_small", num_classes=num_classes, output_stride=output_stride, pool=pool,
        inter_channels=inter_channels, frozen_bn=frozen_bn, backbone_weights=backbone_weights,
        width_mult=width_mult, reduced_tail=reduced_tail,
    )
