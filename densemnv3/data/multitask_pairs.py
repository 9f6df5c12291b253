"""The multi-task model's data from two layouts of the same images: a segmentation dataset (any
``data.format``) and a detection one (``data.det_format``: COCO json, YOLO or VOC), their
samples matched by the image's file name without extension."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from densemnv3.data.checks import find_bad_samples
from densemnv3.data.coco import CocoDetection
from densemnv3.data.segmentation import SegmentationDataset
from densemnv3.errors import DataError

__all__ = ["PairedMultiTask"]


class PairedMultiTask(Dataset):
    """The images of ``seg`` that ``det`` also has (by file stem), each with its mask and boxes.

    Items are what :class:`~densemnv3.data.multitask.CityscapesMultiTask` gives: ``(image,
    target)`` with ``target = {"mask", "boxes", "labels", "image_id", "orig_size"}``, the boxes
    without crowd / difficult ones, moved with the image by a transform built with boxes. The
    ground truth for pycocotools is the detection dataset's (:attr:`coco`, :attr:`ids`). An image
    of one layout that the other lacks stops with its name, or with ``skip_bad`` is left out and
    listed in :attr:`bad_files`; a mask of another size than the detection layout records is an
    error of that sample.
    """

    official_scores = False

    def __init__(
        self, seg: SegmentationDataset, det: CocoDetection, transform=None, *, skip_bad=False
    ):
        self.seg, self.det, self.transform = seg, det, transform
        self.classes = seg.classes
        self.class_names = det.class_names
        self.label_to_category_id = det.label_to_category_id
        self.category_id_to_label = det.category_id_to_label
        self.coco = det.coco
        self.bad_files = seg.bad_files + det.bad_files
        by_stem: dict[str, int] = {}
        for image_id in det.ids:
            by_stem.setdefault(Path(det.coco.imgs[image_id]["file_name"]).stem, image_id)
        self._pairs: list[tuple[int, int]] = []  # (seg index, det image id)
        unpaired = []
        for index, (image, _) in enumerate(seg.samples):
            image_id = by_stem.pop(Path(image).stem, None)
            if image_id is None:
                unpaired.append((image, f"{image}: no boxes for it in {det.ann_file} (by name)"))
            else:
                self._pairs.append((index, image_id))
        unpaired += [
            (str(det.image_path(i)), f"{det.image_path(i)}: boxes in {det.ann_file}, but no mask")
            for i in by_stem.values()
        ]
        if unpaired and not skip_bad:
            more = f" (and {len(unpaired) - 1} more)" if len(unpaired) > 1 else ""
            raise DataError(
                f"{unpaired[0][1]}{more}; the multi-task data pairs the two layouts' images by "
                "file name: give both the same images, or skip unpaired ones with "
                "--set data.skip_bad=True"
            )
        self.bad_files += unpaired
        if not self._pairs:
            raise DataError(
                f"{seg.root} and {det.ann_file}: no image is in both; the multi-task data pairs "
                "them by file name"
            )

    @property
    def samples(self) -> list[tuple[str, str]]:
        return [self.seg.samples[i] for i, _ in self._pairs]

    @property
    def ids(self) -> list[int]:
        return [image_id for _, image_id in self._pairs]

    def __len__(self) -> int:
        return len(self._pairs)

    def stored_values(self, labels: np.ndarray) -> np.ndarray:
        return self.seg.stored_values(labels)

    def sample_id(self, index: int) -> str:
        return self.seg.sample_id(self._pairs[index][0])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image (HWC RGB), labels (HW), boxes (K, 4) xyxy pixels and their labels (K,)."""
        seg_index, image_id = self._pairs[index]
        image, mask = self.seg.load(seg_index)
        info = self.coco.imgs[image_id]
        if (info["height"], info["width"]) != mask.shape:
            raise DataError(
                f"{self.seg.samples[seg_index][0]}: {mask.shape[1]}x{mask.shape[0]} (WxH), but "
                f"{self.det.ann_file} says {info['width']}x{info['height']}; fix the one that "
                "is wrong"
            )
        boxes, labels = self.det._targets[image_id]
        return image, mask, boxes.copy(), labels.copy()

    def __getitem__(self, index: int):
        image, mask, boxes, labels = self.load(index)
        height, width = mask.shape
        if self.transform is not None:
            follow = "bboxes" in getattr(self.transform, "processors", {})
            extra = {"bboxes": boxes, "labels": labels} if follow else {}
            out = self.transform(image=image, mask=mask, **extra)
            image, mask = out["image"], torch.as_tensor(out["mask"], dtype=torch.int64)
            if follow:
                boxes, labels = out["bboxes"], out["labels"]
        return image, {
            "mask": mask,
            "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "image_id": self._pairs[index][1],
            "orig_size": (height, width),
        }

    def validate(self, progress: bool = True) -> list[tuple[str, str]]:
        """Decode and check every pair (see :meth:`SegmentationDataset.validate`)."""
        found = find_bad_samples(self.load, len(self), desc="checking", progress=progress)
        bad = [(self.samples[i][0], reason) for i, reason in found]
        if len(found) == len(self):
            raise DataError(f"{self.seg.root}: every sample is unreadable; the first: {bad[0][1]}")
        dropped = {i for i, _ in found}
        self._pairs = [p for i, p in enumerate(self._pairs) if i not in dropped]
        self.bad_files += bad
        return bad
