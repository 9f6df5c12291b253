"""Cityscapes for the multi-task model: each image's train-id mask and its thing instances' boxes.

Boxes come from ``gtFine``'s ``*_instanceIds.png``, where a thing instance's pixels hold
``label_id * 1000 + k``. Each instance of the 8 evaluated thing classes (person, rider, car,
truck, bus, train, motorcycle, bicycle) gives the box of its pixels, ``[x_min, y_min, x_max + 1,
y_max + 1]`` in pixel edges (COCO's ``toBbox``), and its label: 1..8 in train-id order, 0 being
the background (the synthetic set's ``label_mapping="contiguous"``; the COCO category id is the
Cityscapes label id, as in its json). Pixels of a thing class that hold the bare label id (< 1000:
a Cityscapes group region such as "cargroup", or in the synthetic set an instance too small to
annotate) are crowd: each connected region is a crowd box, which evaluation ignores (COCO's
``iscrowd``) and training never uses as a target. Caravan and trailer are not among the 19
classes: no boxes.
"""

from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO

from densemnv3.data.cityscapes import INSTANCE_SUFFIX, CityscapesSegmentation
from densemnv3.data.labels import THING_IDS
from densemnv3.errors import DataError

__all__ = ["INSTANCE_SUFFIX", "THING_LABEL_IDS", "CityscapesMultiTask", "instance_boxes"]

#: Label ids (= COCO category ids) of the classes with boxes; detection label k + 1 is entry k.
THING_LABEL_IDS: tuple[int, ...] = tuple(sorted(THING_IDS.values()))
_NAME_OF_ID = {label_id: name for name, label_id in THING_IDS.items()}
_LABEL_OF_ID = np.zeros(256, dtype=np.int64)
_LABEL_OF_ID[list(THING_LABEL_IDS)] = np.arange(1, len(THING_LABEL_IDS) + 1)

#: What :func:`instance_boxes` returns: boxes (K, 4) float32, labels (K,) int64, areas (K,)
#: int64 (pixels), crowd (K,) bool — the instances first (ordered by id), then the crowd regions.
InstanceBoxes = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def instance_boxes(ids: np.ndarray) -> InstanceBoxes:
    """The boxes, labels, pixel areas and crowd flags of a Cityscapes instance-id map (H, W)."""
    height, width = ids.shape
    flat = ids.ravel()
    where = np.flatnonzero(flat >= 1000)
    codes, inverse, counts = np.unique(flat[where], return_inverse=True, return_counts=True)
    boxes = np.zeros((len(codes), 4), dtype=np.float32)
    if len(codes):
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        ys, xs = np.divmod(where[order], width)
        boxes = np.stack(
            [
                np.minimum.reduceat(xs, starts),
                np.minimum.reduceat(ys, starts),
                np.maximum.reduceat(xs, starts) + 1,
                np.maximum.reduceat(ys, starts) + 1,
            ],
            axis=1,
        ).astype(np.float32)
    label_ids = codes // 1000
    labels = _LABEL_OF_ID[np.minimum(label_ids, 255)] * (label_ids < 256)
    keep = labels > 0
    parts = [(boxes[keep], labels[keep], counts[keep].astype(np.int64))]
    bare = np.bincount(flat[flat < 256], minlength=256)
    for label_id in THING_LABEL_IDS:  # crowd: the connected regions of each bare thing id
        if bare[label_id]:
            n, _, stats, _ = cv2.connectedComponentsWithStats(
                (ids == label_id).astype(np.uint8), connectivity=8
            )
            x, y, w, h, area = stats[1:].T
            parts.append(
                (
                    np.stack([x, y, x + w, y + h], axis=1).astype(np.float32),
                    np.full(n - 1, _LABEL_OF_ID[label_id]),
                    area.astype(np.int64),
                )
            )
    crowd = np.concatenate([np.full(len(p[0]), i > 0) for i, p in enumerate(parts)])
    return (
        np.concatenate([p[0] for p in parts]).reshape(-1, 4),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        crowd,
    )


class CityscapesMultiTask(CityscapesSegmentation):
    """Cityscapes images with their train-id mask and thing boxes (see the module docstring).

    An item is ``(image, target)`` with ``target = {"mask", "boxes", "labels", "image_id",
    "orig_size"}``: crowd regions are left out of ``boxes``. With a ``transform`` built with
    boxes (``seg_train_transform(..., boxes=True)``) image, mask and boxes move together; with
    one without (``seg_eval_transform``) only image and mask go through it, and the boxes stay
    in original pixels. :attr:`coco` is the split's ground truth for pycocotools, crowd regions
    included; :attr:`ids` are the COCO image ids of the samples, in order.
    """

    decoded_cache_refused = (
        "the multi-task dataset reads the PNGs (the cache holds no instance ids)"
    )
    #: Detection label -> COCO category id (the Cityscapes label id).
    label_to_category_id = {k + 1: label_id for k, label_id in enumerate(THING_LABEL_IDS)}
    #: Detection label -> name (0: the background).
    class_names = ("__background__", *(_NAME_OF_ID[i] for i in THING_LABEL_IDS))
    _coco: COCO | None = None

    def _scan(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        samples, unpaired = super()._scan()
        # COCO image ids: positions in the scan, kept when validate() drops samples
        self._image_ids = {image: i + 1 for i, (image, _) in enumerate(samples)}
        return samples, unpaired

    @property
    def _boxes_follow(self) -> bool:
        """Whether the transform moves boxes (one built with ``boxes=True``)."""
        return "bboxes" in getattr(self.transform, "processors", {})

    @property
    def ids(self) -> list[int]:
        return [self._image_ids[image] for image, _ in self.samples]

    def _decode(self, index: int):
        image, train_ids = super()._decode(index)
        ids = self.instance_ids(index)
        if ids.shape != train_ids.shape:
            raise DataError(
                f"{self.instance_path(index)}: instance ids are {ids.shape[1]}x{ids.shape[0]} "
                f"(WxH) but the label {self.samples[index][1]} is "
                f"{train_ids.shape[1]}x{train_ids.shape[0]}; regenerate them"
            )
        return (image, train_ids, *instance_boxes(ids))

    def __getitem__(self, index: int):
        image, mask, boxes, labels, _, crowd = self.load(index)
        boxes, labels = boxes[~crowd], labels[~crowd]
        height, width = mask.shape
        if self.transform is not None:
            extra = {"bboxes": boxes, "labels": labels} if self._boxes_follow else {}
            out = self.transform(image=image, mask=mask, **extra)
            image, mask = out["image"], torch.as_tensor(out["mask"], dtype=torch.int64)
            if self._boxes_follow:
                boxes, labels = out["bboxes"], out["labels"]
        return image, {
            "mask": mask,
            "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "image_id": self._image_ids[self.samples[index][0]],
            "orig_size": (height, width),
        }

    @property
    def coco(self) -> COCO:
        """The split's boxes as a pycocotools ground truth (read once, from the instance files
        only), crowd regions with ``iscrowd=1``."""
        if self._coco is None:
            images, annotations = [], []
            for index, (image, _) in enumerate(self.samples):
                ids = self.instance_ids(index)
                height, width = ids.shape
                boxes, labels, areas, crowd = instance_boxes(ids)
                image_id = self._image_ids[image]
                images.append(
                    {"id": image_id, "file_name": image, "height": height, "width": width}
                )
                for box, label, area, is_crowd in zip(
                    boxes.tolist(), labels.tolist(), areas.tolist(), crowd.tolist(), strict=True
                ):
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": THING_LABEL_IDS[label - 1],
                            "area": area,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "iscrowd": int(is_crowd),
                        }
                    )
            coco = COCO()
            coco.dataset = {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": i, "name": _NAME_OF_ID[i]} for i in THING_LABEL_IDS],
            }
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            self._coco = coco
        return self._coco
