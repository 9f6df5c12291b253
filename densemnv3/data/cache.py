"""Decoded-sample cache: Cityscapes pairs decoded once into uncompressed ``.npy`` files.

Decoding a full-size PNG costs more than the whole training augmentation (BENCHMARKS.md, data
pipeline), so the cache holds each pair as it comes out of :meth:`CityscapesSegmentation.load`
(uint8 RGB image, uint8 train ids); loader workers memory-map the files
(``np.load(mmap_mode="r")``), so the random scale-and-crop warp reads only the source pixels of its
crop, and the result is byte-identical to the decoded path. Layout::

    CACHE/manifest.json              format, version, dataset root, split, one entry per sample
    CACHE/000000_image.npy           (H, W, 3) uint8 RGB
    CACHE/000000_label.npy           (H, W) uint8 train ids

The manifest records the size and mtime of every source file; opening a cache that belongs to
another root or split, has another format version, or whose sources were added, removed or
modified since it was written raises one :class:`DataError` saying how to rebuild it. The
manifest is written last, so an interrupted build is never taken for a cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from densemnv3.errors import DataError, UserError
from densemnv3.utils.files import WriteError, disk_error, storage_problem, write_text

FORMAT = "densemnv3-decoded-cityscapes"
VERSION = 1
MANIFEST = "manifest.json"


def rebuild_hint(cache: str | os.PathLike, root: str | os.PathLike, split: str) -> str:
    """How to (re)build the cache of ``root``'s ``split`` at ``cache``."""
    return (
        f"rebuild it with python tools/cache_dataset.py CONFIG --split {split} "
        f"--set data.root={root} data.decoded_cache={cache} (or drop data.decoded_cache)"
    )


def _stat(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _relative(samples: Sequence[tuple[str, str]], root: Path) -> list[tuple[str, str]]:
    return [(os.path.relpath(i, root), os.path.relpath(lab, root)) for i, lab in samples]


def write_decoded_cache(
    dataset: Any, out: str | os.PathLike, *, progress: bool = True, threads: int | None = None
) -> Path:
    """Decode every sample of ``dataset`` (a :class:`CityscapesSegmentation` without a decoded
    cache) into ``out``. A sample that fails to decode raises its :class:`DataError`, or, when the
    dataset has ``skip_bad``, is recorded in the manifest and raises that error when loaded."""
    out = Path(out)
    root = Path(os.path.realpath(dataset.root))
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        if not any(
            out.glob("*_image.npy")
        ):  # not an (interrupted) cache: never delete others' files
            raise UserError(
                f"{out}: folder exists and is not a decoded cache; choose a new or empty folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # from here on the old cache is invalid
    for old in (*out.glob("*_image.npy"), *out.glob("*_label.npy")):
        old.unlink()

    def write(index: int) -> dict[str, Any]:
        image_path, label_path = dataset.samples[index]
        entry: dict[str, Any] = {"image_stat": _stat(image_path), "label_stat": _stat(label_path)}
        try:
            image, label = dataset.load(index)
        except DataError as error:
            if not dataset.skip_bad:
                raise
            return entry | {"error": str(error)}
        name = f"{index:06d}"
        np.save(out / f"{name}_image.npy", np.ascontiguousarray(image))
        np.save(out / f"{name}_label.npy", np.ascontiguousarray(label))
        return entry | {"file": name, "shape": list(label.shape)}

    # OpenCV's decoder and numpy's file writes release the GIL, so threads scale with the cores.
    try:
        with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
            entries = list(
                tqdm(
                    pool.map(write, range(len(dataset))),
                    total=len(dataset),
                    desc=f"caching {dataset.split}",
                    disable=not progress,
                )
            )
    except OSError as err:
        if disk_error(err) is None:
            raise
        for partial in (*out.glob("*_image.npy"), *out.glob("*_label.npy")):
            partial.unlink(missing_ok=True)  # give the space back: without a manifest it is unused
        raise WriteError(
            f"{out}: cannot write the decoded cache, {storage_problem(err)}; its "
            f"partial files were removed (a cache without {MANIFEST} is never read); "
            f"free space, then run tools/cache_dataset.py again"
        ) from None
    for (image, label), entry in zip(_relative(dataset.samples, root), entries):
        entry.update(image=image, label=label)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "root": str(root),
        "split": dataset.split,
        "samples": entries,
    }
    write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return out


class DecodedCache:
    """A decoded cache opened for the ``samples`` (absolute image, label paths) of ``root``'s
    ``split``; raises :class:`DataError` if it is missing, foreign, of another version or stale."""

    def __init__(
        self,
        path: str | os.PathLike,
        root: str | os.PathLike,
        split: str,
        samples: Sequence[tuple[str, str]],
    ) -> None:
        self.path = Path(path)
        real_root = Path(os.path.realpath(root))
        hint = rebuild_hint(self.path, root, split)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise DataError(
                f"{self.path}: no decoded cache here ({MANIFEST} missing or the build was "
                f"interrupted); {hint}"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"{manifest_path}: unreadable manifest ({error}); {hint}") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise DataError(
                f"{self.path}: decoded cache format {manifest.get('format')} version "
                f"{manifest.get('version')}, this densemnv3 reads {FORMAT} version "
                f"{VERSION}; {hint}"
            )
        if manifest.get("root") != str(real_root) or manifest.get("split") != split:
            raise DataError(
                f"{self.path}: decoded cache is of {manifest.get('root')} split "
                f"{manifest.get('split')!r}, not of {real_root} split {split!r}; {hint}"
            )
        self._check_fresh(manifest["samples"], _relative(samples, real_root), samples, hint)
        self._entries = {image: entry for (image, _), entry in zip(samples, manifest["samples"])}

    def _check_fresh(
        self,
        entries: list[dict],
        relative: list[tuple[str, str]],
        samples: Sequence[tuple[str, str]],
        hint: str,
    ) -> None:
        cached = [(e["image"], e["label"]) for e in entries]
        if cached != relative:
            added = sorted(set(relative) - set(cached))
            removed = sorted(set(cached) - set(relative))
            what = (
                f"{added[0][0]} was added"
                if added
                else f"{removed[0][0]} was removed"
                if removed
                else "the samples were reordered"
            )
            raise DataError(
                f"{self.path}: decoded cache is stale: {what} "
                f"({len(added)} added, {len(removed)} removed since it was built); {hint}"
            )
        for entry, (image, label) in zip(entries, samples):
            for path, key in ((image, "image_stat"), (label, "label_stat")):
                try:
                    stat = _stat(path)
                except OSError:
                    stat = None
                if stat != entry[key]:
                    raise DataError(
                        f"{self.path}: decoded cache is stale: {path} changed (size or "
                        f"modification time) since it was built; {hint}"
                    )

    def load(self, image_path: str) -> tuple[np.ndarray, np.ndarray]:
        """The cached pair of the sample whose image is ``image_path``, memory-mapped read-only:
        (H, W, 3) uint8 RGB image and (H, W) uint8 train ids."""
        entry = self._entries[image_path]
        if "error" in entry:
            raise DataError(entry["error"])
        arrays = []
        for kind in ("image", "label"):
            file = self.path / f"{entry['file']}_{kind}.npy"
            try:
                arrays.append(np.load(file, mmap_mode="r"))
            except (OSError, ValueError) as error:
                raise DataError(
                    f"{file}: cannot read the cached array ({error}); rebuild the cache with "
                    "python tools/cache_dataset.py"
                ) from None
        image, label = arrays
        if label.shape != tuple(entry["shape"]) or image.shape != (*entry["shape"], 3):
            raise DataError(
                f"{self.path / entry['file']}_*.npy: cached arrays have the wrong shape; "
                "rebuild the cache with python tools/cache_dataset.py"
            )
        return image, label
