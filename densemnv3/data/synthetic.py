"""Synthetic street scenes in the Cityscapes layout, with COCO detection annotations.

The toolkit's out-of-the-box data and its test data. A pinhole camera looks down a procedurally
built street (sky, buildings with windows, trees, road with lane markings converging to the
vanishing point, sidewalks, poles, signs and traffic lights) with things at many scales and
occlusions: cars, trucks, buses, trams, pedestrians, cyclists and motorcyclists. Everything is
painted back to front with OpenCV, then textured, lit, blurred and noised per image.

Each image is drawn from its own ``np.random.default_rng((seed, split, index))``, so the output is
the same whatever the number of workers or the size of the other split.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import numbers
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from densemnv3.data.cityscapes_labels import (
    ID_PALETTE,
    LABELS,
    NAME_TO_ID,
    THING_IDS,
    THING_NAMES,
)
from densemnv3.errors import DataError, UserError

__all__ = [
    "CITIES",
    "MIN_AREA",
    "THING_IDS",
    "describe",
    "make_synthetic",
    "make_synthetic_video",
    "synthetic_exists",
]

CITIES: dict[str, tuple[str, ...]] = {
    "train": ("synthA", "synthB", "synthC"),
    "val": ("synthD", "synthE"),
}
#: Instances with fewer visible pixels get no COCO annotation (their pixels keep the bare label id).
MIN_AREA = 20

_VERSION = 1  # bump when the drawing changes, so synthetic_exists() asks for a rebuild
_SPLIT_KEYS = {"train": 0, "val": 1}
_VIDEO_KEY = 2
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
_COMPLETE = ".complete"
_IN_PROGRESS = ".in_progress"
_OWN_DIRS = ("leftImg8bit", "gtFine", "annotations")
_CATEGORIES = [
    {"id": lab.id, "name": lab.name, "supercategory": lab.category}
    for lab in LABELS
    if lab.name in THING_NAMES
]


def make_synthetic(
    out: str | os.PathLike,
    *,
    train: int = 200,
    val: int = 50,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write ``train`` + ``val`` synthetic street images of ``size`` (H, W) under ``out``.

    Cityscapes files (``leftImg8bit``, ``gtFine`` label ids, instance ids, colours) plus COCO
    ``annotations/instances_{split}.json``; ``out/.complete`` is written last. ``out`` must be new,
    empty or an earlier synthetic set (which is replaced). ``workers`` defaults to up to 2
    processes (a plain loop for a handful of images); it does not change the output.
    """
    marker = _marker(train=train, val=val, size=size, seed=seed)
    out = Path(out)
    _prepare(out, marker)
    tasks = [
        (str(out), split, index, tuple(marker["size"]), marker["seed"])
        for split in ("train", "val")
        for index in range(marker[split])
    ]
    if workers is None:
        workers = 1 if len(tasks) < 16 else min(2, os.cpu_count() or 1)
    results: dict[str, list] = {"train": [], "val": []}
    with tqdm(total=len(tasks), desc="synthetic", unit="img", disable=not progress) as bar:
        for split, index, image, anns in _run(tasks, workers):
            results[split].append((index, image, anns))
            bar.update()
    (out / "annotations").mkdir(exist_ok=True)
    for split, items in results.items():
        _write_json(out / "annotations" / f"instances_{split}.json", _coco(items))
    _write_json(out / _COMPLETE, marker)
    (out / _IN_PROGRESS).unlink()
    return out


def synthetic_exists(
    out: str | os.PathLike,
    *,
    train: int = 200,
    val: int = 50,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
) -> bool:
    """True when ``out`` holds a complete synthetic set made with these arguments."""
    try:
        found = json.loads((Path(out) / _COMPLETE).read_text())
    except (OSError, ValueError):
        return False
    return found == _marker(train=train, val=val, size=size, seed=seed)


def describe(out: str | os.PathLike) -> dict:
    """Images per split and instances per class of a synthetic set (read from its COCO files)."""
    summary: dict[str, dict] = {}
    names = {cat["id"]: cat["name"] for cat in _CATEGORIES}
    for split in ("train", "val"):
        data = json.loads((Path(out) / "annotations" / f"instances_{split}.json").read_text())
        per_class = dict.fromkeys(names.values(), 0)
        for ann in data["annotations"]:
            per_class[names[ann["category_id"]]] += 1
        summary[split] = {"images": len(data["images"]), "instances": per_class}
    return summary


def make_synthetic_video(
    path: str | os.PathLike,
    *,
    frames: int = 120,
    size: tuple[int, int] = (256, 512),
    fps: float = 10.0,
    seed: int = 0,
) -> Path:
    """Write a synthetic drive down a street: ``frames`` frames of ``size`` (H, W) at ``fps``.

    ``.mp4``/``.m4v``/``.mov`` use the mp4v codec, ``.avi`` MJPG. The file is re-opened and its
    frames counted; :class:`DataError` if OpenCV cannot write or read it back.
    """
    path = Path(path)
    height, width = _check_size(size)
    if not isinstance(frames, numbers.Integral) or frames < 1:
        raise UserError(f"frames must be a positive integer, got {frames!r}")
    if not fps > 0:
        raise UserError(f"fps must be positive, got {fps!r}")
    fourcc = _FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise UserError(f"{path}: unsupported video extension; use one of {', '.join(_FOURCC)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height)
    )
    if not writer.isOpened():
        raise DataError(f"{path}: OpenCV cannot open a {fourcc} video writer; try an .avi file")
    seed = _check_seed(seed)
    street = _make_scene(
        np.random.default_rng([seed, _VIDEO_KEY]), (height, width), travel=frames / fps * _MAX_SPEED
    )
    try:
        for k in range(int(frames)):
            rgb, _ = _render(street, k / fps, np.random.default_rng([seed, _VIDEO_KEY, k]))
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    _check_video(path, frames, (height, width))
    return path


# ---------------------------------------------------------------------------------------------
# Dataset writing


def _marker(*, train: int, val: int, size: tuple[int, int], seed: int) -> dict:
    for name, count in (("train", train), ("val", val)):
        if not isinstance(count, numbers.Integral) or count < 0:
            raise UserError(f"{name} must be a non-negative integer, got {count!r}")
    height, width = _check_size(size)
    return {
        "generator": "densemnv3.data.synthetic",
        "version": _VERSION,
        "train": int(train),
        "val": int(val),
        "size": [height, width],
        "seed": _check_seed(seed),
    }


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(s, numbers.Integral) and s >= 32 for s in size):
        raise UserError(f"size must be two integers (height, width), each >= 32; got {size!r}")
    return int(size[0]), int(size[1])


def _check_seed(seed: int) -> int:
    if not isinstance(seed, numbers.Integral) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _prepare(out: Path, marker: dict) -> None:
    """Make ``out`` ready: new, empty, or ours from an earlier (possibly interrupted) run."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not ((out / _COMPLETE).exists() or (out / _IN_PROGRESS).exists()):
            raise UserError(
                f"{out} is not empty and holds no synthetic dataset; "
                "choose a new or empty directory"
            )
        _write_json(out / _IN_PROGRESS, marker)
        (out / _COMPLETE).unlink(missing_ok=True)
        for name in _OWN_DIRS:
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / _IN_PROGRESS, marker)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _run(tasks: list[tuple], workers: int) -> Iterator[tuple]:
    if workers <= 1:
        yield from map(_write_image, tasks)
        return
    # spawn, not fork: a forked child deadlocks in OpenCV's thread pool once the parent has used it
    with mp.get_context("spawn").Pool(
        workers, initializer=cv2.setNumThreads, initargs=(1,)
    ) as pool:
        yield from pool.imap_unordered(_write_image, tasks, chunksize=4)


def _stem(split: str, index: int) -> tuple[str, str]:
    cities = CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{0:06d}_{index:06d}"


def _write_image(task: tuple) -> tuple[str, int, dict, list[dict]]:
    """Draw one image, write its four Cityscapes PNGs; return its COCO image and annotations."""
    out, split, index, size, seed = task
    rng = np.random.default_rng([seed, _SPLIT_KEYS[split], index])
    street = _make_scene(rng, size)
    rgb, ids = _render(street, 0.0, rng)
    anns = _instances(ids)
    labels = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)

    city, stem = _stem(split, index)
    image_dir = Path(out, "leftImg8bit", split, city)
    label_dir = Path(out, "gtFine", split, city)
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    image_path = image_dir / f"{stem}_leftImg8bit.png"
    _imwrite(image_path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    _imwrite(label_dir / f"{stem}_gtFine_labelIds.png", labels)
    _imwrite(label_dir / f"{stem}_gtFine_instanceIds.png", ids)
    _imwrite(label_dir / f"{stem}_gtFine_color.png", ID_PALETTE[labels][:, :, ::-1])
    image = {
        "file_name": image_path.relative_to(out).as_posix(),
        "height": int(size[0]),
        "width": int(size[1]),
    }
    return split, index, image, anns


def _imwrite(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"cannot write {path}")


def _instances(ids: np.ndarray) -> list[dict]:
    """COCO annotations of the visible thing instances in ``ids`` (Cityscapes instanceIds).

    Instances under :data:`MIN_AREA` pixels are folded into their bare label id, so every
    ``id >= 1000`` left in ``ids`` has exactly one annotation. Modifies ``ids`` in place.
    """
    codes, counts = np.unique(ids[ids >= 1000], return_counts=True)
    anns = []
    for code, count in zip(codes.tolist(), counts.tolist()):
        mask = ids == code
        if count < MIN_AREA:
            ids[mask] = code // 1000
            continue
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        bbox = [int(v) for v in mask_utils.toBbox(rle)]
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append(
            {
                "category_id": code // 1000,
                "bbox": bbox,
                "area": count,
                "iscrowd": 0,
                "segmentation": rle,
            }
        )
    return anns


def _coco(items: list[tuple[int, dict, list[dict]]]) -> dict:
    images, annotations = [], []
    for image_id, (_, image, anns) in enumerate(sorted(items, key=lambda item: item[0]), start=1):
        images.append({"id": image_id, **image})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    return {
        "info": {"description": "densemnv3 synthetic street scenes", "version": str(_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": _CATEGORIES,
    }


def _check_video(path: Path, frames: int, size: tuple[int, int]) -> None:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DataError(f"{path}: the video just written cannot be opened by OpenCV")
        counted = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        read = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if frame.shape[:2] != size:
                raise DataError(f"{path}: frame {read} is {frame.shape[:2]}, expected {size}")
            read += 1
    finally:
        capture.release()
    if counted != frames or read != frames:
        raise DataError(
            f"{path}: wrote {frames} frames but the file reports {counted} and {read} could be "
            "read back; try an .avi file (MJPG)"
        )


# ---------------------------------------------------------------------------------------------
# Scene geometry: a pinhole camera at ``height`` metres looking down +z; x right, y up, metres.

_L = NAME_TO_ID
_Z_NEAR = 0.5  # near clipping plane (m)
_FAR = 1e4  # "infinity" for ground strips (m)
_MAX_SPEED = 9.0  # fastest camera in a video (m/s)


class _Camera(NamedTuple):
    f: float
    cx: float
    cy: float  # horizon row
    height: float

    def project(self, points) -> np.ndarray:
        """World points (..., 3) -> pixels (..., 2); z is clamped to the near plane."""
        p = np.asarray(points, dtype=np.float64)
        z = np.maximum(p[..., 2], _Z_NEAR)
        u = self.cx + self.f * p[..., 0] / z
        v = self.cy + self.f * (self.height - p[..., 1]) / z
        return np.stack((u, v), axis=-1)


class _Canvas:
    """Flat colours, Cityscapes instance ids and texture strength, painted back to front.

    ``code`` is what goes into the instance-id map (a label id, or label id * 1000 + index for a
    thing); ``code=None`` paints the image only (windows, markings: details inside a region).
    """

    def __init__(self, height: int, width: int) -> None:
        self.rgb = np.zeros((height, width, 3), np.uint8)
        self.ids = np.zeros((height, width), np.uint16)
        self.tex = np.zeros((height, width), np.float32)

    def _paint(self, draw, color, code, tex) -> None:
        draw(self.rgb, tuple(float(c) for c in color))
        if code is not None:
            draw(self.ids, float(code))
        if tex is not None:
            draw(self.tex, float(tex))

    def poly(self, polys, color, code=None, tex=None) -> None:
        pts = [_fixed(p).reshape(-1, 2) for p in polys]
        if pts:
            self._paint(lambda img, c: cv2.fillPoly(img, pts, c, cv2.LINE_8, 4), color, code, tex)

    def ellipse(self, center, axes, color, code=None, tex=None, thickness=-1) -> None:
        c, a = tuple(_fixed(center).tolist()), tuple(np.maximum(_fixed(axes), 8).tolist())
        thickness = thickness if thickness < 0 else max(1, round(thickness))
        self._paint(
            lambda img, col: cv2.ellipse(img, c, a, 0, 0, 360, col, thickness, cv2.LINE_8, 4),
            color,
            code,
            tex,
        )

    def line(self, p0, p1, width, color, code=None, tex=None) -> None:
        a, b, t = tuple(_fixed(p0).tolist()), tuple(_fixed(p1).tolist()), max(1, round(width))
        self._paint(lambda img, col: cv2.line(img, a, b, col, t, cv2.LINE_8, 4), color, code, tex)

    def haze_disc(self, center, radius, color, alpha, code) -> None:
        """Blend ``color`` into a disc (a spoked wheel) and give it ``code``."""
        h, w = self.ids.shape
        x0, y0 = max(int(center[0] - radius) - 1, 0), max(int(center[1] - radius) - 1, 0)
        x1, y1 = min(int(center[0] + radius) + 2, w), min(int(center[1] + radius) + 2, h)
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        c = tuple(_fixed((center[0] - x0, center[1] - y0)).tolist())
        cv2.circle(mask, c, int(radius * 16), 1, -1, cv2.LINE_8, 4)
        m = mask.astype(bool)
        roi = self.rgb[y0:y1, x0:x1]
        roi[m] = (roi[m] * (1 - alpha) + np.asarray(color) * alpha).astype(np.uint8)
        self.ids[y0:y1, x0:x1][m] = code


def _fixed(points) -> np.ndarray:
    """Pixel coordinates as int32 with 4 fractional bits (OpenCV's ``shift=4``)."""
    return np.clip(np.round(np.asarray(points, dtype=np.float64) * 16), -(2**28), 2**28).astype(
        np.int32
    )


def _face_quads(origin, axis, u0, u1, y0, y1) -> np.ndarray:
    """Upright rectangles (n, 4, 3) on the face from ground point ``origin`` along ``axis``."""
    u0, u1, y0, y1 = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(a, float)) for a in (u0, u1, y0, y1))
    )
    us = np.stack((u0, u1, u1, u0), axis=-1)
    pts = np.asarray(origin, float) + us[..., None] * np.asarray(axis, float)
    pts[..., 1] = np.stack((y0, y0, y1, y1), axis=-1)
    return pts


def _ground_quads(x0, x1, z0, z1) -> np.ndarray:
    """Ground rectangles (n, 4, 3), z clipped to the near plane (empty ones dropped)."""
    x0, x1, z0, z1 = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(a, float)) for a in (x0, x1, z0, z1))
    )
    z0 = np.maximum(z0, _Z_NEAR)
    keep = z1 > z0
    x0, x1, z0, z1 = x0[keep], x1[keep], z0[keep], z1[keep]
    zeros = np.zeros_like(x0)
    corners = [(x0, z0), (x1, z0), (x1, z1), (x0, z1)]
    return np.stack([np.stack((x, zeros, z), axis=-1) for x, z in corners], axis=-2)


def _frontal(cam: _Camera, x0, x1, y0, y1, z) -> np.ndarray:
    """A rectangle facing the camera at depth ``z``, in pixels (4, 2)."""
    return cam.project([(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)])


def _shade(color, k: float) -> tuple[float, float, float]:
    return tuple(min(255.0, c * k) for c in color)


def _jitter(rng: np.random.Generator, color, amount: float) -> tuple[float, float, float]:
    return tuple(np.clip(np.asarray(color, float) + rng.normal(0, amount, 3), 0, 255).tolist())


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(low * math.exp(rng.uniform(0, math.log(max(high, low * 1.01) / low))))


# ---------------------------------------------------------------------------------------------
# Scene description (drawn once from the image's generator; rendered at any time t)

_BUILDING_COLORS = (
    (196, 178, 150),
    (150, 84, 62),
    (128, 128, 134),
    (222, 212, 188),
    (92, 92, 98),
    (214, 196, 120),
    (200, 160, 150),
    (170, 176, 168),
    (110, 82, 70),
    (236, 232, 224),
)
_WALK_COLORS = ((168, 164, 160), (150, 150, 156), (186, 172, 150), (165, 125, 115), (196, 194, 190))
_TERRAIN_COLORS = ((112, 150, 78), (138, 160, 92), (150, 132, 96), (124, 140, 84))
_CAR_COLORS = (
    (198, 200, 206),
    (28, 28, 32),
    (238, 238, 236),
    (126, 22, 28),
    (28, 48, 112),
    (92, 96, 102),
    (40, 82, 62),
    (70, 110, 160),
    (150, 36, 30),
)
_BUS_COLORS = ((232, 188, 40), (190, 38, 40), (40, 82, 172), (236, 130, 30), (40, 140, 90))
_TRAM_COLORS = ((236, 234, 226), (240, 206, 60), (220, 220, 214), (200, 206, 214))
_TRAM_BANDS = ((196, 30, 36), (30, 80, 170), (30, 130, 70), (236, 120, 20))
_CLOTH_COLORS = (
    (30, 30, 34),
    (34, 42, 80),
    (210, 210, 206),
    (170, 30, 40),
    (40, 100, 60),
    (0, 120, 200),
    (220, 60, 120),
    (60, 90, 150),
    (200, 120, 40),
    (120, 60, 110),
    (236, 200, 60),
)
_PANTS_COLORS = ((40, 50, 80), (30, 30, 32), (80, 80, 86), (170, 150, 120), (60, 70, 110))
_SKIN_COLORS = ((232, 190, 160), (200, 150, 115), (150, 100, 70), (100, 66, 46))
_HAIR_COLORS = ((30, 24, 20), (80, 52, 30), (200, 170, 110), (120, 120, 120))
_STATIC_COLORS = ((60, 110, 70), (120, 120, 124), (220, 120, 40), (50, 80, 150), (120, 80, 50))
_GLASS = (38, 50, 66)
_CHASSIS = (44, 44, 46)
_TYRE = (26, 26, 28)
_RED_LIGHT = (210, 30, 30)
_HEAD_LIGHT = (236, 232, 200)
_THING_MIX = {
    "car": 0.32, "person": 0.26, "cyclist": 0.1, "motorcyclist": 0.07,
    "bicycle": 0.08, "motorcycle": 0.05, "truck": 0.06, "bus": 0.06,
}  # fmt: skip


@dataclass
class _Obj:
    """Something standing in the street; ``fp`` is its footprint (x0, x1, z0, z1) around (x, z)."""

    kind: str
    x: float
    z: float
    p: dict
    vx: float = 0.0
    vz: float = 0.0
    fp: tuple[float, float, float, float] = (-0.3, 0.3, -0.3, 0.3)


@dataclass
class _Scene:
    size: tuple[int, int]
    cam: _Camera
    speed: float  # camera speed in m/s (videos only)
    look: dict  # per-image photometric settings
    colors: dict
    road: dict
    clouds: list
    facades: list[_Obj]  # buildings, parks, walls, fences: behind everything on the street
    street: list[_Obj]  # poles, trees, static objects and things, painted far to near
    texture_seed: int


def _make_scene(rng: np.random.Generator, size: tuple[int, int], *, travel: float = 0.0) -> _Scene:
    """Draw a street: camera, road layout, facades, street furniture and 0-12 things."""
    h, w = size
    cam = _Camera(
        f=w * rng.uniform(0.7, 1.0), cx=w * rng.uniform(0.45, 0.55),
        cy=h * rng.uniform(0.36, 0.5), height=rng.uniform(1.3, 1.8),
    )  # fmt: skip
    z_end = rng.uniform(110, 200) + travel
    road = _make_road(rng, z_end)
    gray = rng.uniform(82, 122)
    overcast = rng.random() < 0.3
    top = (
        (rng.uniform(175, 200),) * 3
        if overcast
        else (rng.uniform(60, 110), rng.uniform(110, 150), rng.uniform(185, 235))
    )
    colors = {
        "road": (gray, gray, gray + rng.uniform(-2, 8)),
        "walk": _jitter(rng, _pick(rng, _WALK_COLORS), 8),
        "terrain": _jitter(rng, _pick(rng, _TERRAIN_COLORS), 8),
        "veg": (rng.uniform(38, 78), rng.uniform(82, 126), rng.uniform(22, 52)),
        "marking": (rng.uniform(195, 235),) * 3,
        "sky_top": top,
        "sky_bottom": _jitter(rng, (212, 220, 232) if not overcast else (222, 222, 226), 8),
    }
    clouds = []  # (u, v, size, puffs): screen-space, far away
    for _ in range(int(rng.integers(0, 6))):
        u, v, scale = (
            rng.uniform(0, 1.3 * w),
            rng.uniform(0.05, 0.9) * cam.cy,
            rng.uniform(0.04, 0.12) * w,
        )
        puffs = [
            (rng.normal(0, 1.0), rng.normal(0, 0.3), rng.uniform(0.5, 1.2), rng.uniform(0.9, 1.05))
            for _ in range(5)
        ]
        clouds.append((u, v, scale, puffs))
    facades = _make_facades(rng, cam, road, colors, z_end)
    street = _make_furniture(rng, road, z_end, colors["veg"])
    if rng.random() >= 0.04:
        count = int(rng.integers(2, 13)) * (1 + round(travel / 80))
        street += _make_things(rng, cam, size, road, count, 50 + travel)
    look = {
        "contrast": rng.uniform(0.8, 1.15),
        "brightness": rng.uniform(-20, 15),
        "cast": rng.uniform(0.93, 1.07, 3).astype(np.float32),
        "light": (1 + rng.uniform(0.03, 0.12) * rng.standard_normal((3, 4))).astype(np.float32),
        "noise": rng.uniform(1.0, 4.0),
        "blur": rng.uniform(0.3, 0.8) if rng.random() < 0.6 else 0.0,
        "ego": rng.uniform(0.07, 0.14) if rng.random() < 0.25 else None,
        "void": (rng.uniform(0, w), rng.uniform(cam.cy, h), rng.uniform(0.02, 0.06) * w)
                if rng.random() < 0.15 else None,
    }  # fmt: skip
    return _Scene(
        size=(h, w), cam=cam, speed=rng.uniform(5.0, _MAX_SPEED), look=look, colors=colors,
        road=road, clouds=clouds, facades=facades, street=street,
        texture_seed=int(rng.integers(2**31)),
    )  # fmt: skip


def _make_road(rng: np.random.Generator, z_end: float) -> dict:
    lane = rng.uniform(3.0, 3.6)
    n_left, n_right = int(rng.integers(0, 3)), int(rng.integers(0, 2))
    oncoming = n_left > 0 and rng.random() < 0.7
    lanes = [(k * lane, -1 if oncoming and k < 0 else 1) for k in range(-n_left, n_right + 1)]
    lines = [((k + 0.5) * lane, oncoming and k == -1) for k in range(-n_left, n_right)]
    left, right = lane * (0.5 + n_left), lane * (0.5 + n_right)
    if rng.random() < 0.6:
        lines += [(-left + 0.3, True), (right - 0.3, True)]
    sides = []
    for sign, edge in ((-1, left), (1, right)):
        sides.append({
            "sign": sign, "edge": edge, "walk": rng.uniform(1.5, 4.5),
            "setback": rng.uniform(1, 5) if rng.random() < 0.5 else 0.0,
            "paved": rng.random() < 0.4, "density": rng.uniform(0.3, 1.0),
            "trees": rng.random() < 0.45, "parking": [],
        })  # fmt: skip
        if rng.random() < 0.3:
            z0 = rng.uniform(0, 30)
            sides[-1]["parking"].append((z0, z0 + rng.uniform(15, 60)))
    return {
        "lane": lane, "left": left, "right": right, "lanes": lanes, "lines": lines, "sides": sides,
        "period": rng.uniform(8, 12), "dash": rng.uniform(2.5, 4.5), "phase": rng.uniform(0, 12),
        "crosswalk": rng.uniform(8, 40) if rng.random() < 0.25 else None,
        "patches": [(rng.uniform(-left, right), rng.uniform(1, 3), rng.uniform(3, 60),
                     rng.uniform(2, 8), rng.uniform(0.8, 1.1))
                    for _ in range(int(rng.integers(0, 4)))],
        "tile": rng.uniform(0.5, 1.2), "z_end": z_end,
    }  # fmt: skip


def _make_facades(
    rng: np.random.Generator, cam: _Camera, road: dict, colors: dict, z_end: float
) -> list[_Obj]:
    """Far skyline closing the street, then buildings, parks, walls and fences along both sides."""
    z_bg = z_end + rng.uniform(0, 40)
    blocks, x = [], -0.8 * z_bg
    while x < 0.8 * z_bg:
        width = rng.uniform(8, 30)
        if rng.random() > 0.12:
            trees = rng.random() < 0.2
            base = colors["veg"] if trees else _pick(rng, _BUILDING_COLORS)
            color = tuple(
                0.55 * np.asarray(_jitter(rng, base, 12)) + 0.45 * np.asarray(colors["sky_bottom"])
            )
            blocks.append(
                (x, x + width, rng.uniform(6, 15) if trees else rng.uniform(8, 45), color, trees)
            )
        x += width
    facades = [_Obj("skyline", 0.0, z_bg, {"blocks": blocks})]
    for side in road["sides"]:
        sign, outer = side["sign"], side["edge"] + side["walk"]
        x_face = sign * (outer + side["setback"])
        z = rng.uniform(-15, 0)
        while z < z_end:
            r = rng.random()
            if r < side["density"]:
                length = rng.uniform(8, 35)
                p = _building(rng, sign, length)
                facades.append(_Obj("building", x_face + sign * rng.uniform(0, 1), z, p))
                gap = 0.0 if rng.random() < 0.6 else rng.uniform(2, 12)
            else:
                length, gap = rng.uniform(8, 35), 0.0
                if r < side["density"] + (1 - side["density"]) * 0.7:
                    facades.append(_Obj("park", x_face, z, _park(rng, sign, length, colors["veg"])))
            if rng.random() < 0.35:
                kind = _pick(rng, ("wall", "fence", "hedge"))
                color = {
                    "wall": _jitter(
                        rng, _pick(rng, ((168, 164, 152), (140, 140, 140), (182, 160, 130))), 8
                    ),
                    "fence": _jitter(
                        rng, _pick(rng, ((110, 96, 80), (90, 110, 96), (130, 130, 136))), 8
                    ),
                    "hedge": _shade(colors["veg"], rng.uniform(0.75, 1.0)),
                }[kind]
                height = rng.uniform(1.0, 2.5) if kind != "fence" else rng.uniform(1.0, 2.0)
                p = {"length": length, "height": height, "color": color}
                facades.append(_Obj(kind, sign * outer, z, p))
            z += length + gap
    return facades


def _building(rng: np.random.Generator, sign: int, length: float) -> dict:
    floor, column = rng.uniform(2.8, 3.6), rng.uniform(2.0, 3.5)
    return {
        "sign": sign, "length": length, "depth": rng.uniform(8, 20),
        "height": int(rng.integers(2, 10)) * floor + rng.uniform(0.3, 1.5),
        "color": _jitter(rng, _pick(rng, _BUILDING_COLORS), 12),
        "glass": _jitter(rng, _GLASS, 10), "glass2": _jitter(rng, (120, 134, 150), 15),
        "floor": floor, "col": column, "win_w": column * rng.uniform(0.35, 0.65),
        "win_h": floor * rng.uniform(0.4, 0.6), "sill": rng.uniform(0.7, 1.1),
        "shop": rng.random() < 0.5, "pattern": int(rng.integers(5)),
    }  # fmt: skip


def _leaves(rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    """Lighter and darker leaf clusters inside a crown, as (dx, dy, radius, tone) in crown radii."""
    out = []
    for _ in range(int(rng.integers(3, 7))):
        radius, angle = rng.uniform(0.2, 0.45), rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(0, 0.85 - radius)
        out.append((dist * math.cos(angle), dist * math.sin(angle), radius, rng.uniform(0.7, 1.3)))
    return out


def _crown(rng: np.random.Generator, dx: float, dz: float, trunk: bool) -> tuple:
    r = rng.uniform(1.4, 3.5)
    y = rng.uniform(r + 1.0, r + 4.5) if trunk else r * rng.uniform(0.6, 0.9)
    return (dx, y, dz, r, rng.uniform(0.8, 1.15), trunk, _leaves(rng))


def _park(rng: np.random.Generator, sign: int, length: float, color) -> dict:
    crowns = [
        _crown(rng, rng.uniform(0, 8), rng.uniform(0, length), rng.random() < 0.7)
        for _ in range(max(1, int(length / rng.uniform(2.5, 5))))
    ]
    crowns.sort(key=lambda c: -c[2])
    return {"sign": sign, "length": length, "crowns": crowns, "color": color}


def _make_furniture(rng: np.random.Generator, road: dict, z_end: float, veg) -> list[_Obj]:
    """Poles (street lamps, signs, traffic lights), curb trees and static clutter on both sides."""
    items = []
    for side in road["sides"]:
        sign, edge, walk = side["sign"], side["edge"], side["walk"]
        z = rng.uniform(2, 25)
        while z < z_end:
            items.append(_Obj("pole", sign * (edge + rng.uniform(0.3, 0.7)), z, _pole(rng, -sign)))
            z += rng.uniform(10, 28)
        if side["trees"]:
            z, step = rng.uniform(2, 12), rng.uniform(7, 15)
            while z < z_end:
                crown = _crown(rng, 0.0, 0.0, True)
                items.append(
                    _Obj(
                        "tree",
                        sign * (edge + rng.uniform(0.6, 1.2)),
                        z + rng.uniform(-1, 1),
                        {"crown": crown, "color": _shade(veg, rng.uniform(0.85, 1.1))},
                    )
                )
                z += step
        for _ in range(int(rng.integers(0, 4))):
            kind = _pick(rng, ("bin", "bin", "bench", "column"))
            width, height = {"bin": (0.6, 1.0), "bench": (1.6, 0.9), "column": (1.2, 2.8)}[kind]
            height *= rng.uniform(0.9, 1.1)
            color = _jitter(rng, _pick(rng, _STATIC_COLORS), 10)
            p = {"kind": kind, "width": width, "height": height, "color": color}
            items.append(
                _Obj("static", sign * (edge + rng.uniform(0.5, walk)), rng.uniform(4, 60), p)
            )
    return items


def _pole(rng: np.random.Generator, toward_road: int) -> dict:
    top = _pick(rng, ("lamp", "lamp", "sign", "sign", "sign", "light", "light", "light", "plain"))
    p = {
        "top": top, "toward": toward_road, "width": rng.uniform(0.22, 0.36),
        "height": rng.uniform(5, 8) if top == "lamp" else rng.uniform(3.2, 4.5),
        "color": _jitter(rng, _pick(rng, ((120, 122, 126), (140, 142, 146), (160, 160, 158))), 8),
    }  # fmt: skip
    if top == "sign":
        shape = _pick(rng, ("circle", "circle", "triangle", "rect", "diamond", "octagon"))
        rim, fill = {
            "circle": _pick(
                rng, (((200, 30, 30), (236, 236, 236)), ((30, 70, 170), (30, 70, 170)))
            ),
            "triangle": ((200, 30, 30), (236, 236, 236)),
            "rect": _pick(
                rng, (((30, 70, 170), (236, 236, 236)), ((236, 236, 236), (30, 110, 60)))
            ),
            "diamond": ((236, 236, 236), (240, 196, 20)),
            "octagon": ((236, 236, 236), (200, 30, 30)),
        }[shape]
        p["sign"] = {"shape": shape, "rim": _jitter(rng, rim, 8), "fill": _jitter(rng, fill, 8),
                     "size": rng.uniform(0.8, 1.15), "y": p["height"] - rng.uniform(0.4, 1.2),
                     "second": rng.random() < 0.3}  # fmt: skip
        p["height"] = max(p["height"], p["sign"]["y"] + 0.2)
    elif top == "light":
        arm = rng.uniform(2, 5) if rng.random() < 0.4 else 0.0
        p["light"] = {
            "arm": arm, "width": rng.uniform(0.5, 0.65), "box": rng.uniform(1.3, 1.6),
            "both": rng.random() < 0.5,
            "housing": _jitter(rng, _pick(rng, ((36, 36, 38), (50, 50, 52), (180, 150, 40))), 6),
            "lit": int(rng.integers(3)),
        }  # fmt: skip
        if arm:
            p["height"] = rng.uniform(5.2, 6.5)
    return p


def _pair(
    face: str, width: float, a0: float, a1: float, y0: float, y1: float, color
) -> list[tuple]:
    """The same detail at both sides of an end face (lights, wheels)."""
    return [(face, a0, a1, y0, y1, color), (face, width - a1, width - a0, y0, y1, color)]


def _vehicle(rng: np.random.Generator, kind: str) -> dict:
    """Boxes (vehicle coordinates: u from rear to front, w across, y up) with their details."""
    glass = _jitter(rng, _GLASS, 8)
    if kind == "car":
        length, width = rng.uniform(3.8, 4.9), rng.uniform(1.65, 1.95)
        hb = rng.uniform(0.95, 1.05) if rng.random() < 0.25 else rng.uniform(0.78, 0.92)
        top = hb + rng.uniform(0.52, 0.68)
        body = _jitter(rng, _pick(rng, _CAR_COLORS), 10)
        c0, c1 = length * rng.uniform(0.06, 0.3), length * rng.uniform(0.68, 0.78)
        mid = (c0 + c1) / 2
        body_details = [
            ("wheel", 0.19 * length, 0.33), ("wheel", 0.8 * length, 0.33),
            *_pair("rear", width, 0.08, 0.38, hb - 0.26, hb - 0.1, _RED_LIGHT),
            ("rear", width / 2 - 0.26, width / 2 + 0.26, 0.4, 0.52, (230, 230, 225)),
            *_pair("front", width, 0.08, 0.4, hb - 0.24, hb - 0.1, _HEAD_LIGHT),
            ("front", 0.45, width - 0.45, 0.36, 0.56, (40, 40, 42)),
            *_pair("rear", width, 0.12, 0.36, 0.0, 0.3, _TYRE),
            *_pair("front", width, 0.12, 0.36, 0.0, 0.3, _TYRE),
            ("long", mid - 0.02, mid + 0.02, 0.35, hb - 0.05, _shade(body, 0.6)),
        ]  # fmt: skip
        cabin_details = [
            ("long", c0 + 0.12, mid - 0.05, hb + 0.06, top - 0.07, glass),
            ("long", mid + 0.05, c1 - 0.12, hb + 0.06, top - 0.07, glass),
            ("rear", 0.22, width - 0.22, hb + 0.07, top - 0.08, glass),
            ("front", 0.16, width - 0.16, hb + 0.05, top - 0.06, glass),
        ]
        parts = [
            {"box": (0, length, 0, width, 0.25, hb), "color": body, "details": body_details},
            {"box": (c0, c1, 0.1, width - 0.1, hb, top), "color": body, "details": cabin_details},
        ]
    elif kind == "truck":
        length, width = rng.uniform(6.5, 9.5), rng.uniform(2.3, 2.55)
        cab_l, cab_h, box_h = rng.uniform(2.0, 2.5), rng.uniform(2.7, 3.1), rng.uniform(3.2, 3.9)
        cab = _jitter(
            rng,
            _pick(
                rng, ((190, 40, 36), (236, 236, 232), (40, 70, 150), (230, 130, 30), (60, 120, 70))
            ),
            10,
        )
        cargo = (
            cab
            if rng.random() < 0.3
            else _jitter(
                rng,
                _pick(rng, ((232, 232, 228), (200, 200, 196), (60, 90, 160), (210, 190, 150))),
                8,
            )
        )
        u_box, door = length - cab_l - 0.2, _shade(cargo, 0.55)
        parts = [
            {"box": (0, u_box + 0.2, 0.2, width - 0.2, 0.45, 1.0), "color": _CHASSIS, "details": [
                ("wheel", 1.1, 0.5), ("wheel", 2.3, 0.5),
                *_pair("rear", width, 0.15, 0.6, 0.0, 0.95, _TYRE)]},
            {"box": (0, u_box, 0, width, 1.0, box_h), "color": cargo, "details": [
                ("rear", width / 2 - 0.03, width / 2 + 0.03, 1.05, box_h - 0.08, door),
                *_pair("rear", width, 0.08, 0.3, 1.05, 1.25, _RED_LIGHT),
                ("long", 0.4, u_box - 0.4, box_h * 0.55, box_h * 0.7, _shade(cab, 0.9))]},
            {"box": (length - cab_l, length, 0, width, 0.5, cab_h), "color": cab, "details": [
                ("wheel", length - cab_l * 0.5, 0.5),
                ("long", length - cab_l + 0.35, length - 0.55, 1.7, cab_h - 0.3, glass),
                ("front", 0.12, width - 0.12, 1.6, cab_h - 0.2, glass),
                *_pair("front", width, 0.1, 0.45, 0.7, 0.95, _HEAD_LIGHT),
                ("front", 0.6, width - 0.6, 0.6, 1.35, (40, 40, 42)),
                *_pair("front", width, 0.15, 0.5, 0.0, 0.6, _TYRE)]},
        ]  # fmt: skip
    elif kind == "bus":
        length, width, top = rng.uniform(10.5, 13), rng.uniform(2.45, 2.55), rng.uniform(3.0, 3.3)
        body = _jitter(rng, _pick(rng, _BUS_COLORS), 10)
        details = [
            ("long", a, a + 1.2, 1.2, top - 0.45, glass) for a in np.arange(0.7, length - 2.6, 1.35)
        ]
        details += [
            ("long", length - 2.4, length - 1.3, 0.4, top - 0.45, _shade(glass, 0.8)),
            ("long", 0, length, 0.3, 0.55, _shade(body, 0.6)),
            ("wheel", 2.5, 0.5), ("wheel", length - 2.7, 0.5),
            ("front", 0.1, width - 0.1, 0.95, top - 0.5, glass),
            ("front", 0.3, width - 0.3, top - 0.45, top - 0.15, (20, 20, 20)),
            ("front", 0.6, width - 0.6, top - 0.36, top - 0.24, (240, 150, 30)),
            *_pair("front", width, 0.1, 0.45, 0.45, 0.7, _HEAD_LIGHT),
            ("rear", 0.25, width - 0.25, 1.9, top - 0.4, glass),
            *_pair("rear", width, 0.1, 0.35, 0.5, 0.9, _RED_LIGHT),
            ("rear", 0.5, width - 0.5, 0.4, 1.2, _shade(body, 0.7)),
            *_pair("rear", width, 0.12, 0.45, 0.0, 0.55, _TYRE),
            *_pair("front", width, 0.12, 0.45, 0.0, 0.55, _TYRE),
        ]  # fmt: skip
        parts = [{"box": (0, length, 0, width, 0.3, top), "color": body, "details": details}]
    else:  # train: a tram
        length, width, top = rng.uniform(24, 34), 2.65, rng.uniform(3.3, 3.6)
        body, band = (
            _jitter(rng, _pick(rng, _TRAM_COLORS), 6),
            _jitter(rng, _pick(rng, _TRAM_BANDS), 8),
        )
        details = [
            ("long", 0, length, 0.35, 0.95, band),
            ("long", 0, length, top - 0.35, top - 0.2, band),
        ]
        details += [
            ("long", a, a + 1.6, 1.1, 2.45, glass) for a in np.arange(1.2, length - 2.5, 1.9)
        ]
        details += [
            ("long", a, a + 1.3, 0.45, 2.5, _shade(glass, 0.8))
            for a in np.arange(3.0, length - 2, rng.uniform(6, 8))
        ]
        for end, light in (("front", _HEAD_LIGHT), ("rear", _RED_LIGHT)):
            details += [
                (end, 0.15, width - 0.15, 1.15, top - 0.4, glass),
                (end, 0, width, 0.35, 0.95, band),
            ]
            details += _pair(end, width, 0.15, 0.45, 0.6, 0.8, light)
        details.append(("panto", length * 0.45))
        parts = [{"box": (0, length, 0, width, 0.35, top), "color": body, "details": details}]
    return {"kind": kind, "length": length, "width": width, "parts": parts}


def _person(rng: np.random.Generator, view: str, facing: int) -> dict:
    return {
        "height": rng.uniform(1.55, 1.95), "view": view, "facing": facing,
        "stride": rng.uniform(-1, 1), "sleeves": rng.random() < 0.7,
        "skin": _jitter(rng, _pick(rng, _SKIN_COLORS), 6),
        "hair": _jitter(rng, _pick(rng, _HAIR_COLORS), 6),
        "shirt": _jitter(rng, _pick(rng, _CLOTH_COLORS), 12),
        "pants": _jitter(rng, _pick(rng, _PANTS_COLORS), 8),
        "bag": _jitter(rng, _pick(rng, _CLOTH_COLORS), 10) if rng.random() < 0.25 else None,
    }  # fmt: skip


def _two_wheeler(
    rng: np.random.Generator, moto: bool, view: str, facing: int, ridden: bool
) -> dict:
    rider = _person(rng, view, facing) if ridden else None
    if rider is not None and moto:
        rider["hair"] = _jitter(
            rng, _pick(rng, ((20, 20, 22), (230, 230, 230), (190, 30, 30), (30, 60, 150))), 8
        )
    color = _jitter(rng, _pick(rng, _CAR_COLORS if moto else _CLOTH_COLORS), 10)
    return {"moto": moto, "view": view, "facing": facing, "color": color, "rider": rider}


def _make_things(
    rng: np.random.Generator,
    cam: _Camera,
    size: tuple[int, int],
    road: dict,
    count: int,
    z_far: float,
) -> list[_Obj]:
    """``count`` things (plus a tram now and then) placed where they belong, without overlaps."""
    z_min = max(3.0, 0.85 * cam.f * cam.height / (size[0] - cam.cy))  # feet near the bottom row
    names = list(_THING_MIX)
    weights = np.asarray(list(_THING_MIX.values()))
    kinds = [names[i] for i in rng.choice(len(names), size=count, p=weights / weights.sum())]
    if rng.random() < 0.15:
        kinds.insert(0, "train")
    things: list[_Obj] = []
    for kind in kinds:
        for _ in range(10):
            group = _sample_thing(rng, kind, road, z_min, z_far)
            if not any(_overlap(a, b) for a in group for b in things):
                things += group
                if kind == "train" and group[0].p["axis"] == "z":
                    road["rails"] = group[0].x
                break
    return things


def _overlap(a: _Obj, b: _Obj, margin: float = 0.2) -> bool:
    return (
        a.x + a.fp[0] < b.x + b.fp[1] + margin and b.x + b.fp[0] < a.x + a.fp[1] + margin
        and a.z + a.fp[2] < b.z + b.fp[3] + margin and b.z + b.fp[2] < a.z + a.fp[3] + margin
    )  # fmt: skip


def _sample_thing(
    rng: np.random.Generator, kind: str, road: dict, z_min: float, z_far: float
) -> list[_Obj]:
    side = _pick(rng, road["sides"])
    sign, edge, walk = side["sign"], side["edge"], side["walk"]
    left, right = road["left"], road["right"]
    facing = _pick(rng, (-1, 1))
    if kind in ("car", "truck", "bus", "train"):
        p = _vehicle(rng, kind)
        length, width = p["length"], p["width"]
        mode = rng.random()
        crossing = {"car": 0.1, "truck": 0.1, "bus": 0.08, "train": 0.4}[kind]
        parked = crossing + {"car": 0.3, "truck": 0.08, "bus": 0.0, "train": 0.0}[kind]
        if mode < crossing:
            p.update(axis="x", sign=facing)
            z = rng.uniform(max(z_min + 4, 10), z_far + 5)
            fp = (-length / 2, length / 2, -width / 2, width / 2)
            return [
                _Obj(kind, rng.uniform(-left, right), z, p, vx=facing * rng.uniform(3, 8), fp=fp)
            ]
        if mode < parked:
            x, speed, closest = sign * (edge - width / 2 - rng.uniform(0.1, 0.4)), 0.0, 0.8 * z_min
        else:  # in a lane; not so close that it fills the picture
            x, facing = _pick(rng, road["lanes"])
            x, speed = x + rng.uniform(-0.3, 0.3), facing * rng.uniform(4, 12)
            closest = max(0.8 * z_min, 6.0 if kind == "car" else 12.0)
        p.update(axis="z", sign=facing)
        near = _loguniform(rng, closest, z_far)
        fp = (-width / 2, width / 2, -length / 2, length / 2)
        return [_Obj(kind, x, near + length / 2, p, vz=speed, fp=fp)]
    if kind == "person":
        if rng.random() < 0.8:
            view = _pick(rng, ("front", "back", "side"))
            x, z = (
                sign * (edge + rng.uniform(0.4, max(0.5, walk - 0.3))),
                _loguniform(rng, z_min, z_far - 15),
            )
        else:
            view = "side"
            x, z = rng.uniform(-left, right), _loguniform(rng, z_min, z_far - 20)
        vx, vz = {"side": (facing * 1.3, 0.0), "front": (0.0, -1.3), "back": (0.0, 1.3)}[view]
        group = [
            _Obj(
                "person",
                x,
                z,
                _person(rng, view, facing),
                vx=vx,
                vz=vz,
                fp=(-0.25, 0.25, -0.25, 0.25),
            )
        ]
        if rng.random() < 0.4:
            dx, dz = _pick(rng, (-1, 1)) * rng.uniform(0.5, 0.75), rng.uniform(-0.4, 0.4)
            group.append(
                _Obj(
                    "person",
                    x + dx,
                    z + dz,
                    _person(rng, view, facing),
                    vx=vx,
                    vz=vz,
                    fp=(-0.25, 0.25, -0.25, 0.25),
                )
            )
        return group
    moto = kind in ("motorcyclist", "motorcycle")
    if kind in ("cyclist", "motorcyclist") and rng.random() < 0.75:
        if moto:
            x, facing = _pick(rng, road["lanes"])
            x += rng.uniform(-0.8, 0.8)
        else:
            x, facing = sign * (edge - rng.uniform(0.5, 1.0)), 1 if sign > 0 else facing
        view = "back" if facing > 0 else "front"
        speed = facing * (rng.uniform(6, 12) if moto else rng.uniform(3, 6))
        p = _two_wheeler(rng, moto, view, facing, True)
        return [
            _Obj(
                kind,
                x,
                _loguniform(rng, z_min, z_far - 15),
                p,
                vz=speed,
                fp=(-0.35, 0.35, -0.9, 0.9),
            )
        ]
    if kind in ("cyclist", "motorcyclist"):  # crossing the road
        x, z, vx = (
            rng.uniform(-left, right),
            _loguniform(rng, z_min, z_far - 10),
            facing * rng.uniform(3, 6),
        )
    else:  # parked
        x = sign * (edge + rng.uniform(0.3, 0.9) if kind == "bicycle" else edge - 0.5)
        z, vx = _loguniform(rng, z_min, z_far - 20), 0.0
    p = _two_wheeler(rng, moto, "side", facing, kind in ("cyclist", "motorcyclist"))
    return [_Obj(kind, x, z, p, vx=vx, fp=(-0.9, 0.9, -0.35, 0.35))]


# ---------------------------------------------------------------------------------------------
# Rendering


def _render(sc: _Scene, t: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The scene at time ``t`` (s): RGB uint8 image and Cityscapes instance ids (uint16)."""
    h, w = sc.size
    cam, dz = sc.cam, sc.speed * t
    cv = _Canvas(h, w)
    _draw_sky(cv, sc, t)
    _draw_ground(cv, sc, dz)
    layer = {"skyline": 0, "building": 1, "park": 1, "wall": 2, "fence": 2, "hedge": 2}
    for o in sorted(sc.facades, key=lambda o: (layer[o.kind], -o.z)):
        _DRAW_FACADE[o.kind](cv, cam, o, o.x, o.z - dz)
    placed = []
    for i, o in enumerate(sc.street):
        x, z = o.x + o.vx * t, o.z + o.vz * t - dz
        x0, x1, z0 = x + o.fp[0], x + o.fp[1], z + o.fp[2]
        if 1.0 <= z0 < 400:
            placed.append((-math.hypot(max(x0, 0.0, -x1), z0), i, o, x, z))
    codes: dict[int, int] = {}
    for _, _, o, x, z in sorted(placed, key=lambda item: item[:2]):
        _DRAW_STREET[o.kind](cv, cam, o, x, z, codes)
    if sc.look["ego"]:
        hood = sc.look["ego"] * h
        cv.ellipse(
            (w / 2, h + 0.9 * hood), (0.8 * w, 1.9 * hood), (38, 40, 44), _L["ego vehicle"], 4
        )
        cv.ellipse((w / 2, h + 0.9 * hood), (0.5 * w, 1.5 * hood), (70, 72, 78), None, None, 2)
    if sc.look["void"]:
        u, v, r = sc.look["void"]
        cv2.ellipse(cv.ids, (int(u), int(v)), (int(r), int(0.6 * r)), 0, 0, 360, 0, -1)
    return _finish(cv, sc, rng), cv.ids


def _new_code(codes: dict[int, int], name: str) -> int:
    """The next Cityscapes instance id (label id * 1000 + index) of class ``name``."""
    label = _L[name]
    codes[label] = codes.get(label, -1) + 1
    return label * 1000 + codes[label]


def _finish(cv: _Canvas, sc: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Texture, lighting, colour cast, contrast, blur and sensor noise."""
    h, w = sc.size
    look = sc.look
    tex_rng = np.random.default_rng(sc.texture_seed)  # same texture in every video frame
    low = cv2.resize(tex_rng.standard_normal((h // 8 + 2, w // 8 + 2), dtype=np.float32), (w, h))
    high = tex_rng.standard_normal((h, w), dtype=np.float32)
    img = cv.rgb.astype(np.float32)
    img += ((0.6 * low + 0.8 * high) * cv.tex)[..., None]
    light = cv2.resize(look["light"], (w, h), interpolation=cv2.INTER_CUBIC)
    img *= light[..., None] * look["cast"]
    img = (img - 128.0) * look["contrast"] + (128.0 + look["brightness"])
    if look["blur"] > 0:
        img = cv2.GaussianBlur(img, (0, 0), look["blur"])
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * look["noise"]
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_sky(cv: _Canvas, sc: _Scene, t: float) -> None:
    h, w = sc.size
    horizon = min(h, max(1, math.ceil(sc.cam.cy)))
    a = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    top, bottom = (np.asarray(sc.colors[k], np.float32) for k in ("sky_top", "sky_bottom"))
    cv.rgb[:horizon] = top * (1 - a) + bottom * a
    cv.ids[:horizon] = _L["sky"]
    cv.tex[:horizon] = 2
    for u, v, size, puffs in sc.clouds:
        u = (u + 3 * t) % (1.3 * w) - 0.15 * w
        for du, dv, r, tone in puffs:
            cv.ellipse(
                (u + du * size, v + dv * size),
                (r * size, 0.5 * r * size),
                (238 * tone,) * 3,
                None,
                4,
            )


def _draw_ground(cv: _Canvas, sc: _Scene, dz: float) -> None:
    """Terrain, sidewalks with curbs and joints, road with parking, markings and crossings."""
    h, w = sc.size
    cam, c, road = sc.cam, sc.colors, sc.road

    def ground(x0, x1, z0, z1, color, code=None, tex=None):
        cv.poly(list(cam.project(_ground_quads(x0, x1, z0, z1))), color, code, tex)

    below = np.array([[-1, cam.cy], [w + 1, cam.cy], [w + 1, h + 1], [-1, h + 1]])
    cv.poly([below], c["terrain"], _L["terrain"], 16)
    tile = road["tile"]
    joints = np.arange(int(30 / tile) + 1) * tile + (-dz % tile)
    for side in road["sides"]:
        s, edge, outer = side["sign"], side["edge"], side["edge"] + side["walk"]
        if side["paved"]:
            ground(s * outer, s * (outer + 60), 0, _FAR, _shade(c["walk"], 0.93), _L["sidewalk"], 7)
        ground(s * edge, s * outer, 0, _FAR, c["walk"], _L["sidewalk"], 6)
        ground(s * edge, s * outer, joints, joints + 0.05, _shade(c["walk"], 0.8))
        ground(s * edge, s * (edge + 0.2), 0, _FAR, _shade(c["walk"], 1.12), _L["sidewalk"], 4)
    left, right = road["left"], road["right"]
    ground(-left, right, 0, _FAR, c["road"], _L["road"], 9)
    for x, half, z0, length, tone in road["patches"]:
        ground(x - half, x + half, z0 - dz, z0 + length - dz, _shade(c["road"], tone))
    if "rails" in road:
        for x in (road["rails"] - 0.72, road["rails"] + 0.72):
            ground(x - 0.04, x + 0.04, 0, _FAR, (70, 70, 74))
    for side in road["sides"]:
        s, edge = side["sign"], side["edge"]
        for z0, z1 in side["parking"]:
            ground(
                s * (edge - 2.4),
                s * edge,
                z0 - dz,
                z1 - dz,
                _shade(c["road"], 1.18),
                _L["parking"],
                14,
            )
            stripes = np.arange(z0, z1, 5.5) - dz
            ground(s * (edge - 2.4), s * edge, stripes, stripes + 0.12, c["marking"])
    period = road["period"]
    dashes = (road["phase"] - dz) % period + period * np.arange(-1, int(road["z_end"] / period) + 2)
    for x, solid in road["lines"]:
        z0, z1 = (0, _FAR) if solid else (dashes, dashes + road["dash"])
        ground(x - 0.07, x + 0.07, z0, z1, c["marking"], _L["road"], 3)
    if road["crosswalk"] is not None:
        xs = np.arange(-left + 0.3, right - 0.5, 1.0)
        z0 = road["crosswalk"] - dz
        ground(xs, xs + 0.5, z0, z0 + 3.0, c["marking"], _L["road"], 3)


def _draw_skyline(cv: _Canvas, cam: _Camera, o: _Obj, x: float, z: float) -> None:
    if z < 5:
        return
    for x0, x1, height, color, trees in o.p["blocks"]:
        quad = _frontal(cam, x0, x1, 0, height, z)
        if trees:
            center = cam.project(((x0 + x1) / 2, height * 0.5, z))
            axes = ((x1 - x0) * cam.f / z / 2, height * cam.f / z / 2)
            cv.ellipse(center, axes, color, _L["vegetation"], 18)
        else:
            cv.poly([quad], color, _L["building"], 6)


def _draw_windows(cv, cam, origin, axis, length, height, p, shade, u_min=0.0) -> None:
    cols = np.arange(p["col"] * 0.5, length - p["col"] * 0.4, p["col"])
    rows = p["sill"] + np.arange(p["floor"], height - p["floor"] * 0.7, p["floor"])
    u0, y0 = (a.ravel() for a in np.meshgrid(cols, rows))
    keep = u0 >= u_min
    if not keep.any():
        return
    polys = cam.project(_face_quads(origin, axis, u0, u0 + p["win_w"], y0, y0 + p["win_h"])[keep])
    bright = (np.flatnonzero(keep) * 7 + p["pattern"]) % 5 == 0
    cv.poly(list(polys[~bright]), _shade(p["glass"], shade))
    cv.poly(list(polys[bright]), _shade(p["glass2"], shade))
    if p["shop"]:
        shops = np.arange(0.5, length - 2.5, 4.0)
        shops = shops[shops >= u_min]
        if len(shops):
            cv.poly(
                list(cam.project(_face_quads(origin, axis, shops, shops + 3.2, 0.3, 2.6))),
                _shade(p["glass"], 0.8 * shade),
            )


def _draw_building(cv: _Canvas, cam: _Camera, o: _Obj, x: float, z: float) -> None:
    p = o.p
    s, z1, height, color = p["sign"], z + p["length"], p["height"], p["color"]
    if z1 <= _Z_NEAR:
        return
    if z >= _Z_NEAR:  # the gable end facing the camera
        front = _face_quads((x, 0, z), (s, 0, 0), 0, p["depth"], 0, height)
        cv.poly(list(cam.project(front)), _shade(color, 0.8), _L["building"], 9)
        _draw_windows(cv, cam, (x, 0, z), (s, 0, 0), p["depth"], height, p, 0.8)
    zc = max(z, _Z_NEAR)
    cv.poly(
        list(cam.project(_face_quads((x, 0, zc), (0, 0, 1), 0, z1 - zc, 0, height))),
        color,
        _L["building"],
        9,
    )
    _draw_windows(cv, cam, (x, 0, z), (0, 0, 1), p["length"], height, p, 1.0, u_min=zc - z)
    cornice = _face_quads((x, 0, zc), (0, 0, 1), 0, z1 - zc, height - 0.5, height)
    cv.poly(list(cam.project(cornice)), _shade(color, 0.7))


def _draw_crown(cv: _Canvas, cam: _Camera, x: float, z: float, crown: tuple, color) -> None:
    _, y, _, r, tone, trunk, leaves = crown
    if z < 1.0:
        return
    if trunk:
        cv.poly([_frontal(cam, x - 0.17, x + 0.17, 0, y, z)], (84, 64, 46), _L["vegetation"], 10)
    center, radius = cam.project((x, y, z)), r * cam.f / z
    base = _shade(color, tone)
    cv.ellipse(center, (radius, 0.9 * radius), base, _L["vegetation"], 26)
    for dx, dy, rr, shade in leaves:
        cv.ellipse(
            (center[0] + dx * radius, center[1] + dy * 0.9 * radius),
            (rr * radius, 0.8 * rr * radius),
            _shade(base, shade),
        )


def _draw_park(cv: _Canvas, cam: _Camera, o: _Obj, x: float, z: float) -> None:
    for crown in o.p["crowns"]:
        _draw_crown(cv, cam, x + o.p["sign"] * crown[0], z + crown[2], crown, o.p["color"])


def _draw_boundary(cv: _Canvas, cam: _Camera, o: _Obj, x: float, z: float) -> None:
    """Walls, fences and hedges along the outer edge of the sidewalk."""
    p = o.p
    z0, z1, height = max(z, _Z_NEAR), z + p["length"], p["height"]
    if z1 <= z0:
        return
    label = {"wall": "wall", "fence": "fence", "hedge": "vegetation"}[o.kind]
    tex = {"wall": 8, "fence": 6, "hedge": 28}[o.kind]
    cv.poly(
        list(cam.project(_face_quads((x, 0, z0), (0, 0, 1), 0, z1 - z0, 0, height))),
        p["color"],
        _L[label],
        tex,
    )
    if o.kind == "wall":  # concrete blocks under a coping
        cap = _face_quads((x, 0, z0), (0, 0, 1), 0, z1 - z0, height - 0.12, height)
        cv.poly(list(cam.project(cap)), _shade(p["color"], 1.15))
        rows = np.arange(0.5, height - 0.2, 0.5)
        joints = z + np.arange(math.ceil(z0 - z), min(z1, 40) - z, 1.2)
        seams = [_face_quads((x, 0, z0), (0, 0, 1), 0, z1 - z0, rows - 0.025, rows + 0.025)]
        seams.append(_face_quads((x, 0, 0), (0, 0, 1), joints, joints + 0.04, 0, height - 0.12))
        cv.poly([q for quads in seams for q in cam.project(quads)], _shade(p["color"], 0.75))
    elif o.kind == "fence":
        dark = _shade(p["color"], 0.55)
        for y in (0.15, height - 0.1):
            cv.poly(
                list(
                    cam.project(_face_quads((x, 0, z0), (0, 0, 1), 0, z1 - z0, y - 0.05, y + 0.05))
                ),
                dark,
            )
        bars = z + np.arange(math.ceil((z0 - z) * 5) / 5, min(z1, 40) - z, 0.2)
        if len(bars):
            cv.poly(
                list(cam.project(_face_quads((x, 0, 0), (0, 0, 1), bars, bars + 0.04, 0, height))),
                dark,
            )


def _draw_tree(cv: _Canvas, cam: _Camera, o: _Obj, x: float, z: float, codes: dict) -> None:
    _draw_crown(cv, cam, x, z, o.p["crown"], o.p["color"])


def _draw_pole(cv: _Canvas, cam: _Camera, o: _Obj, x: float, z: float, codes: dict) -> None:
    """A pole with a street lamp, a traffic sign or a traffic light (or nothing) on it."""
    p, k = o.p, cam.f / z
    half, s, top = max(p["width"] * k / 2, 0.6) / k, p["toward"], p["height"]
    cv.poly([_frontal(cam, x - half, x + half, 0, top, z)], p["color"], _L["pole"], 5)
    if p["top"] == "lamp":
        a, b = cam.project((x, top - 0.2, z)), cam.project((x + s * 1.6, top + 0.3, z))
        cv.line(a, b, 0.12 * k, p["color"], _L["pole"], 5)
        lamp = _frontal(cam, x + s * 1.2, x + s * 2.0, top + 0.1, top + 0.35, z)
        cv.poly([lamp], _shade(p["color"], 1.3), _L["pole"], 5)
    elif p["top"] == "sign":
        _draw_sign(cv, cam, x, p["sign"]["y"], z, p["sign"])
        if p["sign"]["second"]:
            second = {**p["sign"], "shape": "rect", "size": 0.7 * p["sign"]["size"]}
            _draw_sign(cv, cam, x, p["sign"]["y"] - 0.75 * p["sign"]["size"] - 0.15, z, second)
    elif p["top"] == "light":
        light = p["light"]
        if light["arm"]:
            a, b = cam.project((x, top - 0.3, z)), cam.project((x + s * light["arm"], top - 0.3, z))
            cv.line(a, b, 0.15 * k, p["color"], _L["pole"], 5)
            _draw_light(cv, cam, x + s * light["arm"] * 0.85, top - 0.4 - light["box"], z, light)
            if light["both"]:
                _draw_light(cv, cam, x, 2.2, z, light)
        else:
            _draw_light(cv, cam, x, top - light["box"] - 0.1, z, light)


def _draw_sign(cv: _Canvas, cam: _Camera, x: float, y: float, z: float, sign: dict) -> None:
    center, r = cam.project((x, y, z)), sign["size"] / 2 * cam.f / z
    code, shape = _L["traffic sign"], sign["shape"]
    if shape == "circle":
        cv.ellipse(center, (r, r), sign["rim"], code, 3)
        cv.ellipse(center, (0.72 * r, 0.72 * r), sign["fill"])
        return
    corners = {
        "triangle": [(0, -1.1), (-0.95, 0.6), (0.95, 0.6)],
        "rect": [(-1.1, -0.8), (1.1, -0.8), (1.1, 0.8), (-1.1, 0.8)],
        "diamond": [(0, -1), (1, 0), (0, 1), (-1, 0)],
        "octagon": [(math.cos(a), math.sin(a)) for a in np.arange(8) * math.pi / 4 + math.pi / 8],
    }[shape]
    outline = np.asarray(center) + r * np.asarray(corners)
    cv.poly([outline], sign["rim"], code, 3)
    cv.poly([np.asarray(center) + 0.7 * r * np.asarray(corners)], sign["fill"])


def _draw_light(cv: _Canvas, cam: _Camera, x: float, y0: float, z: float, light: dict) -> None:
    width, height = light["width"], light["box"]
    cv.poly(
        [_frontal(cam, x - width / 2, x + width / 2, y0, y0 + height, z)],
        light["housing"],
        _L["traffic light"],
        3,
    )
    lit = ((255, 40, 30), (255, 180, 0), (40, 230, 120))
    r = 0.3 * width * cam.f / z
    for i, color in enumerate(lit):
        center = cam.project((x, y0 + height * (5 - 2 * i) / 6, z))
        cv.ellipse(center, (r, r), color if i == light["lit"] else _shade(color, 0.25))


def _draw_static(cv: _Canvas, cam: _Camera, o: _Obj, x: float, z: float, codes: dict) -> None:
    """Bins, benches and advertising columns: Cityscapes 'static' (ignored in training)."""
    p, code = o.p, _L["static"]
    half, height, color = p["width"] / 2, p["height"], p["color"]
    if p["kind"] == "bench":
        for y0, y1 in ((0.4, 0.5), (0.6, 0.9)):
            cv.poly([_frontal(cam, x - half, x + half, y0, y1, z)], color, code, 6)
        for leg in (x - half + 0.1, x + half - 0.15):
            cv.poly([_frontal(cam, leg, leg + 0.05, 0, 0.4, z)], (40, 40, 40), code, 6)
        return
    cv.poly([_frontal(cam, x - half, x + half, 0, height, z)], color, code, 6)
    if p["kind"] == "column":
        cv.poly(
            [_frontal(cam, x - half * 0.9, x + half * 0.9, 0.8, height - 0.4, z)],
            _shade(color, 1.4),
        )
    cv.poly(
        [_frontal(cam, x - half * 1.05, x + half * 1.05, height - 0.08, height, z)],
        _shade(color, 0.7),
        code,
        6,
    )


def _draw_vehicle(cv: _Canvas, cam: _Camera, o: _Obj, x: float, z: float, codes: dict) -> None:
    """Boxes with windows, lights and wheels on the faces the camera sees, far boxes first."""
    p = o.p
    code = _new_code(codes, p["kind"])
    length, width, sign, along = p["length"], p["width"], p["sign"], p["axis"] == "z"

    def world(u, w, y) -> np.ndarray:
        u, w, y = np.broadcast_arrays(*(np.asarray(a, float) for a in (u, w, y)))
        if along:
            return np.stack((x - width / 2 + w, y, z + sign * (u - length / 2)), axis=-1)
        return np.stack((x + sign * (u - length / 2), y, z - width / 2 + w), axis=-1)

    def faces_camera(normal, point) -> bool:
        return -(normal[0] * point[0] + normal[2] * point[2]) > 1e-6

    def nearest(part) -> float:
        u0, u1, w0, w1 = part["box"][:4]
        corners = world([u0, u1, u1, u0], [w0, w0, w1, w1], 0)
        xs, zs = corners[:, 0], corners[:, 2]
        return math.hypot(max(xs.min(), 0.0, -xs.max()), max(zs.min(), 0.0))

    shadow = world(
        [-0.2, length + 0.2, length + 0.2, -0.2], [-0.1, -0.1, width + 0.1, width + 0.1], 0
    )
    cv.poly([cam.project(shadow)], (34, 34, 36))
    du, dw = world(1, 0, 0) - world(0, 0, 0), world(0, 1, 0) - world(0, 0, 0)
    for part in sorted(p["parts"], key=nearest, reverse=True):
        u0, u1, w0, w1, y0, y1 = part["box"]
        color = part["color"]
        if cam.height > y1:
            cv.poly(
                [cam.project(world([u0, u1, u1, u0], [w0, w0, w1, w1], y1))],
                _shade(color, 1.1),
                code,
                4,
            )
        ends = {}
        if faces_camera(-du, world(u0, w0, 0)):
            ends["rear"] = u0
        elif faces_camera(du, world(u1, w0, 0)):
            ends["front"] = u1
        side = (
            w0
            if faces_camera(-dw, world(u0, w0, 0))
            else w1
            if faces_camera(dw, world(u0, w1, 0))
            else None
        )
        for u in ends.values():
            cv.poly(
                [cam.project(world(u, [w0, w1, w1, w0], [y0, y0, y1, y1]))],
                _shade(color, 0.95),
                code,
                4,
            )
        if side is not None:
            cv.poly(
                [cam.project(world([u0, u1, u1, u0], side, [y0, y0, y1, y1]))],
                _shade(color, 0.85),
                code,
                4,
            )
        for detail in part["details"]:
            kind = detail[0]
            if kind in ends:
                _, a0, a1, b0, b1, c = detail
                cv.poly(
                    [cam.project(world(ends[kind], [a0, a1, a1, a0], [b0, b0, b1, b1]))], c, code, 2
                )
            elif kind == "long" and side is not None:
                _, a0, a1, b0, b1, c = detail
                cv.poly(
                    [cam.project(world([a0, a1, a1, a0], side, [b0, b0, b1, b1]))],
                    _shade(c, 0.9),
                    code,
                    2,
                )
            elif kind == "wheel" and side is not None:
                _, uc, r = detail
                angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
                for radius, c in ((r, _TYRE), (0.5 * r, (120, 122, 126))):
                    rim = world(uc + radius * np.cos(angles), side, r + radius * np.sin(angles))
                    cv.poly([cam.project(rim)], c, code, 2)
            elif kind == "panto":
                uc, wc = detail[1], (w0 + w1) / 2
                arm = cam.project(world([uc - 0.7, uc, uc + 0.7], wc, [y1, y1 + 0.9, y1]))
                for a, b in zip(arm[:-1], arm[1:]):
                    cv.line(a, b, 0.06 * cam.f / z, (50, 50, 54), code, 2)


def _draw_person(cv: _Canvas, cam: _Camera, o: _Obj, x: float, z: float, codes: dict) -> None:
    p = o.p
    code = _new_code(codes, "person")
    k = cam.f / z * p["height"]  # pixels per body height
    fx, fy = cam.project((x, 0.0, z))
    d = p["facing"]

    def at(a: float, b: float) -> tuple[float, float]:
        return fx + k * a * d, fy - k * b

    def limb(a, b, width, color) -> None:
        cv.line(at(*a), at(*b), width * k, color, code, 3)

    sleeve = p["shirt"] if p["sleeves"] else p["skin"]
    st = 0.12 * p["stride"]
    cv.ellipse((fx, fy), (0.16 * k, 0.025 * k), (45, 45, 48))
    if p["view"] == "side":
        limb((0, 0.5), (-st, 0.03), 0.075, _shade(p["pants"], 0.8))
        limb((0, 0.79), (0.8 * st, 0.5), 0.05, _shade(sleeve, 0.8))
        limb((0, 0.5), (st, 0.03), 0.075, p["pants"])
        cv.poly(
            [np.array([at(-0.07, 0.82), at(0.07, 0.82), at(0.065, 0.48), at(-0.065, 0.48)])],
            p["shirt"],
            code,
            4,
        )
        limb((0, 0.79), (-0.8 * st, 0.5), 0.05, sleeve)
        head = (0.015, 0.905)
    else:
        for s in (-1, 1):
            limb((0.055 * s, 0.5), (0.065 * s + 0.3 * st, 0.03), 0.085, p["pants"])
        cv.poly(
            [np.array([at(-0.125, 0.82), at(0.125, 0.82), at(0.105, 0.48), at(-0.105, 0.48)])],
            p["shirt"],
            code,
            4,
        )
        for s in (-1, 1):
            limb((0.14 * s, 0.79), (0.16 * s, 0.5), 0.055, sleeve)
        head = (0.0, 0.905)
    back = p["view"] == "back"
    cv.ellipse(at(*head), (0.058 * k, 0.072 * k), p["hair"] if back else p["skin"], code, 3)
    if not back:
        cv.ellipse(at(head[0] - 0.01, head[1] + 0.04), (0.055 * k, 0.035 * k), p["hair"], code, 3)
    if p["bag"] is not None:
        cv.poly(
            [np.array([at(0.1, 0.64), at(0.2, 0.64), at(0.2, 0.45), at(0.1, 0.45)])],
            p["bag"],
            code,
            3,
        )


def _draw_two_wheeler(cv: _Canvas, cam: _Camera, o: _Obj, x: float, z: float, codes: dict) -> None:
    """A bicycle or motorcycle (side, back or front view), with its rider if it has one."""
    p = o.p
    bike = _new_code(codes, "motorcycle" if p["moto"] else "bicycle")
    rider = _new_code(codes, "rider") if p["rider"] is not None else None
    k = cam.f / z
    fx, fy = cam.project((x, 0.0, z))
    d = p["facing"]

    def at(a: float, b: float) -> tuple[float, float]:
        return fx + k * a * d, fy - k * b

    def quad(corners, color, code) -> None:
        cv.poly([np.array([at(a, b) for a, b in corners])], color, code, 3)

    def box(a0, a1, b0, b1, color, code) -> None:
        quad([(a0, b0), (a1, b0), (a1, b1), (a0, b1)], color, code)

    cv.ellipse((fx, fy), (0.5 * k if p["view"] == "side" else 0.25 * k, 0.04 * k), (45, 45, 48))
    if p["view"] == "side":
        if p["moto"]:
            for hub in (-0.68, 0.68):
                cv.ellipse(at(hub, 0.32), (0.32 * k, 0.32 * k), _TYRE, bike, 3)
                cv.ellipse(at(hub, 0.32), (0.16 * k, 0.16 * k), (130, 132, 136), bike, 3)
            quad(
                [
                    (-0.72, 0.62),
                    (-0.55, 0.82),
                    (-0.05, 0.85),
                    (0.2, 0.98),
                    (0.5, 0.95),
                    (0.55, 0.7),
                    (0.3, 0.35),
                    (-0.3, 0.38),
                ],
                p["color"],
                bike,
            )
            box(-0.2, 0.25, 0.3, 0.6, (60, 60, 64), bike)
            quad([(-0.6, 0.83), (-0.05, 0.86), (-0.05, 0.93), (-0.55, 0.9)], (30, 30, 30), bike)
            cv.line(at(0.5, 0.95), at(0.68, 0.32), 0.06 * k, (150, 150, 154), bike, 3)
            cv.line(at(0.45, 1.0), at(0.55, 1.12), 0.05 * k, (40, 40, 40), bike, 3)
        else:
            for hub in (-0.52, 0.52):
                cv.haze_disc(at(hub, 0.34), 0.34 * k, (50, 50, 54), 0.55, bike)
                cv.ellipse(at(hub, 0.34), (0.34 * k, 0.34 * k), _TYRE, bike, 3, thickness=0.05 * k)
            rear, bb, seat, head, front = (
                (-0.52, 0.34),
                (0.0, 0.28),
                (-0.15, 0.88),
                (0.4, 0.92),
                (0.52, 0.34),
            )
            for a, b in (
                (rear, bb),
                (rear, seat),
                (seat, bb),
                (bb, head),
                (seat, head),
                (head, front),
            ):
                cv.line(at(*a), at(*b), 0.06 * k, p["color"], bike, 3)
            cv.line(at(*head), at(0.34, 1.02), 0.04 * k, (40, 40, 40), bike, 3)
            cv.line(at(-0.22, 0.9), at(-0.06, 0.9), 0.05 * k, (30, 30, 30), bike, 3)
        if rider is not None:
            _draw_rider_side(cv, at, k, p["rider"], p["moto"], rider)
        return
    if rider is not None:
        _draw_rider_back(cv, at, k, p["rider"], rider)
    if p["moto"]:
        box(-0.08, 0.08, 0.0, 0.62, _TYRE, bike)
        quad([(-0.22, 0.5), (0.22, 0.5), (0.26, 0.95), (-0.26, 0.95)], p["color"], bike)
        box(-0.07, 0.07, 0.78, 0.86, _RED_LIGHT if p["view"] == "back" else _HEAD_LIGHT, bike)
        cv.line(at(-0.4, 1.15), at(0.4, 1.15), 0.03 * k, (40, 40, 40), bike, 3)
    else:
        box(-0.025, 0.025, 0.0, 0.68, _TYRE, bike)
        box(-0.02, 0.02, 0.34, 0.9, p["color"], bike)
        box(-0.07, 0.07, 0.88, 0.94, (30, 30, 30), bike)
        cv.line(at(-0.3, 1.02), at(0.3, 1.02), 0.04 * k, (40, 40, 40), bike, 3)


def _draw_rider_side(cv: _Canvas, at, k: float, p: dict, moto: bool, code: int) -> None:
    if moto:
        hip, knee, foot, shoulder, hand, head = (
            (-0.22, 0.95),
            (0.22, 0.8),
            (0.05, 0.42),
            (0.0, 1.5),
            (0.46, 1.1),
            (0.08, 1.68),
        )
    else:
        hip, knee, foot, shoulder, hand, head = (
            (-0.12, 0.98),
            (0.14, 0.68),
            (0.08, 0.18),
            (0.14, 1.48),
            (0.34, 1.02),
            (0.22, 1.64),
        )
    sleeve = p["shirt"] if p["sleeves"] else p["skin"]
    for a, b, width, color in (
        (hip, knee, 0.13, p["pants"]), (knee, foot, 0.11, p["pants"]),
        (hip, shoulder, 0.3, p["shirt"]), (shoulder, hand, 0.09, sleeve),
    ):  # fmt: skip
        cv.line(at(*a), at(*b), width * k, color, code, 3)
    cv.ellipse(at(*head), (0.11 * k, 0.13 * k), p["skin"], code, 3)
    cv.ellipse(at(head[0] - 0.02, head[1] + 0.05), (0.12 * k, 0.09 * k), p["hair"], code, 3)


def _draw_rider_back(cv: _Canvas, at, k: float, p: dict, code: int) -> None:
    sleeve = p["shirt"] if p["sleeves"] else p["skin"]
    for s in (-1, 1):
        cv.line(at(0.1 * s, 0.95), at(0.18 * s, 0.6), 0.13 * k, p["pants"], code, 3)
        cv.line(at(0.18 * s, 0.6), at(0.12 * s, 0.22), 0.11 * k, p["pants"], code, 3)
    corners = [at(-0.19, 1.5), at(0.19, 1.5), at(0.16, 0.92), at(-0.16, 0.92)]
    cv.poly([np.array(corners)], p["shirt"], code, 4)
    for s in (-1, 1):
        cv.line(at(0.17 * s, 1.45), at(0.3 * s, 1.05), 0.09 * k, sleeve, code, 3)
    front = p["view"] == "front"
    cv.ellipse(at(0, 1.64), (0.1 * k, 0.12 * k), p["skin"] if front else p["hair"], code, 3)
    if front:
        cv.ellipse(at(0, 1.69), (0.1 * k, 0.07 * k), p["hair"], code, 3)


_DRAW_FACADE = {
    "skyline": _draw_skyline, "building": _draw_building, "park": _draw_park,
    "wall": _draw_boundary, "fence": _draw_boundary, "hedge": _draw_boundary,
}  # fmt: skip
_DRAW_STREET = {
    "tree": _draw_tree, "pole": _draw_pole, "static": _draw_static,
    "car": _draw_vehicle, "truck": _draw_vehicle, "bus": _draw_vehicle, "train": _draw_vehicle,
    "person": _draw_person, "cyclist": _draw_two_wheeler, "motorcyclist": _draw_two_wheeler,
    "bicycle": _draw_two_wheeler, "motorcycle": _draw_two_wheeler,
}  # fmt: skip
