"""Decoding of dataset images and label maps with OpenCV, with errors that name the file."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import cv2
import numpy as np

from densemnv3.errors import DataError

_BAD_FILE_HINT = (
    "re-download or regenerate it, or skip bad files with skip_bad (--set data.skip_bad=True)"
)


def _imread(path: str | os.PathLike) -> np.ndarray:
    # cv2.imread returns None both for a missing file and for one it cannot decode.
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; check data.root and the dataset layout")
    array = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if array is not None:
        return array
    raise DataError(
        f"{path}: cannot decode image (file is truncated or not an image); {_BAD_FILE_HINT}"
    )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 RGB array.

    Grayscale is expanded to three channels, an alpha channel is dropped and 16-bit images
    are scaled to 8 bits.
    """
    image = _imread(path)
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    elif image.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {image.dtype}; expected 8- or 16-bit")
    channels = 1 if image.ndim == 2 else image.shape[2]
    codes = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    if channels not in codes:
        raise DataError(f"{path}: unsupported image with {channels} channels; expected 1, 3 or 4")
    return cv2.cvtColor(image, codes[channels])


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Decode a label map to an (H, W) uint8 array; it must be a single-channel 8-bit image."""
    label = _imread(path)
    if label.ndim == 3 and label.shape[2] == 1:
        label = label[:, :, 0]
    if label.ndim != 2 or label.dtype != np.uint8:
        channels = 1 if label.ndim == 2 else label.shape[2]
        raise DataError(
            f"{path}: expected a single-channel 8-bit label map, found a {channels}-channel "
            f"{label.dtype} image; use the *_gtFine_labelIds.png files, not *_color.png"
        )
    return label


T = TypeVar("T")


def first_good_sample(
    load: Callable[[int], T],
    index: int,
    size: int,
    *,
    path_of: Callable[[int], str],
    bad_files: list[tuple[str, str]],
    nothing_left: str,
) -> T:
    """``load(index)``, or if it raises :class:`DataError` the next loadable sample (wrapping
    around); each bad one is recorded once in ``bad_files`` as (path, reason)."""
    for offset in range(size):
        i = (index + offset) % size
        try:
            return load(i)
        except DataError as error:
            path = path_of(i)
            if all(recorded != path for recorded, _ in bad_files):
                bad_files.append((path, str(error)))
    raise DataError(nothing_left)


def cached(cache: dict | None, key, load: Callable[[], T]) -> T:
    """``load()`` (an array or a tuple of arrays), decoded once per ``key`` when ``cache`` is a
    dict (``None``: no caching). Every call gets its own copy, since transforms may write in
    place; a copy costs far less than a decode."""
    if cache is None:
        return load()
    if key not in cache:
        cache[key] = load()
    value = cache[key]
    return tuple(a.copy() for a in value) if isinstance(value, tuple) else value.copy()
