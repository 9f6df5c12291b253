"""Cityscapes' four official averages: IoU and iIoU, over the 19 classes and over the 7 categories.

As cityscapesScripts' ``evalPixelLevelSemanticLabeling`` computes them (the benchmark's table,
and what mmsegmentation's ``CityscapesMetric`` reports), from the 19-class confusion matrix of
:class:`~densemnv3.evaluation.segmentation.ConfusionMatrix` plus, for iIoU, the ground truth's
instances (``gtFine_instanceIds``: ``label id * 1000 + k`` on a thing instance's pixels):

- class IoU: TP / (TP + FP + FN); FP counts only pixels whose ground truth is evaluated.
- category IoU: the same with the classes of a category merged (flat, construction, object,
  nature, sky, human, vehicle).
- iIoU: TP and FN of each ground-truth instance weighted by the class's average instance size
  (the script's ``avgClassSize``) over the instance's size, so a small pedestrian counts as much as
  a large one; FP unweighted. Only classes with instances (person ... bicycle), and the
  categories made of such classes (human, vehicle). Pixels of an instance class that carry no
  instance id (ids below 1000: crowds, groups) count in neither weighted TP nor FN.
- A class or category with no ground truth and no prediction is NaN (``None`` here) and left out
  of its average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from densemnv3.data.labels import LABELS, NUM_CLASSES, TRAIN_LABELS

__all__ = [
    "AVG_CLASS_SIZE",
    "CATEGORIES",
    "INSTANCE_CATEGORIES",
    "InstanceStats",
    "OfficialScores",
    "official_scores",
]

#: Average instance size (pixels) per class: cityscapesScripts' ``args.avgClassSize``.
AVG_CLASS_SIZE: dict[str, float] = {
    "bicycle": 4672.3249222261,
    "caravan": 36771.8241758242,
    "motorcycle": 6298.7200839748,
    "rider": 3930.4788056518,
    "bus": 35732.1511111111,
    "train": 67583.7075812274,
    "car": 12794.0202738185,
    "person": 3462.4756337644,
    "truck": 27855.1264367816,
    "trailer": 16926.9763313609,
}

#: The categories of the 19 classes, in the label table's order.
CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(lab.category for lab in TRAIN_LABELS))
#: Categories whose every label has instances: the ones with an iIoU (human, vehicle).
INSTANCE_CATEGORIES: tuple[str, ...] = tuple(
    c
    for c in CATEGORIES
    if all(lab.has_instances for lab in LABELS if lab.category == c and lab.id >= 0)
)
#: The evaluated classes with instances (train ids 11-18), each with a weighted TP / FN.
_INSTANCE_CLASSES = [lab for lab in TRAIN_LABELS if lab.has_instances]
_CATEGORY = torch.tensor(
    [CATEGORIES.index(lab.category) for lab in TRAIN_LABELS]
)  # train id -> category


def _label_tables() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per label id (0-33): its row among the instance classes (-1: none), its train id, its
    instance category (-1: none) and its average instance size."""
    row, train_id, category = (torch.full((34,), -1) for _ in range(3))
    size = torch.ones(34, dtype=torch.float64)
    for i, lab in enumerate(_INSTANCE_CLASSES):
        row[lab.id], train_id[lab.id], size[lab.id] = i, lab.train_id, AVG_CLASS_SIZE[lab.name]
        category[lab.id] = INSTANCE_CATEGORIES.index(lab.category)
    return row, train_id, category, size


_ROW, _TRAIN_ID, _INST_CATEGORY, _AVG_SIZE = _label_tables()
#: train id -> its instance category (-1: none), for the predictions
_PRED_CATEGORY = torch.tensor(
    [
        INSTANCE_CATEGORIES.index(lab.category) if lab.category in INSTANCE_CATEGORIES else -1
        for lab in TRAIN_LABELS
    ]
)


class InstanceStats:
    """Size-weighted TP and FN of every ground-truth instance, summed per instance class and per
    instance category: the numerators of iIoU."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        #: rows: the 8 instance classes, then the instance categories; columns: weighted TP, FN
        self.sums = torch.zeros(
            (len(_INSTANCE_CLASSES) + len(INSTANCE_CATEGORIES), 2),
            dtype=torch.float64,
            device=device,
        )

    @torch.no_grad()
    def update(self, pred: Tensor, instance_ids: Tensor) -> None:
        """Add a batch: ``pred`` train ids ``(N, H, W)``, ``instance_ids`` the ground truth's
        ``gtFine_instanceIds`` values at the same size."""
        if pred.shape != instance_ids.shape:
            raise ValueError(
                f"pred shape {tuple(pred.shape)} != instance ids shape {tuple(instance_ids.shape)}"
            )
        device = self.sums.device
        tables = [
            t.to(device) for t in (_ROW, _TRAIN_ID, _INST_CATEGORY, _AVG_SIZE, _PRED_CATEGORY)
        ]
        row_of, train_of, category_of, avg_size, pred_category = tables
        for p, ids in zip(pred.reshape(len(pred), -1), instance_ids.reshape(len(pred), -1)):
            ids = ids.to(device, torch.int64)
            inside = ids > 1000  # as the script: ids up to 1000 are pixels without an instance
            ids, p = ids[inside], p.to(device, torch.int64)[inside]
            if ids.numel() == 0:
                continue
            instances, pixel_instance = torch.unique(ids, return_inverse=True)
            label = instances // 1000
            if int(label.max()) > 33:
                raise ValueError(
                    f"instance ids name label ids up to {int(label.max())}; Cityscapes' are 0-33"
                )
            n = len(instances)
            size = torch.bincount(pixel_instance, minlength=n).to(torch.float64)
            tp = torch.bincount(
                pixel_instance, weights=(p == train_of[label][pixel_instance]).double(), minlength=n
            )
            category_tp = torch.bincount(
                pixel_instance,
                weights=(pred_category[p] == category_of[label][pixel_instance]).double(),
                minlength=n,
            )
            weight = avg_size[label] / size
            kept = (
                row_of[label] >= 0
            )  # instances of classes left out of evaluation (caravan, trailer)
            for rows, hits in (
                (row_of[label], tp),
                (len(_INSTANCE_CLASSES) + category_of[label], category_tp),
            ):
                values = torch.stack([hits * weight, (size - hits) * weight], dim=1)
                self.sums.index_add_(0, rows[kept], values[kept])

    def reduce_from_all_processes(self) -> None:
        """Sum over all ranks (no-op outside ``torch.distributed``)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.sums, op=dist.ReduceOp.SUM)


@dataclass
class OfficialScores:
    """Per-class iIoU (``None`` for classes without instances), per-category IoU and iIoU, and
    the averages; ``None`` / NaN where undefined. Without instance ids (``has_instances``
    False) every iIoU is undefined."""

    has_instances: bool
    class_iiou: list[float | None]
    category_iou: dict[str, float | None]
    category_iiou: dict[str, float | None]
    iiou: float
    category_miou: float
    category_iiou_mean: float


def official_scores(confusion: Tensor, instances: InstanceStats | None) -> OfficialScores:
    """The iIoU and category scores from a ``(19, 19)`` confusion matrix (rows: ground truth)
    and the instance sums (None: no instance ids, so no iIoU)."""
    mat = confusion.detach().cpu().to(torch.float64)
    if mat.shape != (NUM_CLASSES, NUM_CLASSES):
        raise ValueError(
            f"expected the {NUM_CLASSES}-class confusion matrix, got shape {tuple(mat.shape)}"
        )
    members = [
        [t for t in range(NUM_CLASSES) if int(_CATEGORY[t]) == c] for c in range(len(CATEGORIES))
    ]
    category_iou = {}
    for name, ids in zip(CATEGORIES, members, strict=True):
        tp = float(mat[ids][:, ids].sum())
        fn = float(mat[ids].sum()) - tp
        fp = (
            float(mat[:, ids].sum()) - tp
        )  # rows of other categories: ignored pixels are not counted
        category_iou[name] = _ratio(tp, tp + fp + fn)
    class_iiou: list[float | None] = [None] * NUM_CLASSES
    category_iiou: dict[str, float | None] = {name: None for name in CATEGORIES}
    if instances is not None:
        sums = instances.sums.detach().cpu().tolist()
        for (tp_w, fn_w), lab in zip(sums, _INSTANCE_CLASSES):
            fp = float(mat[:, lab.train_id].sum() - mat[lab.train_id, lab.train_id])
            class_iiou[lab.train_id] = _ratio(tp_w, tp_w + fp + fn_w)
        for (tp_w, fn_w), name in zip(sums[len(_INSTANCE_CLASSES) :], INSTANCE_CATEGORIES):
            ids = members[CATEGORIES.index(name)]
            fp = float(mat[:, ids].sum() - mat[ids][:, ids].sum())
            category_iiou[name] = _ratio(tp_w, tp_w + fp + fn_w)
    return OfficialScores(
        has_instances=instances is not None,
        class_iiou=class_iiou,
        category_iou=category_iou,
        category_iiou=category_iiou,
        iiou=_mean(class_iiou),
        category_miou=_mean(list(category_iou.values())),
        category_iiou_mean=_mean(list(category_iiou.values())),
    )


def _ratio(num: float, denom: float) -> float | None:
    return num / denom if denom > 0 else None


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else math.nan
