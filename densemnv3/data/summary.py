"""What a dataset holds, before anyone trains on it: images per split and their sizes, the share
of each class's pixels or its box count and box sizes, and every problem found (``data check``).

Works on any dataset of the toolkit: a segmentation one (its masks), a detection one (its COCO
ground truth, built in memory for YOLO and VOC) or the multi-task one (both).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from densemnv3.errors import DataError

#: Box-size bins (the square root of the box's area, in pixels), and COCO's small/medium/large.
BOX_SIZE_EDGES = (0, 8, 16, 32, 64, 96, 128, 256, 512, math.inf)


@dataclass
class DataSummary:
    """Counts over one split. ``pixels[c]``: pixels of class c (segmentation; None without
    masks); ``boxes[c]``: boxes of detection label c (None without boxes); ``crowd``: boxes marked
    crowd / difficult (not trained on, ignored in AP); ``problems``: (file, reason)."""

    split: str
    images: int
    sizes: Counter = field(default_factory=Counter)
    class_names: Sequence[str] = ()
    pixels: np.ndarray | None = None
    ignored_pixels: int = 0
    box_names: Sequence[str] = ()
    boxes: np.ndarray | None = None
    crowd: int = 0
    box_sizes: Counter = field(default_factory=Counter)
    problems: list[tuple[str, str]] = field(default_factory=list)
    #: The samples that loaded, by index.
    good: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The summary as the ``data check`` table prints it."""
        out = [f"split {self.split!r}: {self.images} images"]
        common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(5))
        more = f" and {len(self.sizes) - 5} other sizes" if len(self.sizes) > 5 else ""
        out.append(f"image sizes (WxH): {common}{more}")
        if self.pixels is not None:
            total = int(self.pixels.sum()) + self.ignored_pixels
            width = max([len("(ignored)"), *(len(n) for n in self.class_names)])
            out += ["", f"{'class':<{width}} | {'pixels':>7}"]
            shares = [*(self.pixels / max(total, 1)), self.ignored_pixels / max(total, 1)]
            for name, share in zip([*self.class_names, "(ignored)"], shares, strict=True):
                out.append(f"{name:<{width}} | {100 * share:6.2f}%")
        if self.boxes is not None:
            width = max([len("(crowd/difficult)"), *(len(n) for n in self.box_names)])
            out += ["", f"{'class':<{width}} | {'boxes':>7}"]
            out += [f"{n:<{width}} | {int(c):>7}" for n, c in zip(self.box_names, self.boxes)]
            out.append(f"{'(crowd/difficult)':<{width}} | {self.crowd:>7}")
            out += ["", "box sizes (sqrt of area, pixels): " + self.box_size_line()]
        out.append("")
        if self.problems:
            out.append(f"{len(self.problems)} problems:")
            out += [f"  {reason}" for _, reason in self.problems]
        else:
            out.append("no problems found")
        return out

    def box_size_line(self) -> str:
        bins = zip(BOX_SIZE_EDGES[:-1], BOX_SIZE_EDGES[1:])
        return ", ".join(
            f"{lo}-{hi if hi != math.inf else ''}: {self.box_sizes.get(lo, 0)}" for lo, hi in bins
        )


def summarize(dataset, split: str, *, progress: bool = True) -> DataSummary:
    """Read every sample of ``dataset`` (built with ``skip_bad=True``, so that its layout's
    problems are listed in ``bad_files`` rather than raised) and count what it holds."""
    summary = DataSummary(split, len(dataset), problems=list(dataset.bad_files))
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        summary.class_names = classes.names
        summary.pixels = np.zeros(len(classes), np.int64)
    good = summary.good
    for index, result in _read_all(dataset, progress):
        if isinstance(result, str):
            summary.problems.append((dataset_file(dataset, index), result))
            continue
        good.append(index)
        summary.sizes[result[0]] += 1
        if summary.pixels is not None:
            counts = result[1]
            summary.pixels += counts[: len(classes)]
            summary.ignored_pixels += int(counts[classes.ignore_index])
    coco = getattr(dataset, "coco", None)
    if coco is not None:
        _count_boxes(summary, dataset, coco)
    return summary


def dataset_file(dataset, index: int) -> str:
    """The image file of sample ``index``."""
    if hasattr(dataset, "samples"):
        return str(dataset.samples[index][0])
    return str(dataset.image_path(dataset.ids[index]))


def _read_all(dataset, progress: bool):
    """``(index, ((width, height), per-value pixel counts or None))`` per sample, or
    ``(index, reason)`` for one that does not load."""

    def read(index: int):
        try:
            loaded = dataset.load(index) if hasattr(dataset, "load") else dataset[index]
        except DataError as error:
            return str(error)
        image = loaded[0]
        size = (int(image.shape[1]), int(image.shape[0]))
        if getattr(dataset, "classes", None) is None:
            return size, None
        return size, np.bincount(np.asarray(loaded[1]).ravel(), minlength=256)

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        results = pool.map(read, range(len(dataset)))
        yield from enumerate(
            tqdm(results, total=len(dataset), desc="reading", disable=None if progress else True)
        )


def _count_boxes(summary: DataSummary, dataset, coco) -> None:
    to_label = getattr(dataset, "category_id_to_label", None) or {
        cid: label for label, cid in dataset.label_to_category_id.items()
    }
    names = getattr(dataset, "class_names", None) or [
        f"class {i}" for i in range(max(to_label.values()) + 1)
    ]
    summary.box_names = list(names)[1:]
    summary.boxes = np.zeros(len(summary.box_names), np.int64)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=list(dataset.ids))):
        if ann.get("iscrowd", 0):
            summary.crowd += 1
            continue
        label = to_label.get(ann["category_id"])
        if label is None or not 0 < label <= len(summary.boxes):
            continue
        summary.boxes[label - 1] += 1
        w, h = ann["bbox"][2:]
        side = math.sqrt(max(w, 0) * max(h, 0))
        lo = max(e for e in BOX_SIZE_EDGES[:-1] if e <= side)
        summary.box_sizes[lo] += 1
    for ann_id, file, box in getattr(dataset, "dropped_boxes", []):
        summary.problems.append(
            (file, f"{file}: annotation {ann_id} box {box} has no area inside the image")
        )
