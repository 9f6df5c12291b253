"""Segmentation layouts besides Cityscapes: a folder of images and masks, Pascal VOC, ADE20K.

Each is a :class:`~densemnv3.data.segmentation.SegmentationDataset` that finds its pairs and says
how its mask values become labels; class names come from
:func:`~densemnv3.data.classes.read_classes` (the config, ``classes.txt`` / ``classes.json``, or
the format's standard list).
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

import numpy as np

from densemnv3.config import DataConfig
from densemnv3.data.classes import ClassList, default_palette, read_classes
from densemnv3.data.io import IMAGE_SUFFIXES
from densemnv3.data.labels import ADE20K_CLASSES, VOC_CLASSES
from densemnv3.data.segmentation import MaskTable, SegmentationDataset, pair_by_key
from densemnv3.errors import DataError

__all__ = ["ADE20K", "FolderSegmentation", "VocSegmentation", "dataset_classes"]


def dataset_classes(data: DataConfig, default: ClassList | None = None) -> ClassList:
    """The class list of the config's dataset (:func:`read_classes` over ``data.root``)."""
    return read_classes(
        data.root,
        classes=data.classes,
        palette=data.palette,
        default=default,
        ignore_index=data.ignore_index,
    )


def _files(folder: Path) -> dict[str, Path]:
    """Image files under ``folder`` (recursively) by their path relative to it, less the
    extension; two files with one such name are an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in found:
            raise DataError(
                f"{path}: {found[key].name} has the same name; keep one file per name in {folder}"
            )
        found[key] = path
    return found


def _split_list(path: Path) -> list[str]:
    """The names a split list file holds: one per line, ``#`` comments and blanks skipped,
    extensions dropped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the split list ({error})") from error
    names = [line.split("#", 1)[0].strip() for line in lines]
    names = [n.split()[0] for n in names if n]  # "name" or VOC Main's "name  1"
    return [
        n[: -len(Path(n).suffix)] if Path(n).suffix.lower() in IMAGE_SUFFIXES else n for n in names
    ]


class FolderSegmentation(SegmentationDataset):
    """Images and masks matched by name: ``ROOT/images/SPLIT/**`` with ``ROOT/masks/SPLIT/**``
    (the same relative path, any image extension), or, without split folders, the names listed
    in ``ROOT/SPLIT.txt`` under ``ROOT/images`` and ``ROOT/masks``. Masks hold class indices
    0..K-1 and the ignore value (single-channel or palette PNGs), or RGB colours of the
    palette (black: ignore, when no class is black)."""

    layout = (
        "expected ROOT/images/SPLIT/NAME.jpg|png... with ROOT/masks/SPLIT/NAME.png, or "
        "ROOT/images/NAME.* and ROOT/masks/NAME.png with the split's names in ROOT/SPLIT.txt"
    )

    @classmethod
    def class_list(cls, data: DataConfig) -> ClassList:
        return dataset_classes(data)

    def mask_table(self, classes: ClassList) -> MaskTable:
        return MaskTable.identity(classes)

    def _scan(self):
        images_dir, masks_dir = self.root / "images", self.root / "masks"
        if not images_dir.is_dir() or not masks_dir.is_dir():
            missing = images_dir if not images_dir.is_dir() else masks_dir
            raise DataError(f"{missing}: folder not found; {self.layout}")
        if (images_dir / self.split).is_dir():
            images_dir, masks_dir = images_dir / self.split, masks_dir / self.split
            images, masks = _files(images_dir), _files(masks_dir)
        else:
            listed = self.root / f"{self.split}.txt"
            if not listed.is_file():
                raise DataError(
                    f"{self.root}: split {self.split!r} has neither a folder "
                    f"{images_dir / self.split} nor a list {listed}; {self.layout}"
                )
            names = set(_split_list(listed))
            images = {k: p for k, p in _files(images_dir).items() if k in names}
            masks = {k: p for k, p in _files(masks_dir).items() if k in names}
            missing = sorted(names - images.keys() - masks.keys())
            if missing:
                raise DataError(
                    f"{listed}: {missing[0]!r} has no image in {images_dir} and no mask in "
                    f"{masks_dir}" + (f" ({len(missing)} such names)" if len(missing) > 1 else "")
                )
        if not images:
            raise DataError(f"{images_dir}: no images of split {self.split!r}; {self.layout}")
        return pair_by_key(
            images,
            masks,
            lambda key: masks_dir / f"{key}.png",
            lambda key: images_dir / f"{key}.jpg",
        )


VOC_DEFAULT = ClassList(VOC_CLASSES, default_palette(len(VOC_CLASSES)), "Pascal VOC's 21 classes")


class VocSegmentation(SegmentationDataset):
    """Pascal VOC 2012: ``ROOT/JPEGImages/NAME.jpg``, masks ``ROOT/SegmentationClass/NAME.png``
    (palette PNGs: the pixel is the class index, 255 the object border, ignored), the split's
    names in ``ROOT/ImageSets/Segmentation/SPLIT.txt``. With SBD's ``SegmentationClassAug``
    beside it (``train_aug``), a name without a ``SegmentationClass`` mask takes that one."""

    layout = (
        "expected ROOT/JPEGImages/NAME.jpg, ROOT/SegmentationClass/NAME.png (or "
        "SegmentationClassAug) and the split's names in ROOT/ImageSets/Segmentation/SPLIT.txt"
    )

    @classmethod
    def class_list(cls, data: DataConfig) -> ClassList:
        return dataset_classes(data, VOC_DEFAULT)

    def mask_table(self, classes: ClassList) -> MaskTable:
        return MaskTable.identity(classes)

    def _scan(self):
        listed = self.root / "ImageSets" / "Segmentation" / f"{self.split}.txt"
        if not listed.is_file():
            raise DataError(f"{listed}: split list not found; {self.layout}")
        names = _split_list(listed)
        images_dir = self.root / "JPEGImages"
        if not images_dir.is_dir():
            raise DataError(f"{images_dir}: folder not found; {self.layout}")
        by_name = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        mask_dirs = [self.root / "SegmentationClass", self.root / "SegmentationClassAug"]
        images: dict[Hashable, Path] = {n: by_name[n] for n in names if n in by_name}
        masks: dict[Hashable, Path] = {}
        for name in names:
            found = next(
                (d / f"{name}.png" for d in mask_dirs if (d / f"{name}.png").is_file()), None
            )
            if found is not None:
                masks[name] = found
        unlisted = [n for n in names if n not in images and n not in masks]
        if unlisted:
            raise DataError(
                f"{listed}: {unlisted[0]!r} has no image in {images_dir} and no mask in "
                f"{mask_dirs[0]}" + (f" ({len(unlisted)} such names)" if len(unlisted) > 1 else "")
            )
        return pair_by_key(
            images,
            masks,
            lambda name: mask_dirs[0] / f"{name}.png",
            lambda name: images_dir / f"{name}.jpg",
        )


ADE20K_DEFAULT = ClassList(
    ADE20K_CLASSES, default_palette(len(ADE20K_CLASSES)), "ADE20K's 150 classes"
)
#: ADE20K's split folders by the split names configs use.
ADE20K_SPLITS = {"train": "training", "val": "validation"}


class ADE20K(SegmentationDataset):
    """ADEChallengeData2016 (SceneParsing): ``ROOT/images/training/NAME.jpg`` with
    ``ROOT/annotations/training/NAME.png`` (``validation`` for ``val``); a mask value k is class
    k-1, 0 ("other") is ignored."""

    layout = (
        "expected ROOT/images/{training,validation}/NAME.jpg and "
        "ROOT/annotations/{training,validation}/NAME.png (ADEChallengeData2016)"
    )

    @classmethod
    def class_list(cls, data: DataConfig) -> ClassList:
        return dataset_classes(data, ADE20K_DEFAULT)

    def mask_table(self, classes: ClassList) -> MaskTable:
        k = len(classes)
        lut = np.full(256, classes.ignore_index, np.uint8)
        lut[1 : k + 1] = np.arange(k)
        valid = np.zeros(256, bool)
        valid[: k + 1] = True
        fix = (
            f"mask values {{values}} are above ADE20K's {k} classes (1-{k}, class k-1; 0 = "
            f"other, ignored; from {classes.source}); fix the masks or the class list"
        )
        return MaskTable(lut, valid, fix)

    def stored_values(self, labels: np.ndarray) -> np.ndarray:
        """Class k as k+1, ignored pixels as 0 ("other")."""
        return np.where(labels == self.classes.ignore_index, 0, labels + 1).astype(np.uint8)

    def _scan(self):
        folder = ADE20K_SPLITS.get(self.split, self.split)
        images_dir = self.root / "images" / folder
        masks_dir = self.root / "annotations" / folder
        if not images_dir.is_dir():
            raise DataError(f"{images_dir}: split folder not found; {self.layout}")
        images = _files(images_dir)
        if not images:
            raise DataError(f"{images_dir}: no images of split {self.split!r}; {self.layout}")
        return pair_by_key(
            images,
            _files(masks_dir) if masks_dir.is_dir() else {},
            lambda key: masks_dir / f"{key}.png",
            lambda key: images_dir / f"{key}.jpg",
        )
