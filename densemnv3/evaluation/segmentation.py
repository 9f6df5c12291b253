"""Semantic segmentation metrics: a confusion matrix, IoU / accuracy, and a per-class table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from densemnv3.data.labels import IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_TO_ID
from densemnv3.evaluation.cityscapes import (
    CATEGORIES,
    InstanceStats,
    OfficialScores,
    official_scores,
)
from densemnv3.evaluation.units import UNIT, fmt

__all__ = [
    "ConfusionMatrix",
    "SegMetrics",
    "format_iou_table",
    "label_ids_from_train_ids",
]


@dataclass
class SegMetrics:
    """Metrics from a confusion matrix; per-class entries are ``None`` where undefined.

    ``iou[c]`` is ``None`` when class ``c`` is absent from both ground truth and prediction;
    ``class_accuracy[c]`` (recall) is ``None`` when ``c`` is absent from the ground truth.
    Scalars are NaN when no pixel was counted. ``official``: Cityscapes' iIoU and category
    scores (:mod:`~densemnv3.evaluation.cityscapes`), for the 19 Cityscapes classes.
    """

    miou: float
    iou: list[float | None]
    pixel_accuracy: float
    mean_accuracy: float
    class_accuracy: list[float | None] = field(default_factory=list)
    official: OfficialScores | None = None

    def to_dict(self, class_names: Sequence[str]) -> dict:
        """JSON-ready dict: ``mIoU``, ``per_class_iou`` (name -> IoU or None), accuracies; with
        the official scores ``iIoU``, ``mIoU_category``, ``iIoU_category`` and their per-class
        and per-category entries (``iIoU`` None without instance ids)."""
        _check_names(class_names, len(self.iou))
        out = {
            "mIoU": _json_float(self.miou),
            "per_class_iou": dict(zip(class_names, self.iou, strict=True)),
            "pixel_accuracy": _json_float(self.pixel_accuracy),
            "mean_accuracy": _json_float(self.mean_accuracy),
            "per_class_accuracy": dict(zip(class_names, self.class_accuracy, strict=False)),
        }
        if (o := self.official) is not None:
            out |= {
                "iIoU": _json_float(o.iiou),
                "mIoU_category": _json_float(o.category_miou),
                "iIoU_category": _json_float(o.category_iiou_mean),
                "per_class_iiou": dict(zip(class_names, o.class_iiou, strict=True)),
                "per_category_iou": o.category_iou,
                "per_category_iiou": o.category_iiou,
            }
        return out


class ConfusionMatrix:
    """An ``(n, n)`` int64 confusion matrix; rows are ground truth, columns prediction."""

    def __init__(
        self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: str | torch.device = "cpu"
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of integer predictions and targets (same shape), ignored pixels aside."""
        if pred.shape != target.shape:
            raise ValueError(
                f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError(
                "pred and target must be integer class indices (take argmax of logits)"
            )
        n = self.num_classes
        target = target.reshape(-1).to(self.mat.device, torch.int64)
        pred = pred.reshape(-1).to(self.mat.device, torch.int64)
        valid = target != self.ignore_index
        target, pred = target[valid], pred[valid]
        if target.numel() == 0:
            return
        for name, t in (("prediction", pred), ("target", target)):
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= n:
                raise ValueError(
                    f"{name} values must lie in [0, {n}) (or be ignore_index={self.ignore_index} "
                    f"for targets); got range [{lo}, {hi}]"
                )
        self.mat += torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)

    def reset(self) -> None:
        self.mat.zero_()

    def reduce_from_all_processes(self) -> None:
        """Sum the matrix over all ranks (no-op outside ``torch.distributed``)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM)

    def compute(
        self, instances: InstanceStats | None = None, *, official: bool | None = None
    ) -> SegMetrics:
        """IoU per class, mIoU over classes in GT or prediction, pixel and mean class accuracy;
        for the 19 Cityscapes classes also the official category IoU, and with ``instances`` (the
        ground truth's, see :class:`InstanceStats`) iIoU. ``official``: whether the classes are
        Cityscapes' (None: when there are 19; a dataset says it, see ``official_scores``)."""
        if official is None:
            official = self.num_classes == NUM_CLASSES
        mat = self.mat.detach().cpu().to(torch.float64)
        tp = mat.diag()
        gt = mat.sum(dim=1)
        pr = mat.sum(dim=0)
        union = gt + pr - tp
        iou = [float(tp[c] / union[c]) if union[c] > 0 else None for c in range(self.num_classes)]
        acc = [float(tp[c] / gt[c]) if gt[c] > 0 else None for c in range(self.num_classes)]
        total = float(mat.sum())
        return SegMetrics(
            miou=_mean(iou),
            iou=iou,
            pixel_accuracy=float(tp.sum()) / total if total > 0 else math.nan,
            mean_accuracy=_mean(acc),
            class_accuracy=acc,
            official=official_scores(self.mat, instances) if official else None,
        )

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.mat.sum())})"


def format_iou_table(metrics: SegMetrics, class_names: Sequence[str]) -> str:
    """Aligned per-class IoU / accuracy table (fractions, see :mod:`~densemnv3.evaluation.units`)
    followed by mIoU and accuracy lines; with the official scores an iIoU column and the
    per-category table, as Cityscapes' evaluation prints them."""
    _check_names(class_names, len(metrics.iou))
    o = metrics.official
    width = max([len("pixel accuracy"), *(len(n) for n in class_names)])
    accs = metrics.class_accuracy or [None] * len(metrics.iou)
    iious = o.class_iiou if o is not None else None
    header = f"{'class':<{width}} | {'IoU':>7} | {'Acc':>7}" + (f" | {'iIoU':>7}" if iious else "")
    header += f"   ({UNIT})"
    rule = "-" * len(header)
    lines = [header, rule]
    for i, (name, iou, acc) in enumerate(zip(class_names, metrics.iou, accs, strict=True)):
        lines.append(
            f"{name:<{width}} | {fmt(iou):>7} | {fmt(acc):>7}"
            + (f" | {fmt(iious[i]):>7}" if iious else "")
        )
    lines += [
        rule,
        f"{'mIoU':<{width}} | {fmt(metrics.miou):>7}"
        + (f" | {'':>7} | {fmt(o.iiou):>7}" if o else ""),
    ]
    lines += [
        f"{'mean accuracy':<{width}} | {fmt(metrics.mean_accuracy):>7}",
        f"{'pixel accuracy':<{width}} | {fmt(metrics.pixel_accuracy):>7}",
    ]
    if o is not None:
        lines += ["", f"{'category':<{width}} | {'IoU':>7} | {'iIoU':>7}", rule]
        lines += [
            f"{c:<{width}} | {fmt(o.category_iou[c]):>7} | {fmt(o.category_iiou[c]):>7}"
            for c in CATEGORIES
        ]
        lines += [
            rule,
            f"{'mean':<{width}} | {fmt(o.category_miou):>7} | {fmt(o.category_iiou_mean):>7}",
        ]
        if not o.has_instances:
            lines.append(
                "iIoU needs the ground truth's instance ids (gtFine *_instanceIds.png); "
                "class and category IoU only"
            )
    return "\n".join(lines)


def label_ids_from_train_ids(pred_train_ids: np.ndarray) -> np.ndarray:
    """Map train ids (0-18, 255) to Cityscapes label ids (uint8) for the official evaluation."""
    arr = np.asarray(pred_train_ids)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"train ids must be an integer array, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"train ids must lie in [0, 255], got range [{arr.min()}, {arr.max()}]")
    return TRAIN_ID_TO_ID[arr]


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else math.nan


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def _check_names(class_names: Sequence[str], n: int) -> None:
    if len(class_names) != n:
        raise ValueError(f"got {len(class_names)} class names for {n} classes")
