"""Cityscapes semantic segmentation: ``leftImg8bit`` images paired with ``gtFine`` label ids."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from densemnv3.data.cache import DecodedCache
from densemnv3.data.checks import find_bad_samples
from densemnv3.data.io import MAX_IMAGE_PIXELS, cached, read_image, read_instance_ids, read_label
from densemnv3.data.labels import ID_TO_TRAIN_ID, VALID_LABEL_IDS
from densemnv3.errors import ConfigError, DataError

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
LAYOUT = (
    "expected ROOT/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png and "
    "ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png"
)
_INVALID = (~VALID_LABEL_IDS).astype(np.uint8)  # cv2.LUT table: 1 for ids outside the table


class CityscapesSegmentation(Dataset):
    """Cityscapes images with train-id targets (0-18, 255 = ignore).

    With ``transform`` (an albumentations pipeline called as ``transform(image=, mask=)``) an
    item is a float32 CHW image tensor and an int64 HW target tensor; without it, the uint8 HWC
    RGB image and the uint8 HW train ids at the original size. An image without a label or a
    label without an image stops the indexing with its file name, or with ``skip_bad`` is left
    out and recorded in :attr:`bad_files`; :meth:`validate` does the same for pairs that do not
    decode or check, or whose header declares more than ``max_pixels`` pixels (a file is never
    decoded past that). A sample is never replaced by another. With ``cache`` each decoded pair is
    kept in RAM after its first read: for small datasets (every loader worker holds its own
    copy). With ``decoded_cache`` (a folder written by ``tools/cache_dataset.py``, see
    :mod:`densemnv3.data.cache`) pairs are memory-mapped from the cache instead of decoded: the
    same bytes, read-only, and only the pixels a transform touches are read.
    """

    #: Why this dataset cannot read a ``decoded_cache`` (a subclass that decodes more than the
    #: cache holds); None: it can.
    decoded_cache_refused: str | None = None

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        *,
        skip_bad: bool = False,
        cache: bool = False,
        decoded_cache: str | os.PathLike | None = None,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ):
        if decoded_cache is not None and self.decoded_cache_refused is not None:
            raise ConfigError(f"data.decoded_cache: {self.decoded_cache_refused}; set it to None")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.skip_bad = skip_bad
        self.max_pixels = max_pixels
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None
        self.bad_files: list[tuple[str, str]] = []
        self.samples: list[tuple[str, str]] = self._scan()
        self._decoded = (
            None
            if decoded_cache is None
            else DecodedCache(decoded_cache, self.root, split, self.samples)
        )

    def _scan(self) -> list[tuple[str, str]]:
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
        samples, unpaired = [], []
        for key in sorted(images.keys() | labels.keys()):
            image, label = images.get(key), labels.get(key)
            if image is not None and label is not None:
                samples.append((str(image), str(label)))
            elif label is None:
                expected = label_dir / key[0] / f"{key[1]}{LABEL_SUFFIX}"
                unpaired.append(
                    (str(image), f"{image}: image without a label ({expected} is missing)")
                )
            else:
                expected = image_dir / key[0] / f"{key[1]}{IMAGE_SUFFIX}"
                unpaired.append(
                    (str(label), f"{label}: label without an image ({expected} is missing)")
                )
        if unpaired and not self.skip_bad:
            more = f" (and {len(unpaired) - 1} more)" if len(unpaired) > 1 else ""
            raise DataError(
                f"{unpaired[0][1]}{more}; {LAYOUT}, or skip unpaired files with "
                "--set data.skip_bad=True"
            )
        self.bad_files += unpaired
        if not samples:
            raise DataError(f"{image_dir}: no image of the split has a label; {LAYOUT}")
        return samples

    @staticmethod
    def _key(path: Path, suffix: str) -> tuple[str, str]:
        return path.parent.name, path.name[: -len(suffix)]

    def __len__(self) -> int:
        return len(self.samples)

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

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode and check one pair: uint8 HWC RGB image and uint8 HW train ids (read-only
        memory maps when the decoded cache is on)."""
        if self._decoded is not None:
            return self._decoded.load(self.samples[index][0])
        return cached(self._cache, self.samples[index][0], lambda: self._decode(index))

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.samples[index]
        image = read_image(image_path, max_pixels=self.max_pixels)
        label = read_label(label_path, max_pixels=self.max_pixels)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"{label_path}: label is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]}; regenerate the label"
            )
        if cv2.countNonZero(cv2.LUT(label, _INVALID)):
            invalid = np.unique(label[~VALID_LABEL_IDS[label]])
            raise DataError(
                f"{label_path}: label ids {invalid.tolist()} are not Cityscapes label ids (0-33); "
                "use the *_gtFine_labelIds.png files (not *_labelTrainIds.png or *_color.png)"
            )
        return image, cv2.LUT(label, ID_TO_TRAIN_ID)

    def __getitem__(self, index: int):
        image, target = self.load(index)
        if self.transform is None:
            if self._decoded is not None:  # the caller owns what it gets, not a read-only map
                image, target = np.array(image), np.array(target)
            return image, target
        out = self.transform(image=image, mask=target)
        return out["image"], torch.as_tensor(out["mask"], dtype=torch.int64)

    def validate(self, progress: bool = True) -> list[tuple[str, str]]:
        """Decode and check every pair; drop the bad ones from :attr:`samples`, record them in
        :attr:`bad_files` and return them as (image path, reason). Reads only."""
        found = find_bad_samples(
            self.load, len(self), desc=f"checking {self.split}", progress=progress
        )
        bad = [(self.samples[i][0], reason) for i, reason in found]
        dropped = {i for i, _ in found}
        if len(dropped) == len(self):
            raise DataError(
                f"{self.root}: every sample of split {self.split!r} is unreadable; "
                f"the first: {bad[0][1]}"
            )
        self.samples = [sample for i, sample in enumerate(self.samples) if i not in dropped]
        self.bad_files += bad
        return bad
