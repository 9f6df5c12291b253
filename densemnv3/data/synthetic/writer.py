"""The public API: write a synthetic set (Cityscapes layout + COCO json) or a synthetic video.

Each image is drawn from its own ``np.random.default_rng((seed, split, index))``, so the output is
the same whatever the number of workers or the size of the other split.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import numbers
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from densemnv3.data.labels import ID_PALETTE, LABELS, THING_NAMES
from densemnv3.errors import DataError, UserError
from densemnv3.utils.files import WriteError, disk_error, storage_problem, write_image, write_text

from .formats import FORMATS, check_format, convert_generated, layout_files, remove_layout
from .render import render
from .street import MAX_SPEED, make_scene

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
_UNFINISHED = (
    f"the files of the unfinished set were removed (it has no {_COMPLETE}, so no run "
    "takes it as complete); free some space and run again"
)
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
    format: str = "cityscapes",
) -> Path:
    """Write ``train`` + ``val`` synthetic street images of ``size`` (H, W) under ``out``.

    Cityscapes files (``leftImg8bit``, ``gtFine`` label ids, instance ids, colours) plus COCO
    ``annotations/instances_{split}.json``; ``out/.complete`` is written last. ``out`` must be new,
    empty or an earlier synthetic set (which is replaced). ``workers`` defaults to up to 2
    processes (a plain loop for a handful of images); it does not change the output. A full disk
    is a :class:`WriteError`, after the files written so far are removed. Another ``format`` (see
    :mod:`.formats`) is generated in a temporary sibling of ``out``, then converted into ``out``.
    """
    marker = _marker(train=train, val=val, size=size, seed=seed, format=format)
    out = Path(out)
    _prepare(out, marker)
    if "format" in marker:
        kwargs = dict(
            train=train, val=val, size=size, seed=seed, progress=progress, workers=workers
        )
        convert_generated(out, marker["format"], partial(make_synthetic, **kwargs), _UNFINISHED)
        _write_json(out / _COMPLETE, marker, _UNFINISHED)
        (out / _IN_PROGRESS).unlink()
        return out
    tasks = [
        (str(out), split, index, tuple(marker["size"]), marker["seed"])
        for split in ("train", "val")
        for index in range(marker[split])
    ]
    if workers is None:
        workers = 1 if len(tasks) < 16 else min(2, os.cpu_count() or 1)
    try:
        _write_set(out, marker, tasks, workers, progress)
    except BaseException as err:
        storage = disk_error(err)
        if storage is None and not isinstance(err, WriteError):
            raise
        remove_layout(out, "cityscapes")  # the workers are stopped; the marker stays: it is ours
        if isinstance(err, WriteError):
            raise
        raise WriteError(
            f"{out}: cannot write, {storage_problem(storage)}; {_UNFINISHED}"
        ) from None
    (out / _IN_PROGRESS).unlink()
    return out


def _write_set(out: Path, marker: dict, tasks: list[tuple], workers: int, progress: bool) -> None:
    results: dict[str, list] = {"train": [], "val": []}
    with tqdm(total=len(tasks), desc="synthetic", unit="img", disable=not progress) as bar:
        for split, index, image, anns in _run(tasks, workers):
            results[split].append((index, image, anns))
            bar.update()
    (out / "annotations").mkdir(exist_ok=True)
    for split, items in results.items():
        _write_json(out / "annotations" / f"instances_{split}.json", _coco(items), _UNFINISHED)
    _write_json(out / _COMPLETE, marker, _UNFINISHED)


def synthetic_exists(
    out: str | os.PathLike,
    *,
    train: int = 200,
    val: int = 50,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    format: str = "cityscapes",
) -> bool:
    """True when ``out`` holds a complete synthetic set made with these arguments and layout."""
    try:
        found = json.loads((Path(out) / _COMPLETE).read_text())
    except (OSError, ValueError):
        return False
    return found == _marker(train=train, val=val, size=size, seed=seed, format=format)


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


def synthetic_video_frames(
    *, frames: int = 120, size: tuple[int, int] = (256, 512), fps: float = 10.0, seed: int = 0
) -> Iterator[np.ndarray]:
    """The BGR frames of a synthetic drive, as :func:`make_synthetic_video` encodes them."""
    height, width = _check_size(size)
    if not isinstance(frames, numbers.Integral) or frames < 1:
        raise UserError(f"frames must be a positive integer, got {frames!r}")
    if not fps > 0:
        raise UserError(f"fps must be positive, got {fps!r}")
    seed = _check_seed(seed)
    street = make_scene(
        np.random.default_rng([seed, _VIDEO_KEY]), (height, width), travel=frames / fps * MAX_SPEED
    )
    for k in range(int(frames)):
        rgb, _ = render(street, k / fps, np.random.default_rng([seed, _VIDEO_KEY, k]))
        yield cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


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
    fourcc = _FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise UserError(f"{path}: unsupported video extension; use one of {', '.join(_FOURCC)}")
    drive = synthetic_video_frames(frames=frames, size=size, fps=fps, seed=seed)
    first = next(drive)  # checks the arguments before a file is created
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height)
    )
    if not writer.isOpened():
        raise DataError(f"{path}: OpenCV cannot open a {fourcc} video writer; try an .avi file")
    try:
        writer.write(first)
        for frame in drive:
            writer.write(frame)
    finally:
        writer.release()
    _check_video(path, frames, (height, width))
    return path


def _marker(
    *, train: int, val: int, size: tuple[int, int], seed: int, format: str = "cityscapes"
) -> dict:
    layout = check_format(format)  # "coco" is the Cityscapes tree: no key, as before formats
    for name, count in (("train", train), ("val", val)):
        if not isinstance(count, numbers.Integral) or count < 0:
            raise UserError(f"{name} must be a non-negative integer, got {count!r}")
    height, width = _check_size(size)
    marker = {
        "generator": "densemnv3.data.synthetic",
        "version": _VERSION,
        "train": int(train),
        "val": int(val),
        "size": [height, width],
        "seed": _check_seed(seed),
    }
    return marker if layout == "cityscapes" else {**marker, "format": layout}


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
        earlier = _read_marker(out / _COMPLETE) or _read_marker(out / _IN_PROGRESS)
        if earlier is None:
            raise UserError(
                f"{out} is not empty and holds no synthetic dataset; "
                "choose a new or empty directory"
            )
        foreign = _foreign_files(out, earlier)
        if foreign:
            raise UserError(
                f"{out} holds {len(foreign)} files the synthetic generator did not write (e.g. "
                f"{foreign[0]}); it replaces only a set of its own: choose a new or empty "
                "directory (--out, data.root), or move those files away"
            )
        _write_json(out / _IN_PROGRESS, marker)
        (out / _COMPLETE).unlink(missing_ok=True)
        remove_layout(out, earlier.get("format", "cityscapes"))
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / _IN_PROGRESS, marker)


def _read_marker(path: Path) -> dict | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _foreign_files(out: Path, marker: dict) -> list[Path]:
    """Files under ``out`` that the set ``marker`` describes does not have (a user's own data
    put there, or a set of other counts), which regenerating it must not delete."""
    counts = {split: marker.get(split) for split in _SPLIT_KEYS}
    stems = {
        s: [_stem(s, i) for i in range(n if isinstance(n, int) else 0)] for s, n in counts.items()
    }
    layout = marker.get("format", "cityscapes")  # one this version does not know: none is ours
    own = {out / name for name in layout_files(layout, stems)} if layout in FORMATS else set()
    own |= {out / _COMPLETE, out / _IN_PROGRESS}
    return sorted(
        p
        for p in out.rglob("*")
        if not p.is_dir()
        and p not in own
        and not (p.name.startswith(".") and p.name.endswith(".tmp"))
    )


def _write_json(path: Path, data: dict, hint: str = "") -> None:
    write_text(path, json.dumps(data), hint=hint)


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
    street = make_scene(rng, size)
    rgb, ids = render(street, 0.0, rng)
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
    write_image(path, array, hint=_UNFINISHED)


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
