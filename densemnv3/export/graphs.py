"""The modules that are exported: each model's forward as the exported graph computes it, in
tensors only (LR-ASPP's stride-8 logits; SSDLite's decoded boxes and softmax scores, or its raw
outputs; both from one backbone pass for the multi-task model)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densemnv3.models import LRASPP, LRASPPSSDLite, SSDLite
from densemnv3.models.resize import resize_bilinear


class LRASPPExport(nn.Module):
    """An :class:`~densemnv3.models.LRASPP` for export: ``forward`` is its :meth:`~LRASPP.network`,
    the logits at stride 8 (``outputs: logits_raw``)."""

    def __init__(self, model: LRASPP) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.network(images)


class _DetectorExport(nn.Module):
    """A model with a detector, exported with ``outputs`` ``"decoded"`` or ``"raw"``."""

    def __init__(self, model: nn.Module, outputs: str = "decoded") -> None:
        super().__init__()
        if outputs not in ("decoded", "raw"):
            raise ValueError(f"outputs must be 'decoded' or 'raw', got {outputs!r}")
        self.model = model
        self.outputs = outputs


class SSDLiteExport(_DetectorExport):
    """An :class:`~densemnv3.models.SSDLite` network without NMS, for export.

    ``outputs="decoded"``: ``forward(images)`` returns ``(boxes, scores)``: every default box
    decoded (xyxy input pixels, clipped to the image) and the softmax over classes, exactly what
    ``SSDLite.postprocess`` starts from. A deployment then does, per image, what
    ``SSDLite.postprocess`` does: drop the background column, keep the ``topk_candidates`` (300)
    best scores above ``score_thresh`` (0.001) per class,
    ``torchvision.ops.batched_nms(boxes, scores, labels, nms_thresh=0.55)`` and keep the
    ``detections_per_img`` (300) best — or export with ``postprocess=True``.

    ``outputs="raw"``: ``(cls_logits, bbox_regression, anchors)``, as ``SSDLite.predict_raw``
    (the int8 files, whose postprocess runs in float in PyTorch).

    Under ``torch.export`` the default boxes are computed in the graph from the feature-map sizes
    (``DefaultBoxes.generate``), so one file serves every input size.
    """

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        raw = self.model.predict_raw(images)
        if self.outputs == "raw":
            return raw
        return boxes_and_scores(self.model, *raw, images.shape[-2:])


class MultiTaskExport(_DetectorExport):
    """A multi-task model for export, one backbone pass.

    ``outputs="decoded"``: ``(logits, boxes, scores)`` — the logits at the input size, the
    detector's outputs as :class:`SSDLiteExport`'s, for a deployment of its own.
    ``outputs="raw"``: ``(logits, cls_logits, bbox_regression, anchors)`` as
    ``LRASPPSSDLite.network`` — the logits at the low tap's stride (8) — the file the tools run
    (:class:`~densemnv3.runtimes.ExportedMultiTask` upsamples and post-processes in PyTorch).
    """

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        logits, *raw = self.model.network(images)
        if self.outputs == "raw":
            return (logits, *raw)
        size = images.shape[-2:]
        return (resize_bilinear(logits, size), *boxes_and_scores(self.model.det, *raw, size))


def boxes_and_scores(
    model: SSDLite,
    cls_logits: Tensor,
    bbox_regression: Tensor,
    anchors: Tensor,
    image_size: Sequence,
) -> tuple[Tensor, Tensor]:
    """Every default box decoded (xyxy, clipped to the ``image_size`` input) and the softmax
    over classes: what ``SSDLite.postprocess`` starts from."""
    boxes = model.box_coder.decode(bbox_regression, anchors)
    height, width = image_size
    limits = torch.where(torch.arange(4) % 2 == 0, width, height).to(boxes.dtype)
    boxes = torch.minimum(boxes.clamp(min=0), limits)
    return boxes, F.softmax(cls_logits, dim=-1)


def exportable(
    model: nn.Module, outputs: str | None = None, *, full_size_logits: bool = False
) -> tuple[nn.Module, str]:
    """The module to export for ``model`` and what it outputs (a key of ``OUTPUT_NAMES``):
    ``SSDLite`` → :class:`SSDLiteExport` (``outputs``: ``"decoded"`` or ``"raw"``), the multi-task
    model → :class:`MultiTaskExport` (``"multitask"`` or ``"multitask_raw"``), an LR-ASPP →
    :class:`LRASPPExport` (``"logits_raw"``; with ``full_size_logits`` the model itself,
    ``"logits"``), else the model."""
    if isinstance(model, LRASPPSSDLite):
        form = outputs or "decoded"
        return MultiTaskExport(model, form), "multitask_raw" if form == "raw" else "multitask"
    if isinstance(model, SSDLite):
        form = outputs or "decoded"
        return SSDLiteExport(model, form), form
    if isinstance(model, LRASPP) and not full_size_logits:
        return LRASPPExport(model), "logits_raw"
    return model, "logits"
