"""Segmentation datasets: image / mask pairs of any layout, checked, cached and transformed alike.

A layout (:mod:`~densemnv3.data.cityscapes`, :mod:`~densemnv3.data.seg_formats`) says where its
pairs are (``_scan``) and how a mask's values become labels (:class:`MaskTable`); everything
else — pairing by name, the checks, ``skip_bad``, caches, ``validate`` — is here, once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from densemnv3.data.cache import DecodedCache
from densemnv3.data.checks import find_bad_samples
from densemnv3.data.classes import ClassList
from densemnv3.data.io import MAX_IMAGE_PIXELS, cached, read_image, read_mask
from densemnv3.errors import ConfigError, DataError


@dataclass(frozen=True)
class MaskTable:
    """How a mask's stored values (0-255) become labels: ``lut`` maps each value to its label or
    the ignore value, ``valid`` says which values may appear; ``fix`` words the message about
    others (what they are not, which files to use)."""

    lut: np.ndarray
    valid: np.ndarray
    #: ``"{values} ..."``: the message about values outside the table, which it formats.
    fix: str

    @classmethod
    def identity(cls, classes: ClassList) -> MaskTable:
        """Values are the labels 0..K-1, and the ignore value."""
        lut = np.full(256, classes.ignore_index, np.uint8)
        lut[: len(classes)] = np.arange(len(classes))
        valid = np.zeros(256, bool)
        valid[: len(classes)] = valid[classes.ignore_index] = True
        fix = (
            f"mask values {{values}} are neither classes (0-{len(classes) - 1}, from "
            f"{classes.source}) nor the ignore value {classes.ignore_index}; fix the masks, the "
            "class list or data.ignore_index"
        )
        return cls(lut, valid, fix)

    def apply(self, mask: np.ndarray, path: str) -> np.ndarray:
        """The labels of an (H, W) uint8 mask; a DataError naming the values outside the table."""
        if cv2.countNonZero(cv2.LUT(mask, (~self.valid).astype(np.uint8))):
            invalid = np.unique(mask[~self.valid[mask]])
            raise DataError(f"{path}: {self.fix.format(values=invalid.tolist()[:10])}")
        return cv2.LUT(mask, self.lut)


def pair_by_key(
    images: dict[Hashable, Path],
    masks: dict[Hashable, Path],
    expected_mask: Callable[[Hashable], Path],
    expected_image: Callable[[Hashable], Path],
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(samples, unpaired)``: (image, mask) pairs of the keys both have, in key order, and
    (file, reason) for each image without a mask or mask without an image."""
    samples, unpaired = [], []
    for key in sorted(images.keys() | masks.keys()):
        image, mask = images.get(key), masks.get(key)
        if image is not None and mask is not None:
            samples.append((str(image), str(mask)))
        elif mask is None:
            reason = f"{image}: image without a mask ({expected_mask(key)} is missing)"
            unpaired.append((str(image), reason))
        else:
            reason = f"{mask}: mask without an image ({expected_image(key)} is missing)"
            unpaired.append((str(mask), reason))
    return samples, unpaired


class SegmentationDataset(Dataset):
    """Images with label targets (0..K-1, ``classes.ignore_index`` = not evaluated).

    With ``transform`` (an albumentations pipeline called as ``transform(image=, mask=)``) an
    item is a float32 CHW image tensor and an int64 HW target tensor; without it, the uint8 HWC
    RGB image and the uint8 HW labels at the original size. An image without a mask or a mask
    without an image stops the indexing with its file name, or with ``skip_bad`` is left out and
    recorded in :attr:`bad_files`; :meth:`validate` does the same for pairs that do not decode or
    check (a mask of another size than its image, a value that is no class), or whose header
    declares more than ``max_pixels`` pixels (a file is never decoded past that). A sample is
    never replaced by another. With ``cache`` each decoded pair is kept in RAM after its first
    read: for small datasets (every loader worker holds its own copy). With ``decoded_cache`` (a
    folder written by ``tools/cache_dataset.py``, see :mod:`densemnv3.data.cache`) pairs are
    memory-mapped from the cache instead of decoded.

    A layout subclass sets :attr:`layout` (its folder layout in words, for messages) and
    implements :meth:`_scan` and :meth:`mask_table`.
    """

    #: The folder layout in words, ending every message about a missing or unpaired file.
    layout = ""
    #: Whether Cityscapes' official scores (category IoU, iIoU) apply to this dataset's labels.
    official_scores = False
    #: Why this dataset cannot read a ``decoded_cache``; None: it can.
    decoded_cache_refused: str | None = None

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transform: Callable | None = None,
        *,
        classes: ClassList,
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
        self.classes = classes
        self.skip_bad = skip_bad
        self.max_pixels = max_pixels
        self._table = self.mask_table(classes)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None
        self.bad_files: list[tuple[str, str]] = []
        self.samples: list[tuple[str, str]] = self._checked(*self._scan())
        self._decoded = (
            None
            if decoded_cache is None
            else DecodedCache(decoded_cache, self.root, split, self.samples)
        )

    def _scan(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """``(samples, unpaired)`` of the split, as :func:`pair_by_key` gives them."""
        raise NotImplementedError

    def mask_table(self, classes: ClassList) -> MaskTable:
        """How this layout's mask values become labels."""
        raise NotImplementedError

    def _checked(
        self, samples: list[tuple[str, str]], unpaired: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        if unpaired and not self.skip_bad:
            more = f" (and {len(unpaired) - 1} more)" if len(unpaired) > 1 else ""
            raise DataError(
                f"{unpaired[0][1]}{more}; {self.layout}, or skip unpaired files with "
                "--set data.skip_bad=True"
            )
        self.bad_files += unpaired
        if not samples:
            raise DataError(
                f"{self.root}: no image of split {self.split!r} has a mask; {self.layout}"
            )
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def stored_values(self, labels: np.ndarray) -> np.ndarray:
        """Labels (H, W) as this layout's masks store them: a prediction saved that way reads
        back as a mask (``eval --save-predictions``)."""
        return labels.astype(np.uint8, copy=False)

    def sample_id(self, index: int) -> str:
        """The sample's name: its image's file name without the extension."""
        return Path(self.samples[index][0]).stem

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode and check one pair: uint8 HWC RGB image and uint8 HW labels (read-only
        memory maps when the decoded cache is on)."""
        if self._decoded is not None:
            return self._decoded.load(self.samples[index][0])
        return cached(self._cache, self.samples[index][0], lambda: self._decode(index))

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path, max_pixels=self.max_pixels)
        mask = self.read_labels(mask_path)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]}; the mask must have its "
                "image's size"
            )
        return image, mask

    def read_labels(self, path: str) -> np.ndarray:
        """One mask file's labels (H, W) uint8, checked against the classes."""
        mask = read_mask(path, max_pixels=self.max_pixels)
        if mask.ndim == 3:
            return self._colours_to_labels(mask, path)
        return self._table.apply(mask, path)

    def _colours_to_labels(self, rgb: np.ndarray, path: str) -> np.ndarray:
        palette = self.classes.palette
        if palette is None:
            raise DataError(
                f"{path}: an RGB colour mask, but the class list ({self.classes.source}) gives "
                "no colours; give data.palette or 'name R G B' lines in classes.txt, or write "
                "masks of class indices"
            )
        codes, known = _rgb_codes(rgb), _rgb_codes(palette)
        order = np.argsort(known)
        position = np.clip(np.searchsorted(known[order], codes), 0, len(known) - 1)
        found = known[order][position] == codes
        labels = np.where(found, order[position], self.classes.ignore_index).astype(np.uint8)
        unknown = ~found & (codes != 0)  # black is the ignore colour when it is no class's
        if unknown.any():
            code = int(codes[unknown][0])
            colour = (code >> 16, (code >> 8) & 255, code & 255)
            raise DataError(
                f"{path}: colour {colour} ({int(unknown.sum())} pixels) is not in the palette "
                f"({self.classes.source}); add its class, or fix the mask (black (0, 0, 0) "
                "marks pixels to ignore)"
            )
        return labels

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


def _rgb_codes(rgb: np.ndarray) -> np.ndarray:
    """``R << 16 | G << 8 | B`` of each colour of an (..., 3) uint8 array, int32."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
