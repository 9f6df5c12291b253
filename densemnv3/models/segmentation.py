"""LR-ASPP semantic segmentation: a feature backbone + :class:`LRASPPHead` → logits at input size.

Channels and taps come from the backbone's ``feature_info`` (see :mod:`densemnv3.models.taps`):
the low feature at stride 8 — the block that opens the stride-8 stage where the backbone names it
(torchvision's choice), else ``C3`` — and the high feature ``C5``. Any backbone works:
``lraspp("mobilenet_v2")``, ``lraspp("tv:resnet18")``, ``lraspp({"name": "timm:resnet18"})``;
in a config, ``model.name = "lraspp"`` and ``model.backbone = ...``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from torch import Tensor, nn

from densemnv3.checkpoint import LoadResult, StateDict, load_state_dict_checked
from densemnv3.errors import ConfigError

from .backbones import create_backbone
from .backbones.registry import BackboneSpec, backbone_spec, require_backbone, select_taps
from .heads.lraspp import LRASPPHead, PoolMode
from .registry import named, register_model
from .resize import resize_bilinear
from .taps import lraspp_taps

#: LR-ASPP's output stride unless a backbone's options give one: the paper's.
OUTPUT_STRIDE = 16

_TORCHVISION_BACKBONE_KEY = re.compile(r"^backbone\.(\d+)\.")


class LRASPP(nn.Module):
    """Backbone + LR-ASPP head; ``forward(x)`` returns logits ``(N, num_classes, H, W)``.

    Args:
        backbone: returns a dict holding ``low_tap`` and ``high_tap`` (a ``FeatureBackbone``).
        head: an :class:`LRASPPHead` sized for those taps.
        low_tap, high_tap: the backbone taps fed to the head as ``low`` and ``high``.
    """

    task = "segmentation"
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

    def network(self, x: Tensor) -> Tensor:
        """The logits at the low tap's stride (8), before :meth:`forward` upsamples them: what the
        Predictor and the exported files take labels from
        (:func:`~densemnv3.inference.upsampled_labels` gives the labels of the upsampled logits
        without computing them)."""
        features = self.backbone(x)
        return self.head(features[self.low_tap], features[self.high_tap])

    def forward(self, x: Tensor) -> Tensor:
        return resize_bilinear(self.network(x), x.shape[-2:])

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

    def load_backbone_weights(self, checkpoint: StateDict) -> LoadResult:
        """Load a torchvision ImageNet classification checkpoint (e.g. ``mobilenet_v3_large``'s
        state dict, or a path to one) into the backbone; its classifier is ignored."""
        return load_state_dict_checked(self.backbone, checkpoint)


@register_model()
def lraspp(
    backbone: BackboneSpec | None = None,
    *,
    num_classes: int = 19,
    output_stride: int | None = None,
    pool: PoolMode = "global",
    inter_channels: int = 128,
    frozen_bn: bool = False,
    low_tap: str | None = None,
    backbone_weights: StateDict | None = None,
    **backbone_kwargs,
) -> LRASPP:
    """LR-ASPP on any backbone at ``output_stride`` 8, 16 (the paper's; the default unless the
    backbone's options give one) or 32.

    ``backbone``: a registered name, ``tv:<model>``, ``timm:<model>`` or
    ``{"name": ..., **options}`` (``model.backbone`` in a config). ``low_tap`` defaults to the
    stride-8 tap (see :mod:`densemnv3.models.taps`); ``backbone_kwargs`` (e.g. ``width_mult``,
    ``reduced_tail``) go to :func:`create_backbone`; ``backbone_weights`` is a classification
    checkpoint for the backbone. ``frozen_bn`` freezes the backbone's BatchNorm only.
    """
    name, options = backbone_spec(require_backbone(backbone, "lraspp", "LR-ASPP"))
    if output_stride is None:
        output_stride = options.get("output_stride", OUTPUT_STRIDE)

    def build(taps=None):
        try:
            return create_backbone(
                backbone,
                output_stride=output_stride,
                out_features=taps,
                frozen_bn=frozen_bn,
                **backbone_kwargs,
            )
        except ConfigError as err:
            hint = (
                " (for LR-ASPP: model.options.output_stride)"
                if "output_stride=" in str(err)
                else ""
            )
            raise ConfigError(f"{err}{hint}") from None

    net = build()
    low_tap, high_tap = lraspp_taps(net, name, low_tap)
    net = select_taps(net, (low_tap, high_tap), build)
    head = LRASPPHead(
        net.feature_info[low_tap].channels,
        net.feature_info[high_tap].channels,
        num_classes,
        inter_channels=inter_channels,
        pool=pool,
    )
    model = LRASPP(net, head, low_tap=low_tap, high_tap=high_tap)
    if backbone_weights is not None:
        model.load_backbone_weights(backbone_weights)
    return model


def _lraspp_on(backbone: str, doc: str) -> Callable[..., LRASPP]:
    """The registered builder ``lraspp_<backbone>``: :func:`lraspp` on that backbone, with the
    backbone's own options (``width_mult``, ``reduced_tail``) in its signature."""

    def builder(
        *,
        num_classes: int = 19,
        pool: PoolMode = "global",
        width_mult: float = 1.0,
        reduced_tail: bool = False,
        output_stride: int = OUTPUT_STRIDE,
        frozen_bn: bool = False,
        inter_channels: int = 128,
        backbone_weights: StateDict | None = None,
    ) -> LRASPP:
        return lraspp(
            backbone,
            num_classes=num_classes,
            output_stride=output_stride,
            pool=pool,
            inter_channels=inter_channels,
            frozen_bn=frozen_bn,
            backbone_weights=backbone_weights,
            width_mult=width_mult,
            reduced_tail=reduced_tail,
        )

    return register_model(head="lraspp")(named(builder, f"lraspp_{backbone}", doc))


lraspp_mobilenet_v3_large = _lraspp_on(
    "mobilenet_v3_large",
    """LR-ASPP on MobileNetV3-Large; with the defaults (and ``num_classes=21``) it matches
    torchvision's ``lraspp_mobilenet_v3_large`` key for key.""",
)
lraspp_mobilenet_v3_small = _lraspp_on(
    "mobilenet_v3_small",
    "LR-ASPP on MobileNetV3-Small (torchvision has no pretrained one, but the same layout).",
)
