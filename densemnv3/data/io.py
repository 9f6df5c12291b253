"""Decoding of dataset images and label maps with OpenCV, with errors that name the file.

A file's header is read before it is decoded: one that declares more than ``max_pixels``
(``data.max_image_pixels``) is refused, so a tiny file claiming 32000x32000 costs no memory.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from typing import TypeVar

import cv2
import numpy as np

from densemnv3.config import DataConfig
from densemnv3.errors import DataError

_BAD_FILE_HINT = (
    "re-download or regenerate it, or skip bad files with skip_bad (--set data.skip_bad=True)"
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The files taken as images (OpenCV decodes them), lower case: a folder's others are left out.
IMAGE_SUFFIXES = frozenset(
    ".bmp .dib .jpeg .jpg .jpe .jp2 .png .webp .pbm .pgm .ppm .pnm .pxm .sr .ras .tiff .tif "
    ".exr .hdr .pic".split()
)
#: The readers' default limit: the config's (``data.max_image_pixels``).
MAX_IMAGE_PIXELS = DataConfig.max_image_pixels
# JPEG start-of-frame markers (SOF0-SOF15 less DHT, JPG and DAC), which carry the frame size
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}  # RSTn, SOI, EOI, TEM: no length


def _imread(
    path: str | os.PathLike,
    max_pixels: int = MAX_IMAGE_PIXELS,
    hint: str = _BAD_FILE_HINT,
    *,
    palette_indices: bool = False,
) -> np.ndarray:
    # Decoded from bytes that passed a container check, so that a truncated file gets our message,
    # not libpng's "libpng error: Read Error" on stderr (OpenCV's log level does not reach it).
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file; check data.root and the dataset layout")
    with open(path, "rb") as f:
        data = f.read()
    problem = container_problem(data)
    if problem is None:
        _check_declared_size(path, data, max_pixels)
        if palette_indices and data.startswith(_PNG_SIGNATURE) and data[25:26] == b"\x03":
            return _palette_indices(data)
        try:
            array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:  # OpenCV asserts on some inputs instead of returning None
            array = None
        if array is not None:
            return array
        problem = "not an image, or corrupt"
    raise DataError(f"{path}: cannot decode image ({problem}){'; ' + hint if hint else ''}")


def _palette_indices(data: bytes) -> np.ndarray:
    """A palette PNG's pixel indices: OpenCV only gives their colours."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("P") if image.mode != "P" else image, dtype=np.uint8)


def container_problem(data: bytes) -> str | None:
    """What is structurally wrong with a PNG or JPEG file's bytes (truncated, bad chunk CRC), or
    ``None``. Other formats are left to the decoder."""
    if not data:
        return "empty file, 0 bytes"
    if data.startswith(_PNG_SIGNATURE):
        pos = len(_PNG_SIGNATURE)
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            end = pos + 8 + length + 4
            if end > len(data):
                break
            if zlib.crc32(data[pos + 4 : end - 4]) != struct.unpack(">I", data[end - 4 : end])[0]:
                return (
                    f"corrupt PNG: CRC mismatch in chunk {kind.decode('latin-1')!r} at byte {pos}"
                )
            if kind == b"IEND":
                return None
            pos = end
        return f"truncated PNG: {len(data)} bytes, it ends before the image data does"
    if data.startswith(b"\xff\xd8") and b"\xff\xd9" not in data.rstrip(b"\x00")[-64:]:
        return f"truncated JPEG: {len(data)} bytes, no end-of-image marker"
    return None


def declared_pixels(data: bytes) -> tuple[int, str] | None:
    """The pixel count an image file's header declares and the size as messages give it
    (``"32000x32000"``), without decoding; ``None`` when the header gives none (not an image,
    or a format neither reader knows)."""
    if data.startswith(_PNG_SIGNATURE):
        if data[12:16] != b"IHDR" or len(data) < 24:
            return None
        size = struct.unpack(">II", data[16:24])
    elif data.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
    else:
        size = _pil_size(data)
    if isinstance(size, int):
        return size, f"{size:,} pixels"
    return None if size is None else (size[0] * size[1], f"{size[0]}x{size[1]}")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The size in the first SOFn segment; APPn segments (an EXIF thumbnail) are skipped whole."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _JPEG_STANDALONE:
            pos += 2
        elif marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        elif marker == 0xDA:  # start of scan: no frame header before it
            return None
        else:
            pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return None


def _pil_size(data: bytes) -> tuple[int, int] | int | None:
    """``(width, height)``, or only the pixel count when PIL refuses the file as a bomb."""
    # PIL's lazy open reads only the header of the other formats OpenCV decodes (BMP, TIFF, WebP,
    # PNM, ...); PNG and JPEG are read above, with no import and no exception to tell apart.
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # its bomb warning (over 89 Mpx) is ours to judge
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Image.DecompressionBombError as err:  # over twice PIL's limit: only its message
        count = re.search(r"\((\d+) pixels\)", str(err))  # keeps the size, as a pixel count
        return int(count.group(1)) if count else 2 * Image.MAX_IMAGE_PIXELS + 1
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header, without decoding: PNG's IHDR, JPEG's
    frame header, PIL's lazy open for the other formats. A :class:`DataError` naming the file
    when it cannot be read or its header gives no size."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            if head.startswith(b"\xff\xd8") and _jpeg_size(head) is None:
                head += f.read()  # the frame header lies past long APPn segments (EXIF, ICC)
    except OSError as error:
        raise DataError(f"{path}: cannot read the image ({error.strerror or error})") from error
    if head.startswith(_PNG_SIGNATURE):
        ihdr = head[12:16] == b"IHDR" and len(head) >= 24
        size = struct.unpack(">II", head[16:24]) if ihdr else None
    elif head.startswith(b"\xff\xd8"):
        size = _jpeg_size(head)
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    size = image.size
        except Image.DecompressionBombError as error:
            raise DataError(f"{path}: the image is too large to read ({error})") from error
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            size = None
    if size is None or min(size) <= 0:
        raise DataError(f"{path}: not an image, or its header gives no size; {_BAD_FILE_HINT}")
    return int(size[0]), int(size[1])


def _check_declared_size(path: str | os.PathLike, data: bytes, max_pixels: int) -> None:
    declared = declared_pixels(data)
    if declared is None or declared[0] <= max_pixels:
        return
    pixels, size = declared
    said = f"{size} ({pixels:,} pixels)" if "x" in size else size
    raise DataError(
        f"{path}: the image declares {said}, over the limit of {max_pixels:,} pixels "
        f"(data.max_image_pixels); if it is real, raise the limit with --set "
        f"data.max_image_pixels={pixels}, or skip such files with --set data.skip_bad=True"
    )


def read_image(path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 RGB array.

    Grayscale is expanded to three channels, an alpha channel is dropped and 16-bit images
    are scaled to 8 bits. A header declaring more than ``max_pixels`` is a :class:`DataError`.
    """
    return _eight_bit(path, _imread(path, max_pixels), cv2.COLOR_BGR2RGB)


def read_frame(
    path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS, hint: str = _BAD_FILE_HINT
) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 BGR array, as ``cv2.imread`` gives it (what the
    :class:`~densemnv3.inference.Predictor` takes), with :func:`read_image`'s checks and
    conversions; ``hint`` ends the message of a file that cannot be decoded."""
    return _eight_bit(path, _imread(path, max_pixels, hint), None)


def _eight_bit(path: str | os.PathLike, image: np.ndarray, colour: int | None) -> np.ndarray:
    """``image`` as decoded (BGR, BGRA, gray; 8 or 16 bits) -> (H, W, 3) uint8, BGR or, with
    ``colour`` = ``COLOR_BGR2RGB``, RGB."""
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    elif image.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {image.dtype}; expected 8- or 16-bit")
    channels = 1 if image.ndim == 2 else image.shape[2]
    rgb = colour == cv2.COLOR_BGR2RGB
    codes = {
        1: cv2.COLOR_GRAY2RGB if rgb else cv2.COLOR_GRAY2BGR,
        3: colour,
        4: cv2.COLOR_BGRA2RGB if rgb else cv2.COLOR_BGRA2BGR,
    }
    if channels not in codes:
        raise DataError(f"{path}: unsupported image with {channels} channels; expected 1, 3 or 4")
    return image if codes[channels] is None else cv2.cvtColor(image, codes[channels])


def read_label(path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a label map to an (H, W) uint8 array; it must be a single-channel 8-bit image."""
    label = _imread(path, max_pixels)
    if label.ndim == 3 and label.shape[2] == 1:
        label = label[:, :, 0]
    if label.ndim != 2 or label.dtype != np.uint8:
        channels = 1 if label.ndim == 2 else label.shape[2]
        raise DataError(
            f"{path}: expected a single-channel 8-bit label map, found a {channels}-channel "
            f"{label.dtype} image; use the *_gtFine_labelIds.png files, not *_color.png"
        )
    return label


def read_mask(path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a segmentation mask: (H, W) uint8 values of a single-channel image or of a palette
    PNG's indices (Pascal VOC's masks: OpenCV alone would give their colours), or (H, W, 3) uint8
    RGB of a colour mask (alpha dropped)."""
    mask = _imread(path, max_pixels, palette_indices=True)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.dtype != np.uint8 or (mask.ndim == 3 and mask.shape[2] not in (3, 4)):
        channels = 1 if mask.ndim == 2 else mask.shape[2]
        raise DataError(
            f"{path}: expected an 8-bit mask (class indices, a palette PNG or RGB colours), "
            f"found a {channels}-channel {mask.dtype} image; write masks as 8-bit PNGs"
        )
    return mask if mask.ndim == 2 else _eight_bit(path, mask, cv2.COLOR_BGR2RGB)


def read_instance_ids(path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a Cityscapes ``*_gtFine_instanceIds.png`` to an (H, W) array of ids (uint16:
    ``label_id * 1000 + k`` for thing instances, plain label ids elsewhere)."""
    ids = _imread(path, max_pixels)
    if ids.ndim == 3 and ids.shape[2] == 1:
        ids = ids[:, :, 0]
    if ids.ndim != 2 or ids.dtype not in (np.uint16, np.uint8):
        channels = 1 if ids.ndim == 2 else ids.shape[2]
        raise DataError(
            f"{path}: expected a single-channel 16-bit instance-id map, found a "
            f"{channels}-channel {ids.dtype} image; use the *_gtFine_instanceIds.png files"
        )
    return ids.astype(np.uint16, copy=False)


T = TypeVar("T")


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
