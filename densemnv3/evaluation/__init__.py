"""Evaluation: segmentation metrics (confusion matrix, IoU) and COCO box AP (pycocotools)."""

from densemnv3.evaluation.coco import STATS_NAMES, CocoEvaluator, DetMetrics, format_ap_table
from densemnv3.evaluation.segmentation import (
    ConfusionMatrix,
    SegMetrics,
    format_iou_table,
    label_ids_from_train_ids,
)

__all__ = [
    "STATS_NAMES",
    "CocoEvaluator",
    "ConfusionMatrix",
    "DetMetrics",
    "SegMetrics",
    "format_ap_table",
    "format_iou_table",
    "label_ids_from_train_ids",
]
