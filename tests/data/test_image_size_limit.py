"""The size an image file's header declares, read without decoding, and the limit on it
(``data.max_image_pixels``) in every dataset the tasks build."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from densemnv3.config import DataConfig, load_config
from densemnv3.data.io import MAX_IMAGE_PIXELS, declared_pixels, read_image, read_label
from densemnv3.errors import DataError


def encoded(ext: str, shape=(6, 10, 3)) -> bytes:
    return cv2.imencode(ext, np.zeros(shape, np.uint8))[1].tobytes()


def png_declaring(width: int, height: int) -> bytes:
    data = encoded(".png", (8, 8))
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def jpeg_declaring(width: int, height: int, *, progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    data = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8), params)[1].tobytes()
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def with_exif_thumbnail(jpeg: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding a small JPEG (its SOF0 says 8x8) before the frame."""
    thumbnail = encoded(".jpg", (8, 8, 3))
    payload = b"Exif\x00\x00" + thumbnail
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_the_default_limit_is_the_configs():
    assert MAX_IMAGE_PIXELS == DataConfig().max_image_pixels == 2**28


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff", ".webp", ".ppm"])
def test_declared_size_of_each_format_opencv_writes(ext):
    assert declared_pixels(encoded(ext)) == (60, "10x6")


def test_declared_size_from_the_header_alone():
    assert declared_pixels(png_declaring(40_000, 30_000)) == (1_200_000_000, "40000x30000")
    assert declared_pixels(jpeg_declaring(32_000, 16_000)) == (512_000_000, "32000x16000")
    assert declared_pixels(jpeg_declaring(500, 300, progressive=True)) == (150_000, "500x300")
    assert declared_pixels(with_exif_thumbnail(jpeg_declaring(640, 480))) == (307_200, "640x480")
    assert declared_pixels(b"not an image at all") is None
    assert declared_pixels(encoded(".png")[:20]) is None  # no complete IHDR


def test_a_header_over_pils_own_limit_gives_its_pixel_count():
    bmp = bytearray(encoded(".bmp"))
    bmp[18:26] = struct.pack("<ii", 20_000, 20_000)  # 4e8 pixels: PIL refuses it as a bomb
    assert declared_pixels(bytes(bmp)) == (400_000_000, "400,000,000 pixels")


@pytest.mark.parametrize("reader", [read_image, read_label])
def test_a_file_declaring_too_much_is_refused_with_the_limit_and_the_fix(tmp_path, reader):
    path = tmp_path / "claims.png"
    path.write_bytes(png_declaring(40_000, 40_000))
    with pytest.raises(DataError) as info:
        reader(path)
    assert str(info.value) == (
        f"{path}: the image declares 40000x40000 (1,600,000,000 pixels), over the limit of "
        "268,435,456 pixels (data.max_image_pixels); if it is real, raise the limit with --set "
        "data.max_image_pixels=1600000000, or skip such files with --set data.skip_bad=True"
    )
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((6, 10), 7, np.uint8))
    assert reader(small, max_pixels=60).shape[:2] == (6, 10)
    with pytest.raises(DataError, match="declares 10x6 \\(60 pixels\\), over the limit of 59 "):
        reader(small, max_pixels=59)


@pytest.mark.parametrize("config", ["lraspp_synthetic", "ssdlite_synthetic", "multitask_synthetic"])
def test_the_limit_reaches_every_dataset_the_tasks_build(tiny_synthetic, tmp_path, config):
    from densemnv3.tasks import build_task

    cfg = load_config(
        config,
        [
            f"data.root={tiny_synthetic}",
            "data.synthetic=None",
            "data.max_image_pixels=8191",
            "data.skip_bad=True",
            f"work_dir={tmp_path}",
        ],
    )
    dataset = build_task(cfg).dataset(cfg.data.val_split, train=False)
    with pytest.raises(
        DataError,
        match=r"every .* unreadable; the first: .*_leftImg8bit\.png: "
        r"the image declares 128x64 \(8,192 pixels\), over the limit of 8,191 ",
    ):
        dataset.validate(progress=False)
