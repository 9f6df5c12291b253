"""Pascal VOC detection datasets, read as COCO in memory: see
:mod:`densemnv3.data.detection_formats`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree

from densemnv3.data.classes import ClassList, read_classes
from densemnv3.data.detection_formats import BuiltCocoDetection, SampleFault
from densemnv3.data.io import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS
from densemnv3.data.labels import VOC_CLASSES
from densemnv3.errors import DataError, did_you_mean

__all__ = ["VOC_DETECTION_CLASSES", "VOC_DETECTION_CLASSES_LIST", "VocDetection"]

#: Pascal VOC's 20 detection classes (its segmentation classes less the background);
#: category id = position + 1.
VOC_DETECTION_CLASSES: tuple[str, ...] = VOC_CLASSES[1:]
VOC_DETECTION_CLASSES_LIST = ClassList(VOC_DETECTION_CLASSES, None, "Pascal VOC's 20 classes")


class VocDetection(BuiltCocoDetection):
    """Pascal VOC: ``ROOT/Annotations/STEM.xml``, ``ROOT/JPEGImages/STEM.<ext>`` and the split's
    stems in ``ROOT/ImageSets/Main/{split}.txt`` (missing: every xml, sorted). Classes from
    ``classes`` (``data.classes``), ``ROOT/classes.txt``/``classes.json`` or VOC's 20, a leading
    ``background`` dropped; category id = label = position + 1. A ``difficult`` object is a crowd
    box: left out of the training targets, and detections matched to it are ignored by COCOeval.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transform=None,
        *,
        classes: Sequence[str] | None = None,
        skip_bad: bool = False,
        cache: bool = False,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ):
        root = Path(root)
        for folder in ("Annotations", "JPEGImages"):
            if not (root / folder).is_dir():
                raise DataError(
                    f"{root / folder}: folder not found; a Pascal VOC dataset has "
                    "ROOT/Annotations/*.xml, ROOT/JPEGImages/ and ROOT/ImageSets/Main/SPLIT.txt"
                )
        self.split = split
        class_list = read_classes(root, classes=classes, default=VOC_DETECTION_CLASSES_LIST)
        names = class_list.names
        if names[0].lower() in ("background", "__background__"):
            names = names[1:]
        if not names:
            raise DataError(f"{class_list.source}: no class but the background")
        self.names, self.classes_source = names, class_list.source
        super().__init__(
            root,
            root / "Annotations",
            transform,
            label_mapping="contiguous",
            skip_bad=skip_bad,
            cache=cache,
            max_pixels=max_pixels,
        )

    def _stems(self) -> tuple[list[str], Path]:
        listing = self.images_root / "ImageSets" / "Main" / f"{self.split}.txt"
        if listing.is_file():
            lines = listing.read_text(encoding="utf-8").splitlines()
            stems = list(dict.fromkeys(line.split()[0] for line in lines if line.strip()))
        else:
            listing = self.ann_file
            stems = sorted(p.stem for p in self.ann_file.glob("*.xml"))
        if not stems:
            raise DataError(f"{listing}: no images listed for split {self.split!r}")
        return stems, listing

    def _build(self) -> tuple[list[dict], list[dict], list[dict]]:
        stems, listing = self._stems()
        pictures: dict[str, Path] = {}
        for path in sorted((self.images_root / "JPEGImages").iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                pictures.setdefault(path.stem, path)
        category = {name: i for i, name in enumerate(self.names, 1)}
        images, annotations = [], []
        for image_id, stem in enumerate(stems, 1):
            xml, path = self.ann_file / f"{stem}.xml", pictures.get(stem)
            try:
                if not xml.is_file():
                    raise SampleFault(
                        f"{xml}: not found (listed in {listing})", "add it or unlist it"
                    )
                if path is None:
                    raise SampleFault(
                        f"{self.images_root / 'JPEGImages'}: no image {stem}.* for {xml}",
                        "add the image or unlist it",
                    )
                width, height, objects = _read_voc_xml(xml, category, self.classes_source)
            except SampleFault as fault:
                self._fault(path or xml, fault)
                continue
            file_name = path.relative_to(self.images_root).as_posix()
            images.append(
                {"id": image_id, "file_name": file_name, "width": width, "height": height}
            )
            annotations += [
                {"image_id": image_id, "category_id": cid, "bbox": box, "iscrowd": crowd}
                for cid, box, crowd in objects
            ]
        categories = [{"id": cid, "name": name} for name, cid in category.items()]
        return images, annotations, categories


def _number(element: ElementTree.Element, path: str) -> int | float | None:
    try:
        value = float(element.findtext(path) or "")
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return int(value) if value.is_integer() else value


def _read_voc_xml(
    xml: Path, category: dict[str, int], source: str
) -> tuple[int | float, int | float, list[tuple[int, list[float], int]]]:
    """Size and ``(category id, COCO bbox, iscrowd)`` of each object of a VOC annotation file."""
    try:
        top = ElementTree.parse(xml).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise SampleFault(
            f"{xml}: malformed XML ({error})", "fix or regenerate the file"
        ) from error
    width, height = _number(top, "size/width"), _number(top, "size/height")
    if width is None or height is None or width <= 0 or height <= 0:
        raise SampleFault(
            f"{xml}: XML without size (size/width and size/height, positive pixels)",
            "add <size><width>W</width><height>H</height></size>",
        )
    objects = []
    for number, obj in enumerate(top.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        what = f"{xml}: object {number} ({name!r})"
        if name not in category:
            raise SampleFault(
                f"{what}: not in the class list ({source}){did_you_mean(name, category)}",
                "fix the name, or give the classes (data.classes or ROOT/classes.txt)",
            )
        difficult = _number(obj, "difficult") if obj.find("difficult") is not None else 0
        if difficult not in (0, 1):
            raise SampleFault(f"{what}: 'difficult' is not 0 or 1", "write 0 or 1")
        box = [_number(obj, f"bndbox/{key}") for key in ("xmin", "ymin", "xmax", "ymax")]
        if None in box:
            raise SampleFault(
                f"{what}: its bndbox lacks a number among xmin, ymin, xmax, ymax",
                "give each object a <bndbox> with the four, in 1-based pixels",
            )
        xmin, ymin, xmax, ymax = box
        if xmax < xmin or ymax < ymin:
            raise SampleFault(f"{what}: bndbox with xmax < xmin or ymax < ymin", "fix the box")
        # 1-based inclusive pixels -> COCO [x, y, w, h], as detectron2 reads VOC
        bbox = [float(xmin - 1), float(ymin - 1), float(xmax - xmin + 1), float(ymax - ymin + 1)]
        objects.append((category[name], bbox, int(difficult)))
    return width, height, objects
