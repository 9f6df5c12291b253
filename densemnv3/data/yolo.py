"""YOLO (ultralytics) detection datasets, read as COCO in memory: see
:mod:`densemnv3.data.detection_formats`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from densemnv3.data.detection_formats import BuiltCocoDetection, SampleFault
from densemnv3.data.io import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, image_size
from densemnv3.errors import DataError, did_you_mean

__all__ = ["YoloDetection"]

_YAML_NAMES = ("data.yaml", "dataset.yaml")
_EDGE_TOLERANCE = 1e-6
_YOLO_LINE = "each line is 'class cx cy w h', the box's centre and size normalised to [0, 1]"


class YoloDetection(BuiltCocoDetection):
    """An ultralytics dataset: ``root`` is its YAML file or a folder holding ``data.yaml`` (or
    ``dataset.yaml``); ``split`` is the YAML key (``train``, ``val``, ``test``) giving image
    folders or ``.txt`` lists of image paths, relative to the YAML's ``path``. Each image's labels
    are at its path with the last ``/images/`` made ``/labels/`` and the suffix ``.txt``; none,
    or an empty file: a background image. Category id = the YOLO class (0..K-1), label = class + 1.
    ``classes`` (``data.classes``) renames the YAML's ``names``, as many of them.
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
        self.yaml_file = _find_yaml(Path(root))
        config = _read_yaml(self.yaml_file)
        for key in ("names", split):
            if config.get(key) is None:
                raise DataError(
                    f"{self.yaml_file}: no {key!r} key{did_you_mean(key, map(str, config))}; a "
                    "YOLO dataset YAML gives 'names' and the image folders or lists of its "
                    "splits ('train', 'val')"
                )
        self.split = split
        self.names = _yolo_names(config, self.yaml_file, classes)
        base = config.get("path") or ""
        self.dataset_root = self.yaml_file.parent / str(base)
        if not self.dataset_root.is_dir():
            raise DataError(
                f"{self.yaml_file}: its 'path' {self.dataset_root} is not a folder; give the "
                "dataset's root, absolute or relative to the YAML file"
            )
        sources = config[split]
        self._sources = sources if isinstance(sources, list) else [sources]
        super().__init__(
            self.dataset_root,
            self.yaml_file,
            transform,
            label_mapping="contiguous",
            skip_bad=skip_bad,
            cache=cache,
            max_pixels=max_pixels,
        )

    def _image_paths(self) -> dict[Path, Path]:
        """Each image of the split and the folder or list that gave it."""
        found: dict[Path, Path] = {}
        for source in self._sources:
            where = self.dataset_root / str(source)
            if where.suffix == ".txt" and where.is_file():
                try:
                    lines = where.read_text(encoding="utf-8").splitlines()
                except (OSError, UnicodeDecodeError) as error:
                    raise DataError(f"{where}: cannot read the image list ({error})") from error
                images = [self.dataset_root / line.strip() for line in lines if line.strip()]
            elif where.is_dir():
                images = [p for p in where.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
            else:
                raise DataError(
                    f"{self.yaml_file}: the {self.split!r} folder or list {where} does not exist; "
                    f"fix '{self.split}' (relative to 'path', {self.dataset_root})"
                )
            if not images:
                raise DataError(
                    f"{where}: no images in {self.split!r} of {self.yaml_file} (image "
                    f"suffixes: {', '.join(sorted(IMAGE_SUFFIXES))}); add them or fix the YAML"
                )
            found.update((image, where) for image in images if image not in found)
        return found

    def _build(self) -> tuple[list[dict], list[dict], list[dict]]:
        sources = self._image_paths()
        named = sorted((_relative(path, self.dataset_root), path) for path in sources)
        images, annotations = [], []
        for image_id, (file_name, path) in enumerate(named, 1):
            try:
                if not path.is_file():
                    raise SampleFault(
                        f"{path}: image listed in {sources[path]} not found", "fix the list"
                    )
                try:
                    width, height = image_size(path)
                except DataError as error:
                    raise SampleFault(
                        str(error).split("; ")[0], "fix or remove the image"
                    ) from error
                boxes = _yolo_boxes(_label_path(path), len(self.names))
            except SampleFault as fault:
                self._fault(path, fault)
                continue
            images.append(
                {"id": image_id, "file_name": file_name, "width": width, "height": height}
            )
            annotations += [
                {
                    "image_id": image_id,
                    "category_id": cls,
                    "bbox": [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height],
                    "iscrowd": 0,
                }
                for cls, cx, cy, w, h in boxes
            ]
        categories = [{"id": i, "name": name} for i, name in enumerate(self.names)]
        return images, annotations, categories


def _find_yaml(root: Path) -> Path:
    if root.is_file():
        return root
    found = next((root / name for name in _YAML_NAMES if (root / name).is_file()), None)
    if found is None:
        raise DataError(
            f"{root}: no YOLO dataset YAML (neither a file nor a folder holding "
            f"{' or '.join(_YAML_NAMES)}); point data.root at the dataset's YAML"
        )
    return found


def _read_yaml(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise DataError(f"{path}: cannot read the dataset YAML ({error})") from error
    if not isinstance(config, dict):
        raise DataError(f"{path}: not a YOLO dataset YAML (expected a mapping of keys)")
    return config


def _yolo_names(config: dict, path: Path, classes: Sequence[str] | None) -> tuple[str, ...]:
    names = config["names"]
    if isinstance(names, dict):
        keys = list(names)
        if not all(type(k) is int for k in keys) or sorted(keys) != list(range(len(keys))):
            raise DataError(
                f"{path}: 'names' has keys {keys}; number the classes 0, 1, ... without gaps"
            )
        names = [names[i] for i in range(len(keys))]
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: 'names' must be a non-empty list or {{0: name, ...}} mapping")
    names = tuple(str(n) for n in names)
    if "nc" in config and config["nc"] != len(names):
        raise DataError(f"{path}: 'nc' is {config['nc']} but 'names' lists {len(names)} classes")
    if classes is None:
        return names
    if len(classes) != len(names):
        raise DataError(
            f"data.classes gives {len(classes)} names but {path} has {len(names)} classes; "
            "give one name per class, in class-index order, or leave data.classes unset"
        )
    return tuple(str(c) for c in classes)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # listed outside the dataset root: kept absolute
        return str(path.absolute())


def _label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` of the path made ``/labels/``, suffix ``.txt``."""
    head, sep, tail = str(image).rpartition(f"{os.sep}images{os.sep}")
    return Path(f"{head}{os.sep}labels{os.sep}{tail}" if sep else str(image)).with_suffix(".txt")


def _yolo_boxes(label: Path, num_classes: int) -> list[tuple[int, float, float, float, float]]:
    """The boxes of a label file (none when it does not exist); a :class:`SampleFault` naming the
    file and line for the first line that is not a valid box."""
    if not label.is_file():
        return []
    try:
        text = label.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SampleFault(f"{label}: cannot read the label file ({error})", _YOLO_LINE) from error
    boxes = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{label}, line {number}"
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 5:
            raise SampleFault(f"{where}: {line.strip()!r} is not 5 numbers", _YOLO_LINE)
        cls, cx, cy, w, h = values
        if not (cls.is_integer() and 0 <= cls < num_classes):
            raise SampleFault(
                f"{where}: class {parts[0]} is not one of the {num_classes} classes "
                f"(0-{num_classes - 1})",
                "fix the class index, or the YAML's 'names'",
            )
        if not all(0 <= v <= 1 for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
            raise SampleFault(
                f"{where}: box {' '.join(parts[1:])} is not in [0, 1] with a positive size",
                f"{_YOLO_LINE} (pixels divided by the image's width and height)",
            )
        edges = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if min(edges) < -_EDGE_TOLERANCE or max(edges) > 1 + _EDGE_TOLERANCE:
            raise SampleFault(
                f"{where}: box outside the image (edges x {edges[0]:g}..{edges[2]:g}, "
                f"y {edges[1]:g}..{edges[3]:g})",
                "clip the box to the image, [0, 1]",
            )
        boxes.append((int(cls), cx, cy, w, h))
    return boxes
