"""COCO box evaluation: collect detections per image, run pycocotools COCOeval, report AP."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from densemnv3.evaluation.units import UNIT, fmt

__all__ = ["STATS_NAMES", "CocoEvaluator", "DetMetrics", "format_ap_table"]

#: The 12 numbers of ``COCOeval.stats``, in order.
STATS_NAMES: tuple[str, ...] = (
    "AP @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "AP @[IoU=0.50 | area=all | maxDets=100]",
    "AP @[IoU=0.75 | area=all | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=large | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=1]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=10]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=large | maxDets=100]",
)

_BOX_DECIMALS = 2  # 0.01 px is far below annotation noise
_SCORE_DECIMALS = 5


@dataclass
class DetMetrics:
    """COCO box metrics. Stats are pycocotools' (-1 where undefined, e.g. no large objects)."""

    stats: list[float]
    per_class_ap: dict[str, float]
    per_class_ap50: dict[str, float] = field(default_factory=dict)
    summary_text: str = ""

    @property
    def AP(self) -> float:  # noqa: N802 - the names everyone reads in COCO tables
        return self.stats[0]

    @property
    def AP50(self) -> float:  # noqa: N802
        return self.stats[1]

    @property
    def AP75(self) -> float:  # noqa: N802
        return self.stats[2]

    @property
    def APs(self) -> float:  # noqa: N802
        return self.stats[3]

    @property
    def APm(self) -> float:  # noqa: N802
        return self.stats[4]

    @property
    def APl(self) -> float:  # noqa: N802
        return self.stats[5]

    def to_dict(self) -> dict:
        """JSON-ready dict of the headline APs, per-class APs and the 12 stats."""
        return {
            "AP": self.AP,
            "AP50": self.AP50,
            "AP75": self.AP75,
            "APs": self.APs,
            "APm": self.APm,
            "APl": self.APl,
            "per_class_ap": dict(self.per_class_ap),
            "per_class_ap50": dict(self.per_class_ap50),
            "stats": list(self.stats),
        }


class CocoEvaluator:
    """Collects detections in original-image pixels and evaluates them with pycocotools.

    Call :meth:`add` once per evaluated image (with empty arrays when it has no detection, so its
    ground truth still counts), :meth:`gather` under DDP, then :meth:`evaluate`.
    """

    def __init__(self, coco_gt: COCO, iou_type: str = "bbox") -> None:
        if iou_type != "bbox":
            raise ValueError(f"only iou_type='bbox' is supported, got {iou_type!r}")
        self.coco_gt = coco_gt
        self.iou_type = iou_type
        self.cat_names: dict[int, str] = {c["id"]: c["name"] for c in coco_gt.dataset["categories"]}
        self._cat_ids = np.array(sorted(self.cat_names), dtype=np.int64)
        self._per_image: dict[int, list[dict]] = {}

    @property
    def img_ids(self) -> list[int]:
        """Ids of the images added so far, in order."""
        return list(self._per_image)

    @property
    def results(self) -> list[dict]:
        """COCO results: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``."""
        return [det for dets in self._per_image.values() for det in dets]

    def add(self, image_id: int, boxes_xyxy, scores, category_ids) -> None:
        """One image's detections: ``(n, 4)`` xyxy boxes in original pixels, scores, COCO ids."""
        image_id = int(image_id.item() if hasattr(image_id, "item") else image_id)
        if image_id not in self.coco_gt.imgs:
            raise ValueError(f"image id {image_id} is not in the ground-truth annotations")
        boxes = _to_numpy(boxes_xyxy, np.float64).reshape(-1, 4)
        scores = _to_numpy(scores, np.float64).reshape(-1)
        cats = _to_numpy(category_ids, np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(cats):
            raise ValueError(
                f"got {len(boxes)} boxes, {len(scores)} scores and {len(cats)} category ids"
            )
        unknown = np.setdiff1d(cats, self._cat_ids)
        if unknown.size:
            raise ValueError(
                f"category ids {unknown.tolist()} are not in the ground truth "
                f"(known: {self._cat_ids.tolist()}); map contiguous labels to COCO ids first"
            )
        xywh = np.round(
            np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1), _BOX_DECIMALS
        )
        scores = np.round(scores, _SCORE_DECIMALS)
        dets = self._per_image.setdefault(image_id, [])
        dets.extend(
            {"image_id": image_id, "category_id": c, "bbox": b, "score": s}
            for b, s, c in zip(xywh.tolist(), scores.tolist(), cats.tolist(), strict=True)
        )

    def gather(self) -> None:
        """Collect every rank's detections on every rank (no-op outside ``torch.distributed``).

        An image seen by several ranks (a padded DistributedSampler) is kept once, from the first.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, list(self._per_image.items()))
        self._per_image = _merge_by_image(gathered)

    def evaluate(self, img_ids: Iterable[int] | None = None) -> DetMetrics:
        """Run COCOeval on ``img_ids`` (default: the added images, else all ground-truth images)."""
        if img_ids is not None:
            ids = sorted({int(i) for i in img_ids})
        else:
            ids = sorted(self._per_image) or sorted(self.coco_gt.getImgIds())
        wanted = set(ids)
        results = [dict(r) for r in self.results if r["image_id"] in wanted]

        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = self.coco_gt.loadRes(results) if results else self._empty_results()
            coco_eval = COCOeval(self.coco_gt, coco_dt, iouType=self.iou_type)
            coco_eval.params.imgIds = ids
            coco_eval.evaluate()
            coco_eval.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            coco_eval.summarize()

        precision = coco_eval.eval["precision"]  # (iou thr, recall thr, class, area, max dets)
        per_class_ap, per_class_ap50 = {}, {}
        for k, cat_id in enumerate(coco_eval.params.catIds):
            name = self.cat_names[cat_id]
            ap = _valid_mean(precision[:, :, k, 0, -1])
            if ap is not None:
                per_class_ap[name] = ap
                per_class_ap50[name] = _valid_mean(precision[0, :, k, 0, -1])
        return DetMetrics(
            stats=[float(s) for s in coco_eval.stats],
            per_class_ap=per_class_ap,
            per_class_ap50=per_class_ap50,
            summary_text=summary.getvalue(),
        )

    def write_results(self, path: str | Path) -> Path:
        """Write the results JSON (the file COCO's tools and ``COCO.loadRes`` read), each result
        with its image's ``file_name`` too (the ids of a YOLO or VOC set are made in memory)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        images = self.coco_gt.imgs
        named = [r | {"file_name": images[r["image_id"]]["file_name"]} for r in self.results]
        path.write_text(json.dumps(named))
        return path

    def reset(self) -> None:
        self._per_image = {}

    def _empty_results(self) -> COCO:
        # COCO.loadRes indexes the first result, so an empty list needs a hand-made object.
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": list(self.coco_gt.dataset["images"]),
            "categories": copy.deepcopy(self.coco_gt.dataset["categories"]),
            "annotations": [],
        }
        coco_dt.createIndex()
        return coco_dt


def format_ap_table(metrics: DetMetrics) -> str:
    """Per-category AP / AP50 table (fractions, like pycocotools' summary) followed by the
    headline numbers."""
    names = list(metrics.per_class_ap)
    width = max([len("category"), *(len(n) for n in names)])
    header = f"{'category':<{width}} | {'AP':>6} | {'AP50':>6}   ({UNIT})"
    rule = "-" * len(header)
    lines = [header, rule]
    for name in names:
        ap50 = metrics.per_class_ap50.get(name)
        lines.append(f"{name:<{width}} | {fmt(metrics.per_class_ap[name]):>6} | {fmt(ap50):>6}")
    lines.append(rule)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        lines.append(f"{key:<{width}} | {fmt(getattr(metrics, key)):>6}")
    return "\n".join(lines)


def _merge_by_image(per_rank: Sequence[Sequence[tuple[int, list[dict]]]]) -> dict[int, list[dict]]:
    merged: dict[int, list[dict]] = {}
    for items in per_rank:
        for image_id, dets in items:
            merged.setdefault(image_id, dets)
    return merged


def _to_numpy(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _valid_mean(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None
