"""densemnv3 backbones inside other frameworks: torchvision's detectors.

torchvision's ``FasterRCNN``, ``MaskRCNN``, ``RetinaNet`` and ``FCOS`` take any backbone module
whose ``forward`` returns a tensor or an ordered dict of them and that has an ``out_channels``
attribute. :func:`torchvision_detection_backbone` makes one from any densemnv3 backbone (a name,
``tv:``/``timm:`` included, or a built module): one tap as it is, or several through
``torchvision.ops.FeaturePyramidNetwork`` (plus its max-pooled extra level, as torchvision's
``BackboneWithFPN``). Outputs are keyed ``"0"``, ``"1"``, ... (``"pool"``), the names the detectors'
default RoI pooling reads; :meth:`DetectionBackbone.anchor_generator` sizes anchors to the maps::

    backbone = torchvision_detection_backbone(
        "mobilenet_v3_large", taps=("C4", "C5"), fpn_channels=128
    )
    model = FasterRCNN(backbone, num_classes=9, rpn_anchor_generator=backbone.anchor_generator())
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from densemnv3.errors import ConfigError

from .backbones.registry import BackboneSpec, create_backbone, select_taps

__all__ = ["DetectionBackbone", "torchvision_detection_backbone"]


class DetectionBackbone(nn.Module):
    """A densemnv3 backbone as torchvision's detection models expect it.

    ``forward(x)`` returns an ordered dict of maps keyed ``"0"``, ``"1"``, ... (one per tap, with
    an FPN also ``"pool"``), all with ``out_channels`` channels.
    """

    def __init__(
        self, backbone: nn.Module, taps: Sequence[str], fpn_channels: int | None = None
    ) -> None:
        super().__init__()
        channels = [backbone.feature_info[t].channels for t in taps]
        if fpn_channels is None and len(taps) > 1:
            raise ConfigError(
                f"taps {tuple(taps)}: several maps need a common width; pass "
                f"fpn_channels (e.g. 256) to join them with an FPN, or one tap"
            )
        self.body = backbone
        self.taps = tuple(taps)
        self.strides = [backbone.feature_info[t].stride for t in taps]
        self.fpn = (
            FeaturePyramidNetwork(channels, fpn_channels, extra_blocks=LastLevelMaxPool())
            if fpn_channels is not None
            else None
        )
        self.out_channels = fpn_channels if fpn_channels is not None else channels[0]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        taps = self.body(x)
        maps = OrderedDict((str(i), taps[t]) for i, t in enumerate(self.taps))
        return self.fpn(maps) if self.fpn is not None else maps

    @property
    def num_maps(self) -> int:
        """How many maps ``forward`` returns (the FPN adds a pooled one)."""
        return len(self.taps) + (self.fpn is not None)

    def anchor_generator(
        self,
        sizes: Sequence[int] = (32, 64, 128, 256, 512),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    ) -> AnchorGenerator:
        """Anchors for these maps: one map takes every size; several take one size each, spread
        evenly from the smallest (finest map) to the largest (the RPN head shares its layers
        across maps, so each needs as many anchors per location)."""
        n = self.num_maps
        if n == 1:
            groups = [tuple(sizes)]
        else:
            groups = [(sizes[round(i * (len(sizes) - 1) / (n - 1))],) for i in range(n)]
        return AnchorGenerator(tuple(groups), (tuple(aspect_ratios),) * n)


def torchvision_detection_backbone(
    backbone: BackboneSpec | nn.Module,
    taps: Sequence[str] = ("C5",),
    fpn_channels: int | None = None,
    **backbone_kwargs,
) -> DetectionBackbone:
    """A densemnv3 backbone (a name or spec for :func:`create_backbone`, or a built backbone) for
    ``torchvision.models.detection``: the map ``taps`` (one tap), or an FPN of ``fpn_channels``
    channels over several."""
    if not isinstance(backbone, nn.Module):
        name = backbone

        def build(out):
            return create_backbone(name, out_features=out, **backbone_kwargs)

        backbone = build(None)
    else:

        def build(out):
            raise ConfigError(
                f"this backbone cannot return taps {tuple(out)} (it has no "
                f"set_out_features); build it with out_features={tuple(out)}"
            )

    return DetectionBackbone(select_taps(backbone, tuple(taps), build), taps, fpn_channels)
