"""COCO-format detection: images plus ``instances_*.json`` boxes, read with pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from densemnv3.data.checks import find_bad_samples
from densemnv3.data.io import MAX_IMAGE_PIXELS, cached, read_image
from densemnv3.errors import ConfigError, DataError

LABEL_MAPPINGS = ("category_id", "contiguous")
_FIX = (
    "point the config at the data (--set data.root=PATH), or make a synthetic set with python "
    "tools/make_synthetic.py --out PATH (it writes PATH/annotations/instances_{train,val}.json)"
)
#: The keys a COCO instances file needs, and those each entry of its lists needs.
_FIELDS = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}
_LAYOUT = (
    "a COCO instances file is an object with the lists 'images', 'annotations' and 'categories'"
)
_NUMBER = (int, float)


def load_coco(ann_file: str | os.PathLike) -> COCO:
    """Read a COCO instances file, check it with :func:`check_coco`, and index exactly what was
    checked with pycocotools (its ``COCO(path)`` would re-read the file, unchecked)."""
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as error:
        raise DataError(
            f"{ann_file}: not a COCO instances file ({type(error).__name__}: {error}); {_LAYOUT}"
        ) from error
    try:
        check_coco(data, ann_file)
    except TypeError as error:  # an id that is a list or an object: unhashable
        raise DataError(
            f"{ann_file}: not a COCO instances file ({error}); ids are integers"
        ) from error
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def check_coco(data: object, ann_file: str | os.PathLike) -> None:
    """Raise one :class:`DataError` naming ``ann_file``, the id or key at fault and the fix for
    the first problem of a parsed COCO instances file: a missing key or entry field, an id that
    is not an integer or is listed twice (images, annotations, categories), an annotation whose
    ``image_id`` or ``category_id`` is not listed, a ``bbox`` that is not 4 numbers, no images.
    One pass over each list with sets: cheap beside reading the json. A box that is merely empty
    or outside its image is not an error here (the dataset drops it)."""
    if not isinstance(data, dict):
        raise DataError(
            f"{ann_file}: not a COCO instances file (its top level is a "
            f"{type(data).__name__}); {_LAYOUT}"
        )
    for key, fields in _FIELDS.items():
        entries = data.get(key)
        if not isinstance(entries, list):
            found = "is missing" if key not in data else f"is a {type(entries).__name__}"
            raise DataError(
                f"{ann_file}: the '{key}' key {found}; {_LAYOUT}: fix the file or write it again"
            )
        need = frozenset(fields)
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not entry.keys() >= need:
                have = entry.keys() if isinstance(entry, dict) else ()
                missing = [f for f in fields if f not in have]
                raise DataError(
                    f"{ann_file}: {key}[{i}] has no {', '.join(map(repr, missing))}; "
                    f"each entry of '{key}' needs {', '.join(map(repr, fields))}"
                )
    images, annotations, categories = data["images"], data["annotations"], data["categories"]
    if not images:
        raise DataError(f"{ann_file}: no images listed; the split is empty")
    image_ids = _unique_ids(ann_file, "image", images, "file_name ", lambda i, e: e["file_name"])
    _unique_ids(
        ann_file,
        "annotation",
        annotations,
        "",
        lambda i, e: f"annotations[{i}] on image id {e['image_id']}",
    )
    category_ids = _unique_ids(ann_file, "category", categories, "name ", lambda i, e: e["name"])
    for image in images:
        name, width, height = image["file_name"], image["width"], image["height"]
        if not isinstance(name, str):
            raise DataError(
                f"{ann_file}: image id {image['id']} has file_name {name!r}; a "
                "file_name is a string, the image's path under the images folder"
            )
        if not (type(width) in _NUMBER and type(height) in _NUMBER and width > 0 and height > 0):
            raise DataError(
                f"{ann_file}: image id {image['id']} ({name}) has width {width!r} and "
                f"height {height!r}; both must be positive numbers, its size in pixels"
            )
    references = (  # what an annotation refers to, the ids listed, how an error words it
        (
            "image_id",
            image_ids,
            "refers to image id",
            "'images' does not list",
            "list the image or remove its annotations",
        ),
        (
            "category_id",
            category_ids,
            "has category id",
            f"'categories' does not list (it lists {sorted(category_ids)})",
            "add the category or fix the annotation",
        ),
    )
    for key, known, has, unlisted, fix in references:
        unknown = {a[key] for a in annotations} - known
        if unknown:
            ann = next(a for a in annotations if a[key] in unknown)
            raise DataError(
                f"{ann_file}: annotation id {ann['id']} {has} {ann[key]!r}, which {unlisted}"
                f"{_in_all(unknown)}; {fix}"
            )
    for ann in annotations:
        box = ann["bbox"]
        if not (type(box) is list and len(box) == 4 and all(type(v) in _NUMBER for v in box)):
            raise DataError(
                f"{ann_file}: annotation id {ann['id']} has bbox {box!r}; a bbox is "
                "[x, y, width, height], 4 numbers in pixels"
            )


def _in_all(unknown: set) -> str:
    return f" ({len(unknown)} such ids in all)" if len(unknown) > 1 else ""


def _unique_ids(
    ann_file: str | os.PathLike,
    what: str,
    entries: list[dict],
    label: str,
    name: Callable[[int, dict], str],
) -> set[int]:
    """The set of the entries' integer ``id``s; a DataError for the first non-integer or repeat,
    naming the entries with ``label`` and ``name(index, entry)``."""
    ids = [entry["id"] for entry in entries]
    unique = set(ids) if all(type(i) is int for i in ids) else None
    if unique is not None and len(unique) == len(ids):
        return unique
    seen: dict[int, int] = {}
    for index, entry in enumerate(entries):
        key = entry["id"]
        if type(key) is not int:
            raise DataError(
                f"{ann_file}: {what} id {key!r} ({label}{name(index, entry)}) is not "
                "an integer; COCO ids are integers"
            )
        if key in seen:
            first = seen[key]
            raise DataError(
                f"{ann_file}: {what} id {key} is listed twice ({label}"
                f"{name(first, entries[first])} and {name(index, entry)}); give each "
                f"{what} its own id"
            )
        seen[key] = index
    raise AssertionError("unreachable")


class CocoDetection(Dataset):
    """Images with their non-crowd boxes (xyxy pixels) and class labels.

    ``label_mapping="category_id"`` uses the category id as the label (torchvision's convention:
    ``num_classes`` is the largest id + 1); ``"contiguous"`` numbers the sorted category ids
    1..K. Label 0 is the background either way. With ``transform`` (albumentations, called as
    ``transform(image=, bboxes=, labels=)``) the image is a float32 CHW tensor and the boxes are
    in its pixels; without it, the uint8 HWC RGB image and boxes in original pixels. Boxes with
    no width or height after clipping to the image are dropped and listed in
    :attr:`dropped_boxes`. The annotation file is checked first (:func:`check_coco`: a fault is
    an error, ``skip_bad`` or not), and a split without a usable box is one too. An image listed
    but missing stops the indexing with its file name, or with ``skip_bad`` is left out and
    recorded in :attr:`bad_files`; :meth:`validate` does the same for images that do not decode
    or check, or whose header declares more than ``max_pixels`` pixels (a file is never decoded
    past that). A sample is never replaced by another. With
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
        max_pixels: int = MAX_IMAGE_PIXELS,
    ):
        if label_mapping not in LABEL_MAPPINGS:
            raise ConfigError(
                f"label_mapping must be one of {LABEL_MAPPINGS}, got {label_mapping!r}"
            )
        self.images_root = Path(images_root)
        self.ann_file = Path(ann_file)
        self.transform = transform
        self.skip_bad = skip_bad
        self.max_pixels = max_pixels
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
        self._require_boxes()

    @property
    def num_classes(self) -> int:
        """Number of classifier outputs, background included."""
        return len(self.class_names)

    def _load_annotations(self) -> COCO:
        if not self.ann_file.is_file():
            raise DataError(f"{self.ann_file}: annotation file not found; {_FIX}")
        if not self.images_root.is_dir():
            raise DataError(f"{self.images_root}: images folder not found; {_FIX}")
        return load_coco(self.ann_file)

    def _require_boxes(self) -> None:
        """A DataError when no image listed and found has a usable box: nothing to train on, and
        AP is undefined (COCOeval's -1)."""
        if any(len(self._targets[image_id][0]) for image_id in self.ids):
            return
        if not any(not a.get("iscrowd", 0) for a in self.coco.anns.values()):
            reason = "no annotations"
        else:
            reason = (
                "no usable boxes (each non-crowd box has no width or height inside its image, "
                "or is on an image left out)"
            )
        raise DataError(
            f"{self.ann_file}: {reason}: nothing to train on, and AP is undefined "
            "without boxes; add boxes to 'annotations', or point the config "
            "(data.train_ann / data.val_ann) at a file that has them"
        )

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
        self.dropped_boxes += [
            (a["id"], str(self.image_path(image_id)), a["bbox"])
            for a, kept in zip(anns, keep)
            if not kept
        ]
        labels = np.array(
            [self.category_id_to_label[a["category_id"]] for a in anns], dtype=np.int64
        )
        return boxes[keep], labels[keep]

    def __len__(self) -> int:
        return len(self.ids)

    def validate(self, progress: bool = True) -> list[tuple[str, str]]:
        """Decode and check every image; drop the bad ones from :attr:`ids`, record them in
        :attr:`bad_files` and return them as (image path, reason). Reads only."""
        found = find_bad_samples(
            self._load, len(self), desc=f"checking {self.ann_file.name}", progress=progress
        )
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
        image = read_image(path, max_pixels=self.max_pixels)
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
