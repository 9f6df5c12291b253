"""One backbone pass, two heads: LR-ASPP segmentation and SSDLite detection on shared taps.

:class:`LRASPPSSDLite` holds a whole :class:`~densemnv3.models.SSDLite` (``det``) and an
:class:`~densemnv3.models.heads.lraspp.LRASPPHead` (``seg``) reading two more taps of the same
backbone (the block that opens stride 8, and ``C5``). ``output_stride=32`` (the default) keeps the
MobileNetV3 undilated, LR-ASPP upsampling its gated branch 4× to the stride-8 feature; ``16``
dilates the last stage as the single-task LR-ASPP does, SSDLite then reading ``C5`` at stride 16
too (only there does a single-task LR-ASPP checkpoint give the same logits). ``reduced_tail``
(default on) halves the last stage for both. The defaults are the cheapest configuration in
training and inference, and train as well as the dilated one (BENCHMARKS.md).

Single-task checkpoints load into their part through :meth:`LRASPPSSDLite.single_task_view`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from densemnv3.checkpoint import StateDict
from densemnv3.errors import ConfigError

from .detection import SSDLite, Targets, set_bn_momentum_, ssdlite
from .heads.lraspp import LRASPPHead, PoolMode
from .heads.postprocess import Detections
from .losses import SegmentationLoss, cross_entropy_2d
from .registry import register_model
from .resize import resize_bilinear
from .segmentation import LRASPP

__all__ = [
    "LRASPPSSDLite",
    "MultiTaskOutput",
    "lraspp_ssdlite",
    "multitask_mobilenet_v3_large",
    "multitask_mobilenet_v3_small",
]


class MultiTaskOutput(NamedTuple):
    """What the multi-task model returns in eval mode."""

    logits: Tensor  # (N, num_classes, H, W) segmentation logits at the input size
    detections: Detections  # per image: boxes (xyxy input pixels), scores, labels


class LRASPPSSDLite(nn.Module):
    """An SSDLite detector whose backbone also feeds an LR-ASPP segmentation head.

    Args:
        det: the detector; its backbone is the shared one and must return ``low_tap`` and
            ``high_tap`` besides ``C4_expand`` and ``C5``.
        seg: the LR-ASPP head for those two taps.

    ``forward(images)`` in eval mode returns a :class:`MultiTaskOutput`; in training mode
    ``forward(images, targets)`` (per image: ``mask`` (H, W) int64 train ids with 255 ignored,
    ``boxes`` xyxy pixels and ``labels``, 0 = background) returns the losses ``ce``,
    ``bbox_regression`` and ``classification`` (unweighted; the task weighs them). ``ce`` is
    ``seg_loss(logits, masks)``: :func:`cross_entropy_2d` unless the task sets another
    (:func:`densemnv3.models.losses.segmentation_loss`).
    """

    task = "multitask"

    def __init__(
        self, det: SSDLite, seg: LRASPPHead, *, low_tap: str, high_tap: str = "C5"
    ) -> None:
        super().__init__()
        taps = tuple(getattr(det.backbone, "out_features", ()))
        if not {low_tap, high_tap} <= set(taps):
            raise ConfigError(
                f"the multi-task backbone must return taps {low_tap!r} and {high_tap!r}, got {taps}"
            )
        self.det = det
        self.seg = seg
        self.low_tap = low_tap
        self.high_tap = high_tap
        self.seg_loss: SegmentationLoss = cross_entropy_2d

    @property
    def backbone(self) -> nn.Module:
        """The shared backbone (registered once, as ``det.backbone``)."""
        return self.det.backbone

    @property
    def num_classes(self) -> int:
        """Segmentation classes."""
        return self.seg.low_classifier.out_channels

    @property
    def det_num_classes(self) -> int:
        """Detection classes, background included."""
        return self.det.num_classes

    def network(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One backbone pass: ``(seg logits at the low tap's stride, cls_logits (N, A, C),
        bbox_regression (N, A, 4), anchors (A, 4))`` — tensors only, no postprocess."""
        taps = self.backbone(images)
        logits = self.seg(taps[self.low_tap], taps[self.high_tap])
        return (logits, *self.det.predict_from_taps(taps, images.shape[-2:]))

    def forward(
        self, images: Tensor, targets: Targets | None = None
    ) -> dict[str, Tensor] | MultiTaskOutput:
        if self.training and targets is None:
            raise ValueError(
                "the multi-task model in training mode needs targets (call .eval() to predict)"
            )
        logits, cls_logits, bbox_regression, anchors = self.network(images)
        logits = resize_bilinear(logits, images.shape[-2:])
        if self.training:
            masks = [t.get("mask") for t in targets]
            if any(m is None or tuple(m.shape) != tuple(images.shape[-2:]) for m in masks):
                raise ValueError(
                    f"each target needs a 'mask' of the input size {tuple(images.shape[-2:])}"
                )
            ce = self.seg_loss(logits, torch.stack([m.long() for m in masks]))
            return {"ce": ce} | self.det.compute_loss(cls_logits, bbox_regression, anchors, targets)
        detections = self.det.postprocess(cls_logits, bbox_regression, anchors, images.shape[-2:])
        return MultiTaskOutput(logits, detections)

    def single_task_view(self, task: str) -> nn.Module:
        """The single-task model made of this model's modules (no copy): ``"segmentation"``, an
        :class:`LRASPP` of the shared backbone and ``seg``; ``"detection"``, ``det``. Loading a
        checkpoint into it loads this model's part; running it runs that head alone."""
        if task == "segmentation":
            return LRASPP(self.backbone, self.seg, low_tap=self.low_tap, high_tap=self.high_tap)
        if task == "detection":
            return self.det
        raise ValueError(f"task must be 'segmentation' or 'detection', got {task!r}")


def lraspp_ssdlite(
    backbone: str,
    *,
    num_classes: int = 19,
    det_num_classes: int = 9,
    output_stride: int = 32,
    width_mult: float = 1.0,
    reduced_tail: bool = True,
    pool: PoolMode = "global",
    inter_channels: int = 128,
    low_tap: str | None = None,
    frozen_bn: bool = False,
    bn_momentum: float = 0.03,
    backbone_weights: StateDict | None = None,
    **det_kwargs,
) -> LRASPPSSDLite:
    """LR-ASPP (``num_classes``) and SSDLite (``det_num_classes``, background included) on one
    registered backbone with a ``C4_expand`` tap.

    ``output_stride`` 32 or 16 (see the module docstring). The backbone is initialised as
    :func:`~densemnv3.models.ssdlite` does (normal(0, 0.03) from scratch, or ``backbone_weights``,
    a torchvision classification checkpoint) and every BatchNorm, the LR-ASPP head's included,
    uses momentum ``bn_momentum``. ``det_kwargs`` (``anchor_scale_range``, ``score_thresh``, ...)
    go to :class:`SSDLite`.
    """
    if output_stride not in (16, 32):
        raise ConfigError(
            f"output_stride must be 16 or 32 for the multi-task model, got {output_stride!r}"
        )
    spec = {
        "name": backbone,
        "width_mult": width_mult,
        "reduced_tail": reduced_tail,
        "output_stride": output_stride,
    }
    det = ssdlite(
        spec,
        num_classes=det_num_classes,
        width_mult=width_mult,
        taps=("C4_expand", "C5"),
        frozen_bn=frozen_bn,
        backbone_weights=backbone_weights,
        bn_momentum=bn_momentum,
        **det_kwargs,
    )
    net = det.backbone
    low_tap = low_tap or net.first_block_at_stride(8)
    net.set_out_features((low_tap, "C4_expand", "C5"))
    seg = LRASPPHead(
        net.feature_info[low_tap].channels,
        net.feature_info["C5"].channels,
        num_classes,
        inter_channels=inter_channels,
        pool=pool,
    )
    return LRASPPSSDLite(det, set_bn_momentum_(seg, bn_momentum), low_tap=low_tap)


@register_model(forwards_kwargs_to=(lraspp_ssdlite, ssdlite, SSDLite.__init__))
def multitask_mobilenet_v3_large(*, num_classes: int = 19, **kwargs) -> LRASPPSSDLite:
    """LR-ASPP + SSDLite on one MobileNetV3-Large pass; options as :func:`lraspp_ssdlite`."""
    return lraspp_ssdlite("mobilenet_v3_large", num_classes=num_classes, **kwargs)


@register_model(forwards_kwargs_to=(lraspp_ssdlite, ssdlite, SSDLite.__init__))
def multitask_mobilenet_v3_small(*, num_classes: int = 19, **kwargs) -> LRASPPSSDLite:
    """LR-ASPP + SSDLite on one MobileNetV3-Small pass; options as :func:`lraspp_ssdlite`."""
    return lraspp_ssdlite("mobilenet_v3_small", num_classes=num_classes, **kwargs)
