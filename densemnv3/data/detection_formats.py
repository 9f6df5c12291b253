"""Detection datasets in other layouts than COCO json, read as COCO in memory.

:class:`BuiltCocoDetection` builds a split's COCO instances dict (its subclasses'
:meth:`~BuiltCocoDetection._build`), checks it with :func:`check_coco` and indexes it with
pycocotools; everything else (labels, dropped boxes, :meth:`validate`, ``skip_bad``, evaluation
with COCOeval through ``dataset.coco`` and ``dataset.ids``) is :class:`CocoDetection`'s. A faulty
image (a bad label line, an unknown class, an unreadable header) is one :class:`DataError` naming
the file and line, or with ``skip_bad`` is left out and listed in ``bad_files``. The layouts:
:class:`~densemnv3.data.yolo.YoloDetection` (ultralytics) and
:class:`~densemnv3.data.voc_detection.VocDetection` (Pascal VOC).
"""

from __future__ import annotations

import contextlib
import io
import os

from pycocotools.coco import COCO

from densemnv3.data.coco import CocoDetection, check_coco
from densemnv3.errors import DataError

__all__ = ["BuiltCocoDetection", "SampleFault"]


class SampleFault(Exception):
    """One image's problem: ``args`` = (reason naming the file and line, what to do)."""


class BuiltCocoDetection(CocoDetection):
    """:class:`CocoDetection` over a COCO dict that :meth:`_build` makes from another layout."""

    split: str

    def _build(self) -> tuple[list[dict], list[dict], list[dict]]:
        """The split's COCO ``images``, ``annotations`` (without ``id`` and ``area``: numbered
        and measured here) and ``categories``; each faulty image passed to :meth:`_fault`."""
        raise NotImplementedError

    def _fault(self, image: str | os.PathLike, fault: SampleFault) -> None:
        reason, fix = fault.args
        if not self.skip_bad:
            raise DataError(f"{reason}; {fix}, or set data.skip_bad=True to leave the image out")
        self.bad_files.append((str(image), reason))

    def _load_annotations(self) -> COCO:
        images, annotations, categories = self._build()
        if not images:
            first = f"; the first: {self.bad_files[0][1]}" if self.bad_files else ""
            raise DataError(f"{self.ann_file}: no usable image in split {self.split!r}{first}")
        for number, ann in enumerate(annotations, 1):
            ann.update(id=number, area=ann["bbox"][2] * ann["bbox"][3])
        data = {"images": images, "annotations": annotations, "categories": categories}
        check_coco(data, self.ann_file)
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco
