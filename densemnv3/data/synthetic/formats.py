"""Convert a synthetic Cityscapes + COCO set into the other dataset layouts the toolkit reads.

A pure conversion of the files already written: the images are byte copies of the source PNGs and
the masks hold the same pixels (train ids, :data:`~densemnv3.data.labels.ID_TO_TRAIN_ID` of the
label ids), so metrics computed on any layout agree. Stems are the Cityscapes ones
(``{city}_{seq}_{frame}``); ``split`` is ``train`` or ``val``.

- ``cityscapes``, ``coco``: what :func:`make_synthetic` writes (``coco`` is the same tree: it
  carries ``annotations/instances_{split}.json``).
- ``folder``: ``images/{split}/{stem}.png``, ``masks/{split}/{stem}.png`` (train ids, 255 =
  ignore), ``classes.json`` (the 19 names and their Cityscapes colours).
- ``voc``: ``JPEGImages/{stem}.png``, ``SegmentationClass/{stem}.png`` (palette PNG of train ids,
  Pascal VOC's colour map), ``Annotations/{stem}.xml`` (boxes, 1-based inclusive),
  ``ImageSets/{Segmentation,Main}/{split}.txt``, ``classes.txt``.
- ``ade20k``: ``images/{training,validation}/{stem}.png``, ``annotations/...`` (train id + 1,
  0 = ignore), ``classes.txt``.
- ``yolo``: ``images/{split}/{stem}.png``, ``labels/{split}/{stem}.txt`` (``class cx cy w h``,
  normalised; class = index of the category in the sorted COCO ids), ``data.yaml``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import cv2
import numpy as np

from densemnv3.data.classes import default_palette
from densemnv3.data.labels import CLASS_NAMES, ID_TO_TRAIN_ID, IGNORE_INDEX, TRAIN_ID_PALETTE
from densemnv3.errors import ConfigError, DataError, UserError, did_you_mean
from densemnv3.utils.files import (
    WriteError,
    atomic_write,
    disk_error,
    storage_problem,
    write_image,
    write_text,
)

FORMATS = ("cityscapes", "folder", "voc", "ade20k", "coco", "yolo")
SPLITS = ("train", "val")
_ADE_SPLITS = {"train": "training", "val": "validation"}
#: label id -> ADE20K's value: train id + 1, 0 for the ignored labels
_ADE_LUT = np.where(ID_TO_TRAIN_ID == IGNORE_INDEX, 0, ID_TO_TRAIN_ID.astype(np.int64) + 1)
_ADE_LUT = _ADE_LUT.astype(np.uint8)
_SUFFIX = "_leftImg8bit.png"
#: the files of a layout written once per split ({split} filled in), beside the per-image ones
_SET_FILES = {
    "cityscapes": ("annotations/instances_{split}.json",),
    "folder": ("classes.json",),
    "voc": ("classes.txt", "ImageSets/Segmentation/{split}.txt", "ImageSets/Main/{split}.txt"),
    "ade20k": ("classes.txt",),
    "yolo": ("data.yaml",),
}


class _Item(NamedTuple):
    split: str
    stem: str
    image: Path  # the source RGB PNG
    labels: Path  # the source label-id PNG
    info: dict  # its COCO image entry
    anns: list[dict]


def check_format(fmt: str) -> str:
    """The layout ``fmt`` names (``coco`` is ``cityscapes``); :class:`ConfigError` if unknown."""
    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown dataset format {fmt!r}{did_you_mean(str(fmt), FORMATS)}; "
            f"choose one of {', '.join(FORMATS)}"
        )
    return "cityscapes" if fmt == "coco" else fmt


def write_format(src: str | os.PathLike, out: str | os.PathLike, fmt: str) -> Path:
    """Write the synthetic Cityscapes + COCO set at ``src`` in layout ``fmt`` under ``out``.

    ``cityscapes``/``coco`` return ``src`` when ``out`` is ``src``, else copy the tree. The other
    layouts need another folder; files of the same name there are replaced.
    """
    layout, src, out = check_format(fmt), Path(src), Path(out)
    same = out.resolve() == src.resolve()
    if layout == "cityscapes":
        if not same:
            skip = shutil.ignore_patterns(".in_progress", ".*.tmp")
            shutil.copytree(src, out, ignore=skip, dirs_exist_ok=True)
        return out
    if same:
        raise UserError(f"{out}: write the {fmt} layout to another folder than its source")
    items, categories = _read_source(src)
    _convert(layout, items, categories, out)
    return out


def image_files(fmt: str, split: str, city: str, stem: str) -> tuple[str, ...]:
    """The files (relative POSIX paths) layout ``fmt`` writes for one image: the image first."""
    layout = check_format(fmt)
    if layout == "cityscapes":
        label = f"gtFine/{split}/{city}/{stem}_gtFine"
        image = f"leftImg8bit/{split}/{city}/{stem}{_SUFFIX}"
        return image, f"{label}_labelIds.png", f"{label}_instanceIds.png", f"{label}_color.png"
    if layout == "voc":
        return f"JPEGImages/{stem}.png", f"SegmentationClass/{stem}.png", f"Annotations/{stem}.xml"
    part = _ADE_SPLITS[split] if layout == "ade20k" else split
    second = {"folder": "masks/{}.png", "ade20k": "annotations/{}.png", "yolo": "labels/{}.txt"}
    return f"images/{part}/{stem}.png", second[layout].format(f"{part}/{stem}")


def layout_files(fmt: str, stems: dict[str, list[tuple[str, str]]]) -> set[str]:
    """All the files of layout ``fmt`` for ``stems`` (split -> [(city, stem)]), relative."""
    layout = check_format(fmt)
    files = {name.format(split=split) for name in _SET_FILES[layout] for split in stems}
    for split, pairs in stems.items():
        files.update(*(image_files(layout, split, city, stem) for city, stem in pairs))
    return files


def remove_layout(out: Path, fmt: str) -> None:
    """Remove the folders and files at the top of ``out`` that layout ``fmt`` writes (none for a
    format this version does not know)."""
    if fmt not in FORMATS:
        return
    example = layout_files(fmt, {split: [("city", "stem")] for split in SPLITS})
    for name in {path.split("/")[0] for path in example}:
        if (out / name).is_dir():
            shutil.rmtree(out / name, ignore_errors=True)
        else:
            (out / name).unlink(missing_ok=True)


def convert_generated(out: Path, fmt: str, generate: Callable[[Path], Path], hint: str) -> None:
    """Generate a Cityscapes set with ``generate(folder)`` in a temporary sibling of ``out``, then
    convert it into ``out``; the temporary folder is removed whatever happens. A full disk is a
    :class:`WriteError` (ending with ``hint``) once the files of ``fmt`` in ``out`` are removed."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".cityscapes", dir=out.parent))
    try:
        write_format(generate(tmp), out, fmt)
    except BaseException as err:
        storage = disk_error(err)
        if storage is None and not isinstance(err, WriteError):
            raise
        remove_layout(out, fmt)
        if isinstance(err, WriteError):
            raise
        raise WriteError(f"{out}: cannot write, {storage_problem(storage)}; {hint}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def describe_format(out: str | os.PathLike, fmt: str) -> dict:
    """Images per split and boxes per class (``{}`` for the layouts without boxes: folder, ade20k)
    of a converted set, as :func:`describe` reports a Cityscapes set."""
    layout, out, summary = check_format(fmt), Path(out), {}
    for split in SPLITS:
        names = []
        if layout == "voc":
            stems = (out / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
            for stem in stems:
                tree = ET.parse(out / "Annotations" / f"{stem}.xml")
                names += [obj.findtext("name") for obj in tree.iterfind("object")]
        else:
            part = _ADE_SPLITS[split] if layout == "ade20k" else split
            stems = sorted(path.stem for path in (out / "images" / part).glob("*.png"))
        if layout == "yolo":
            import yaml

            classes = yaml.safe_load((out / "data.yaml").read_text())["names"]
            for stem in stems:
                lines = (out / "labels" / split / f"{stem}.txt").read_text().splitlines()
                names += [classes[int(line.split()[0])] for line in lines]
        instances = {name: names.count(name) for name in dict.fromkeys(names)}
        summary[split] = {"images": len(stems), "instances": instances}
    return summary


def _read_source(src: Path) -> tuple[list[_Item], list[dict]]:
    items: list[_Item] = []
    categories: dict[int, dict] = {}
    for split in SPLITS:
        path = src / "annotations" / f"instances_{split}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(
                f"{path}: cannot read it ({err}); give the folder of a set make_synthetic wrote"
            ) from None
        categories.update((cat["id"], cat) for cat in data["categories"])
        anns: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            anns.setdefault(ann["image_id"], []).append(ann)
        for info in data["images"]:
            parts = PurePosixPath(info["file_name"]).parts
            if (
                len(parts) != 4
                or parts[:2] != ("leftImg8bit", split)
                or not parts[3].endswith(_SUFFIX)
            ):
                raise DataError(f"{path}: {info['file_name']} is not a Cityscapes image path")
            stem = parts[3][: -len(_SUFFIX)]
            labels = src / "gtFine" / split / parts[2] / f"{stem}_gtFine_labelIds.png"
            image = src / info["file_name"]
            items.append(_Item(split, stem, image, labels, info, anns.get(info["id"], [])))
    stems = [item.stem for item in items]
    if len(set(stems)) != len(stems):
        raise DataError(f"{src}: two images share a stem; the layouts name files by stem")
    return items, [categories[k] for k in sorted(categories)]


def _convert(layout: str, items: list[_Item], categories: list[dict], out: Path) -> None:
    names = {cat["id"]: cat["name"] for cat in categories}
    index = {cat["id"]: k for k, cat in enumerate(categories)}
    palette = default_palette(256).ravel().tolist()
    for item in items:
        files = [out / name for name in image_files(layout, item.split, "", item.stem)]
        with atomic_write(files[0]) as tmp:
            shutil.copyfile(item.image, tmp)  # the PNG's bytes, not re-encoded
        if layout == "yolo":
            _lines(files[1], _yolo_lines(item, index))
            continue
        labels = cv2.imread(str(item.labels), cv2.IMREAD_UNCHANGED)
        if labels is None or labels.ndim != 2 or labels.dtype != np.uint8:
            raise DataError(f"{item.labels}: missing or not a single-channel 8-bit label-id PNG")
        if layout == "ade20k":
            write_image(files[1], _ADE_LUT[labels])
        elif layout == "folder":
            write_image(files[1], ID_TO_TRAIN_ID[labels])
        else:
            with atomic_write(files[1]) as tmp:
                tmp.write_bytes(_palette_png(ID_TO_TRAIN_ID[labels], palette))
            write_text(files[2], _voc_xml(item, names))
    if layout == "folder":
        palette = TRAIN_ID_PALETTE[: len(CLASS_NAMES)].tolist()
        write_text(out / "classes.json", json.dumps({"classes": CLASS_NAMES, "palette": palette}))
    elif layout == "yolo":
        import yaml  # here, not above: only the yolo layout needs PyYAML

        data = {"path": ".", "train": "images/train", "val": "images/val"}
        data["names"] = {k: cat["name"] for k, cat in enumerate(categories)}
        write_text(out / "data.yaml", yaml.safe_dump(data, sort_keys=False))
    else:
        _lines(out / "classes.txt", CLASS_NAMES)
    if layout == "voc":
        for split in SPLITS:
            stems = sorted(item.stem for item in items if item.split == split)
            for kind in ("Segmentation", "Main"):
                _lines(out / "ImageSets" / kind / f"{split}.txt", stems)


def _lines(path: Path, lines) -> None:
    write_text(path, "".join(f"{line}\n" for line in lines))


def _palette_png(train: np.ndarray, palette: list[int]) -> bytes:
    """A PIL mode "P" PNG: pixel = train id, colours = ``palette``."""
    from PIL import Image  # here, not above, as in data.io: only the voc layout needs PIL

    image = Image.frombytes("P", (train.shape[1], train.shape[0]), train.tobytes())
    image.putpalette(palette)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _number(value: float) -> str:
    """``value`` exactly: an int when integral, else ``repr`` (round-trips the float)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _voc_xml(item: _Item, names: dict[int, str]) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "synthetic"
    ET.SubElement(root, "filename").text = f"{item.stem}.png"
    size = ET.SubElement(root, "size")
    for key, value in (("width", item.info["width"]), ("height", item.info["height"])):
        ET.SubElement(size, key).text = str(int(value))
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "1"
    for ann in item.anns:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = names[ann["category_id"]]
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if ann.get("iscrowd") else "0"
        box = ET.SubElement(obj, "bndbox")
        x, y, w, h = (float(v) for v in ann["bbox"])
        for key, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, key).text = _number(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _yolo_lines(item: _Item, index: dict[int, int]) -> list[str]:
    """``class cx cy w h`` per non-crowd box, normalised, floats with ``repr`` precision."""
    width, height = float(item.info["width"]), float(item.info["height"])
    lines = []
    for ann in item.anns:
        if ann.get("iscrowd"):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)
        lines.append(" ".join([str(index[ann["category_id"]]), *map(repr, box)]))
    return lines
