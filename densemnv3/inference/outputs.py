"""What ``densemnv3 predict`` writes for each image, and the files that gather them.

Under the output folder, each image's outputs mirror its path relative to the source
(``NAME`` = that path less its suffix):

- ``labels/NAME.png``: the label map (train ids; the dataset's label ids with ``label_ids``);
- ``overlays/NAME.jpg``: the image with the colours of its label map and/or its boxes;
- ``probs/NAME.npy``: per-pixel class probabilities ``(C, H, W)`` float16;
- ``txt/NAME.txt``: a line per box, ``class cx cy w h score`` (class: the model's label less
  one, as YOLO numbers them; the box normalised to the image);
- ``.records/NAME.json``: the image's size, time, boxes (COCO results) and classes, or why it
  was skipped; written last, so an image whose record and outputs exist is done.

:meth:`Outputs.gather` writes ``detections.json`` (COCO results), ``predictions.csv`` and
``skipped_files.txt`` from the records of every image of the source, whichever run (or shard)
made them. Every file is written whole or not at all (:func:`~densemnv3.utils.files.atomic_write`,
without ``fsync``: a killed run leaves no half-written file, and files are cheap to make again).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from densemnv3.data.classes import ClassList
from densemnv3.errors import UserError
from densemnv3.evaluation.segmentation import label_ids_from_train_ids
from densemnv3.utils.files import atomic_write, write_image, write_text

from .batch import Prediction
from .visualize import draw_detections, overlay_segmentation

__all__ = ["SAVE_KINDS", "FilePredictor", "Outputs", "default_save", "image_id"]

#: What ``--save`` can name, and the folder and suffix of each per-image kind.
SAVE_KINDS = ("labels", "overlays", "json", "txt", "probs")
_FILES = {"labels": ".png", "overlays": ".jpg", "txt": ".txt", "probs": ".npy"}
RECORDS = ".records"
#: Label PNGs: zlib's run-length strategy suits maps of a few large regions (as fast as the
#: default, smaller); overlays: JPEG quality 90.
_PNG = (cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)
_JPEG = (cv2.IMWRITE_JPEG_QUALITY, 90)


def default_save(task: str) -> tuple[str, ...]:
    """What is written when ``--save`` is not given: the label maps and the overlays, and the
    detections of a model that detects."""
    return {
        "segmentation": ("labels", "overlays"),
        "detection": ("overlays", "json"),
        "multitask": ("labels", "overlays", "json"),
    }[task]


def image_id(name: str, path: str, coco_ids: dict[str, int] | None) -> int | str:
    """A COCO ``image_id`` for the image at ``path`` named ``name`` (its path relative to the
    source, less the suffix): the id ``coco_ids`` gives that relative path or the file name,
    else the file's stem as a number when it is one (COCO's ``000000397133.jpg`` -> 397133),
    else the stem."""
    path = Path(path)
    if coco_ids is not None:
        relative = name if name.endswith(path.suffix) else f"{name}{path.suffix}"
        for key in (relative, path.name):
            if key in coco_ids:
                return coco_ids[key]
        raise UserError(
            f"--coco-ids: {path.name} is not among the file names of the COCO json; give the "
            f"json of these images, or leave --coco-ids out (ids from the file names)"
        )
    return int(path.stem) if path.stem.isdigit() else path.stem


class Outputs:
    """The outputs of ``save`` for a ``task`` under ``folder``, one image at a time.

    ``classes``: the segmentation classes, whose colours the overlays use (None: Cityscapes').
    ``label_ids``: label PNGs in the dataset's label ids (Cityscapes: what its official script
    reads), as ``eval_seg --save-predictions`` writes them. ``category``: a model label -> the
    COCO ``category_id`` of ``detections.json``. ``image_ids``: an image's (name, path) -> its
    COCO ``image_id``.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        save: Sequence[str],
        task: str,
        *,
        label_ids: bool = False,
        alpha: float = 0.5,
        classes: ClassList | None = None,
        category: Callable[[int], int] = int,
        image_ids: Callable[[str, str], int | str] = lambda name, path: image_id(name, path, None),
    ) -> None:
        self.folder = Path(folder)
        self.save = tuple(dict.fromkeys(save))
        unknown = [s for s in self.save if s not in SAVE_KINDS]
        if unknown:
            raise UserError(f"--save {unknown[0]}: choose from {', '.join(SAVE_KINDS)}")
        masks, boxes = task != "detection", task != "segmentation"
        wrong = [s for s in self.save if s in ("labels", "probs") and not masks] + [
            s for s in self.save if s in ("json", "txt") and not boxes
        ]
        if wrong:
            what = "label map" if wrong[0] in ("labels", "probs") else "boxes"
            raise UserError(f"--save {wrong[0]}: a {task} model has no {what} to save")
        self.task, self.label_ids, self.alpha = task, label_ids, alpha
        self.classes = classes
        self.category, self.image_ids = category, image_ids
        self.probabilities = "probs" in self.save

    def overlay(self, frame, labels):
        """``frame`` under the colours of ``labels`` (the classes' palette, else Cityscapes')."""
        if self.classes is None:
            return overlay_segmentation(frame, labels, self.alpha)
        c = self.classes
        return overlay_segmentation(frame, labels, self.alpha, c.colours(), c.ignore_index)

    def path(self, kind: str, name: str) -> Path:
        """Where output ``kind`` of image ``name`` goes."""
        folder = RECORDS if kind == "record" else kind
        return self.folder / folder / f"{name}{_FILES.get(kind, '.json')}"

    def done(self, name: str) -> bool:
        """Whether image ``name`` has its record and every output asked for."""
        record = self.path("record", name)
        if not record.is_file():
            return False
        files = [self.path(kind, name) for kind in self.save if kind in _FILES]
        return all(f.is_file() for f in files) and "skipped" not in _read(record)

    def write(self, prediction: Prediction, name: str) -> tuple[dict[str, Any], float, float]:
        """Write image ``name``'s outputs, then its record; the record, and the ms spent making
        the outputs (overlays, label ids, boxes: post-processing) and encoding and writing them."""
        start = time.perf_counter()
        if prediction.error is not None:
            record = {"path": os.fspath(prediction.path), "skipped": prediction.error}
            write_text(self.path("record", name), json.dumps(record), durable=False)
            return record, 0.0, 1000 * (time.perf_counter() - start)
        frame, result = prediction.frame, prediction.result
        labels = probs = detections = None
        if self.task == "segmentation" and not isinstance(result, dict):
            labels = result
        elif self.task == "detection":
            detections = result
        else:
            labels, probs = result.get("segmentation"), result.get("probabilities")
            detections = result.get("detections")
        height, width = frame.shape[:2]
        record = {"path": os.fspath(prediction.path), "width": width, "height": height}
        record["ms"] = round(prediction.network_ms, 2)
        files: dict[str, Any] = {}
        if "labels" in self.save:
            files["labels"] = label_ids_from_train_ids(labels) if self.label_ids else labels
        if "overlays" in self.save:
            drawn = frame.copy() if labels is None else self.overlay(frame, labels)
            files["overlays"] = drawn if detections is None else draw_detections(drawn, detections)
        if "txt" in self.save:
            files["txt"] = _yolo_lines(detections, width, height)
        if detections is not None:
            record["detections"] = self._coco(detections, name, record["path"])
            record["classes"] = sorted({int(label) for label in detections["labels"]})
        if labels is not None:  # the classes of the label map (a multi-task model's too)
            record["classes"] = np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist()
        made = time.perf_counter()
        for kind, value in files.items():
            if kind == "txt":
                write_text(self.path(kind, name), value, durable=False)
            else:
                params = _PNG if kind == "labels" else _JPEG
                write_image(self.path(kind, name), value, durable=False, params=params)
        if "probs" in self.save:
            with atomic_write(self.path("probs", name), durable=False) as tmp, open(tmp, "wb") as f:
                np.save(f, probs)
        write_text(self.path("record", name), json.dumps(record), durable=False)
        return record, 1000 * (made - start), 1000 * (time.perf_counter() - made)

    def _coco(self, detections: dict, name: str, path: str) -> list[dict]:
        image = self.image_ids(name, path)
        xyxy = np.asarray(detections["boxes"], np.float64).reshape(-1, 4)
        xywh = np.round(np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1), 2)
        return [
            {
                "image_id": image,
                "category_id": self.category(int(label)),
                "bbox": box,
                "score": round(float(score), 5),
            }  # fmt: skip
            for box, score, label in zip(xywh.tolist(), detections["scores"], detections["labels"])
        ]

    def gather(
        self, names: Sequence[str], class_names: Sequence[str] | None, summary: str
    ) -> dict[str, int]:
        """Write ``detections.json`` (when asked for), ``predictions.csv`` (a row per image done,
        then ``summary`` as a ``#`` line) and ``skipped_files.txt`` (only when a file was
        skipped) from the records of ``names``; the counts of images done, skipped and missing
        (not made yet: another shard's, or a run stopped early)."""
        rows, detections, skipped, missing = [], [], [], 0
        for name in names:
            record = _read(self.path("record", name))
            if record is None:
                missing += 1
            elif "skipped" in record:
                skipped.append(f"{record['path']}\t{record['skipped']}")
            else:
                rows.append(_csv_row(record, class_names))
                detections += record.get("detections", [])
        if "json" in self.save:
            write_text(self.folder / "detections.json", json.dumps(detections), durable=False)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["path", "width", "height", "ms", "boxes", "classes"])
        writer.writerows(rows)
        write_text(self.folder / "predictions.csv", f"{text.getvalue()}# {summary}\n")
        skipped_file = self.folder / "skipped_files.txt"
        if skipped:
            write_text(skipped_file, "\n".join(skipped) + "\n")
        else:
            skipped_file.unlink(missing_ok=True)
        return {"done": len(rows), "skipped": len(skipped), "missing": missing}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _csv_row(record: dict, class_names: Sequence[str] | None) -> list:
    name = lambda i: class_names[i] if class_names and i < len(class_names) else str(i)  # noqa: E731
    present = record["classes"]
    boxes = len(record["detections"]) if "detections" in record else ""
    classes = " ".join(re.sub(r"\s+", "_", name(i)) for i in present)
    return [record["path"], record["width"], record["height"], record["ms"], boxes, classes]


def _yolo_lines(detections: dict, width: int, height: int) -> str:
    lines = []
    for (x0, y0, x1, y1), score, label in zip(
        detections["boxes"], detections["scores"], detections["labels"]
    ):
        cx, cy, w, h = (
            (x0 + x1) / 2 / width,
            (y0 + y1) / 2 / height,
            (x1 - x0) / width,
            (y1 - y0) / height,
        )
        lines.append(f"{int(label) - 1} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f} {float(score):.5f}\n")
    return "".join(lines)


class FilePredictor:
    """Predicts image files and writes their outputs, a batch at a time: the class a Ray Data
    pipeline maps over a cluster's workers (``map_batches``; each worker builds it once, model
    loaded), or any scheduler that hands out lists of paths.

    ``__call__({"path": [...]})`` -> ``{"path": [...], "error": [...]}`` (``""`` where the image
    was written); names are the paths relative to ``root`` (default: the file names). ``kwargs``
    go to :meth:`Predictor.from_checkpoint <densemnv3.inference.Predictor.from_checkpoint>`.
    """

    def __init__(
        self,
        weights: str | os.PathLike,
        out: str | os.PathLike,
        *,
        config: str | os.PathLike | None = None,
        save: Sequence[str] | None = None,
        root: str | os.PathLike | None = None,
        label_ids: bool = False,
        **kwargs: Any,
    ) -> None:
        from .predictor import Predictor

        self.predictor = Predictor.from_checkpoint(weights, config, **kwargs)
        task = self.predictor.task
        self.outputs = Outputs(out, save or default_save(task), task, label_ids=label_ids)
        self.root = root

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from .batch import predict_files

        paths = [str(p) for p in batch["path"]]
        errors = []
        predictions = predict_files(
            self.predictor,
            paths,
            batch_size=len(paths),
            probabilities=self.outputs.probabilities,
        )
        for prediction in predictions:
            path = str(prediction.path)
            name = os.path.relpath(path, self.root) if self.root else Path(path).name
            self.outputs.write(prediction, os.path.splitext(name)[0])
            errors.append(prediction.error or "")
        return {"path": paths, "error": errors}
