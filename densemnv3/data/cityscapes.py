"""Cityscapes semantic segmentation: ``leftImg8bit`` images paired with ``gtFine`` label ids."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from densemnv3.config import DataConfig
from densemnv3.data.classes import ClassList
from densemnv3.data.io import read_instance_ids
from densemnv3.data.labels import (
    CLASS_NAMES,
    ID_TO_TRAIN_ID,
    TRAIN_ID_PALETTE,
    TRAIN_ID_TO_ID,
    VALID_LABEL_IDS,
)
from densemnv3.data.segmentation import MaskTable, SegmentationDataset, pair_by_key
from densemnv3.errors import DataError

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
LAYOUT = (
    "expected ROOT/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png and "
    "ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png"
)
#: The 19 evaluated classes (train ids), the only class list of the layout.
CITYSCAPES_CLASSES = ClassList(
    CLASS_NAMES, TRAIN_ID_PALETTE[: len(CLASS_NAMES)], "Cityscapes' 19 evaluated classes"
)
_MASKS = MaskTable(
    ID_TO_TRAIN_ID,
    VALID_LABEL_IDS,
    "label ids {values} are not Cityscapes label ids (0-33); use the *_gtFine_labelIds.png "
    "files (not *_labelTrainIds.png or *_color.png)",
)


class CityscapesSegmentation(SegmentationDataset):
    """Cityscapes images with train-id targets (0-18, 255 = ignore): the label ids of
    ``*_gtFine_labelIds.png`` through the official table. See
    :class:`~densemnv3.data.segmentation.SegmentationDataset` for items, checks and caches."""

    layout = LAYOUT
    official_scores = True

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform=None,
        *,
        classes: ClassList = CITYSCAPES_CLASSES,
        **kwargs,
    ):
        if classes.names != CLASS_NAMES:
            raise DataError(
                f"{classes.source}: the Cityscapes layout has its own 19 classes (train ids); "
                "remove data.classes, or use data.format='folder' for other classes"
            )
        super().__init__(root, split, transform, classes=classes, **kwargs)

    @classmethod
    def class_list(cls, data: DataConfig) -> ClassList:
        if data.classes is not None and tuple(data.classes) != CLASS_NAMES:
            raise DataError(
                "data.classes: the Cityscapes layout has its own 19 classes (train ids); "
                "remove data.classes, or use data.format='folder' for other classes"
            )
        return CITYSCAPES_CLASSES

    def mask_table(self, classes: ClassList) -> MaskTable:
        return _MASKS

    def _scan(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        if not self.root.is_dir():
            raise DataError(
                f"{self.root}: Cityscapes root not found ({LAYOUT}); point the config at it with "
                "--set data.root=PATH, or make a synthetic set with "
                "python tools/make_synthetic.py --out PATH"
            )
        image_dir = self.root / "leftImg8bit" / self.split
        if not image_dir.is_dir():
            raise DataError(f"{image_dir}: split folder not found; {LAYOUT}")
        images = {self._key(p, IMAGE_SUFFIX): p for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}")}
        if not images:
            raise DataError(f"{image_dir}: no *{IMAGE_SUFFIX} images in the split; {LAYOUT}")
        label_dir = self.root / "gtFine" / self.split
        labels = {self._key(p, LABEL_SUFFIX): p for p in label_dir.glob(f"*/*{LABEL_SUFFIX}")}
        return pair_by_key(
            images,
            labels,
            lambda key: label_dir / key[0] / f"{key[1]}{LABEL_SUFFIX}",
            lambda key: image_dir / key[0] / f"{key[1]}{IMAGE_SUFFIX}",
        )

    @staticmethod
    def _key(path: Path, suffix: str) -> tuple[str, str]:
        return path.parent.name, path.name[: -len(suffix)]

    def stored_values(self, labels: np.ndarray) -> np.ndarray:
        """Train ids as label ids: what the official evaluation script reads."""
        return TRAIN_ID_TO_ID[labels]

    def sample_id(self, index: int) -> str:
        """``{city}_{seq}_{frame}`` of a sample, as the official evaluation's file names hold it."""
        return os.path.basename(self.samples[index][0])[: -len(IMAGE_SUFFIX)]

    def instance_path(self, index: int) -> Path:
        """The sample's ``*_gtFine_instanceIds.png``, beside its label."""
        return Path(self.samples[index][1][: -len(LABEL_SUFFIX)] + INSTANCE_SUFFIX)

    def missing_instance_ids(self) -> Path | None:
        """The first sample's instance-id file that is missing (None: every sample has one)."""
        return next((p for p in map(self.instance_path, range(len(self))) if not p.is_file()), None)

    def instance_ids(self, index: int) -> np.ndarray:
        """One sample's ``_instanceIds`` map (H, W), uint16: ``label id * 1000 + k`` on thing
        instances, plain label ids elsewhere."""
        path = self.instance_path(index)
        if not path.is_file():
            raise DataError(
                f"{path}: missing; instance ids are read from each label's "
                f"*{INSTANCE_SUFFIX} beside its *{LABEL_SUFFIX}"
            )
        ids = read_instance_ids(path, max_pixels=self.max_pixels)
        if ids.size and int(ids.max()) >= 34_000:
            raise DataError(
                f"{path}: instance id {int(ids.max())} names label id {int(ids.max()) // 1000}; "
                "Cityscapes' are 0-33 (label id * 1000 + k); use the *_gtFine_instanceIds.png files"
            )
        return ids
