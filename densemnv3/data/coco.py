"""COCO-format detection: images plus ``instances_*.json`` boxes, read with pycocotools."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from densemnv3.data.checks import find_bad_samples
from densemnv3.data.io import cached, read_image
from densemnv3.errors import ConfigError, DataError

LABEL_MAPPINGS = ("category_id", "contiguous")
_FIX = (
    "point the config at the data (--set data.root=PATH), or make a synthetic set with "
    "python tools/make_synthetic.py --out PATH (it writes PATH/annotations/instances_{train,val}.json)"
)


class CocoDetection(Dataset):
    """Images with their non-crowd boxes (xyxy pixels) and class labels.

    ``label_mapping="category_id"`` uses the category id as the label (torchvision's convention:
    ``num_classes`` is the largest id + 1); ``"contiguous"`` numbers the sorted category ids
    1..K. Label 0 is the background either way. With ``transform`` (albumentations, called as
    ``transform(image=, bboxes=, labels=)``) the image is a float32 CHW tensor and the boxes are
    in its pixels; without it, the uint8 HWC RGB image and boxes in original pixels. Boxes with
    no width or height after clipping to the image are dropped and listed in
    :attr:`dropped_boxes`. An image listed but missing stops the indexing with its file name, or
    with ``skip_bad`` is left out and recorded in :attr:`bad_files`; :meth:`validate` does the
    same for images that do not decode or check. A sample is never replaced by another. With
    ``cache`` each decoded image is kept in RAM after its first read: for small
    datasets (every loader worker holds its own copy).
    """

    def __init__(
        self,
        images_root: str | os.PathLike,
        ann_file: str | os.PathLike,
        transform: Callable | None = None,
        *,
        label_mapping: str = "category_id",
        skip_bad: bool = False,
        cache: bool = False,
    ):
        if label_mapping not in LABEL_MAPPINGS:
            raise ConfigError(
                f"label_mapping must be one of {LABEL_MAPPINGS}, got {label_mapping!r}"
            )
        self.images_root = Path(images_root)
        self.ann_file = Path(ann_file)
        self.transform = transform
        self.skip_bad = skip_bad
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self.bad_files: list[tuple[str, str]] = []
        self.coco = self._load_annotations()

        category_ids = sorted(self.coco.cats)
        if label_mapping == "category_id" and category_ids and category_ids[0] < 1:
            raise DataError(
                f"{self.ann_file}: category id {category_ids[0]} collides with the background "
                "label 0; use label_mapping='contiguous'"
            )
        if label_mapping == "contiguous":
            self.category_id_to_label = {cid: i + 1 for i, cid in enumerate(category_ids)}
        else:
            self.category_id_to_label = {cid: cid for cid in category_ids}
        self.label_to_category_id = {v: k for k, v in self.category_id_to_label.items()}
        num_labels = max(self.label_to_category_id, default=0) + 1
        self.class_names = ["__background__"] + ["N/A"] * (num_labels - 1)
        for label, cid in self.label_to_category_id.items():
            self.class_names[label] = self.coco.cats[cid]["name"]

        self.ids = self._existing_image_ids(sorted(self.coco.imgs))
        #: (annotation id, image file, box as given) of each box dropped for having no area
        self.dropped_boxes: list[tuple[int, str, list[float]]] = []
        self._targets = {image_id: self._boxes_and_labels(image_id) for image_id in self.ids}

    @property
    def num_classes(self) -> int:
        """Number of classifier outputs, background included."""
        return len(self.class_names)

    def _load_annotations(self) -> COCO:
        if not self.ann_file.is_file():
            raise DataError(f"{self.ann_file}: annotation file not found; {_FIX}")
        if not self.images_root.is_dir():
            raise DataError(f"{self.images_root}: images folder not found; {_FIX}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                coco = COCO(str(self.ann_file))
        except (ValueError, KeyError, TypeError, AssertionError) as error:
            raise DataError(
                f"{self.ann_file}: not a COCO instances file ({type(error).__name__}: {error}); "
                "it needs 'images', 'annotations' and 'categories'"
            ) from error
        if not coco.imgs:
            raise DataError(f"{self.ann_file}: no images listed; the split is empty")
        unknown = {a["category_id"] for a in coco.anns.values()} - set(coco.cats)
        if unknown:
            raise DataError(
                f"{self.ann_file}: annotations use category ids {sorted(unknown)} that are not "
                "in 'categories'"
            )
        return coco

    def _existing_image_ids(self, image_ids: list[int]) -> list[int]:
        listings: dict[Path, set[str]] = {}
        kept = []
        for image_id in image_ids:
            path = self.image_path(image_id)
            if path.parent not in listings:
                listings[path.parent] = (
                    set(os.listdir(path.parent)) if path.parent.is_dir() else set()
                )
            if path.name in listings[path.parent]:
                kept.append(image_id)
                continue
            reason = f"{path}: image listed in {self.ann_file} not found under {self.images_root}"
            if not self.skip_bad:
                raise DataError(f"{reason}; check data.root, or set skip_bad to skip it")
            self.bad_files.append((str(path), reason))
        if not kept:
            raise DataError(f"{self.ann_file}: none of its images exist under {self.images_root}")
        return kept

    def image_path(self, image_id: int) -> Path:
        return self.images_root / self.coco.imgs[image_id]["file_name"]

    def _boxes_and_labels(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        info = self.coco.imgs[image_id]
        anns = [a for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, info["width"])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, info["height"])
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        self.dropped_boxes += [(a["id"], str(self.image_path(image_id)), a["bbox"])
                               for a, kept in zip(anns, keep) if not kept]
        labels = np.array(
            [self.category_id_to_label[a["category_id"]] for a in anns], dtype=np.int64
        )
        return boxes[keep], labels[keep]

    def __len__(self) -> int:
        return len(self.ids)

    def validate(self, progress: bool = True) -> list[tuple[str, str]]:
        """Decode and check every image; drop the bad ones from :attr:`ids`, record them in
        :attr:`bad_files` and return them as (image path, reason). Reads only."""
        found = find_bad_samples(self._load, len(self), desc=f"checking {self.ann_file.name}",
                                 progress=progress)
        bad = [(str(self.image_path(self.ids[i])), reason) for i, reason in found]
        dropped = {i for i, _ in found}
        if len(dropped) == len(self):
            raise DataError(f"{self.ann_file}: every image is unreadable; the first: {bad[0][1]}")
        self.ids = [image_id for i, image_id in enumerate(self.ids) if i not in dropped]
        self.bad_files += bad
        return bad

    def _decode(self, image_id: int) -> np.ndarray:
        """The uint8 HWC RGB image, checked against the size the annotations give."""
        info = self.coco.imgs[image_id]
        path = self.image_path(image_id)
        image = read_image(path)
        if image.shape[:2] != (info["height"], info["width"]):
            raise DataError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} (WxH) but {self.ann_file} "
                f"says {info['width']}x{info['height']}; fix the annotation file"
            )
        return image

    def _load(self, index: int) -> np.ndarray:
        image_id = self.ids[index]
        return cached(self._cache, image_id, lambda: self._decode(image_id))

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        image = self._load(index)
        boxes, labels = self._targets[image_id]
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, labels=labels)
            image, boxes, labels = out["image"], out["bboxes"], out["labels"]
        target = {
            "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "image_id": image_id,
            "orig_size": (info["height"], info["width"]),
        }
        return image, target


def detection_collate(batch):
    """Stack same-size image tensors; keep targets as a list of dicts."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)
