"""What ``densemnv3 predict --source`` names, as a list of images with the names their outputs
take: an image, a folder (``recursive``), a glob, a text file of paths, or a video file.

Each image's *name* is its path relative to the source's folder, less its suffix (``a/b.png``
-> ``a/b``), so outputs mirror the source's layout; two files that differ only in their suffix
keep it (``b.png``, ``b.jpg`` -> ``b.png``, ``b.jpg``). A video's frames are named by their
index under the video's stem (``clip/000017``). :func:`shard` takes every N-th image from the
K-th, so N processes split one source with no overlap.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from densemnv3.data.io import IMAGE_SUFFIXES
from densemnv3.errors import UserError

__all__ = ["VIDEO_SUFFIXES", "Images", "images_of", "parse_shard", "shard"]

#: A source file with one of these suffixes is a video: each frame an image.
VIDEO_SUFFIXES = frozenset(".mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg .wmv .flv .ts .mts".split())
#: A source file with one of these suffixes lists image paths, one per line.
LIST_SUFFIXES = frozenset({".txt", ".lst"})


@dataclass
class Images:
    """The images of a source: ``paths`` and their output ``names`` (same order), or a
    ``video`` whose frames are the images; ``left_out``: files of the folder that are not
    images, by suffix."""

    paths: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    video: str | None = None
    left_out: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.paths)


def images_of(source: str, *, recursive: bool = False) -> Images:
    """The images ``source`` names (see the module's docstring); a :class:`UserError` when it
    names none or does not exist."""
    path = Path(source)
    if glob.has_magic(source) and not path.exists():
        matches = sorted(glob.glob(source, recursive=True))
        files = [m for m in matches if os.path.isfile(m)]
        if not files:
            raise UserError(f"--source {source}: the pattern matches no file")
        return _named(files, _fixed_prefix(source))
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        files = sorted(str(p) for p in path.glob(pattern) if p.is_file())
        images = _named([f for f in files if _is_image(f)], path)
        images.left_out = Counter(
            Path(f).suffix.lower() or "(none)"
            for f in files
            if not _is_image(f) and not Path(f).name.startswith(".")
        )
        if not images.paths:
            deeper = "" if recursive else "; add --recursive to look in its subfolders"
            raise UserError(f"--source {source}: the folder holds no image{deeper}")
        return images
    if not path.exists():
        raise UserError(f"--source {source}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return Images(video=str(path))
    if suffix in LIST_SUFFIXES:
        return _listed(path)
    return _named([str(path)], path.parent)  # one image (read as one, whatever its suffix)


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with 0 <= K < N."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text}: expected K/N, e.g. 0/4 (the first of 4 shards)") from None
    if n < 1 or not 0 <= k < n:
        raise UserError(f"--shard {text}: K must be 0..N-1 and N at least 1, got {k}/{n}")
    return k, n


def shard(items: Sequence, k: int, n: int) -> list:
    """Every ``n``-th of ``items`` from the ``k``-th."""
    return list(items[k::n])


def video_frames(path: str, k: int = 0, n: int = 1) -> Iterator[tuple[str, object]]:
    """``(name, frame)`` of each frame of the video at ``path`` whose index is ``k`` modulo
    ``n``, named ``STEM/NNNNNN``; decoded in a background thread."""
    from .video import FrameReader

    stem = Path(path).stem
    reader = FrameReader.open(path)
    try:
        for index, frame in enumerate(reader):
            if index % n == k:
                yield f"{stem}/{index:06d}", frame
    finally:
        reader.stop()


def _is_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _fixed_prefix(pattern: str) -> Path:
    """The folder of a glob above its first wildcard: names are relative to it."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
    return Path(*fixed) if fixed else Path(".")


def _listed(list_file: Path) -> Images:
    """The paths of a list file, one per line (blank lines and ``#`` lines left out; relative
    paths are relative to the list's folder), named relative to their common folder."""
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--source {list_file}: cannot read the list of images ({err})") from None
    paths = [
        str(list_file.parent / line.strip()) if not os.path.isabs(line.strip()) else line.strip()
        for line in lines
        if line.strip() and not line.lstrip().startswith("#")
    ]
    paths = list(dict.fromkeys(paths))  # a path listed twice is predicted once
    if not paths:
        raise UserError(f"--source {list_file}: the list names no image (one path per line)")
    parents = [os.path.dirname(os.path.abspath(p)) for p in paths]
    return _named(paths, Path(os.path.commonpath(parents)), absolute=True)


def _named(paths: list[str], root: Path, *, absolute: bool = False) -> Images:
    """``paths`` with their names relative to ``root``, a suffix kept where two would clash."""
    base = os.path.abspath(root) if absolute else str(root)
    relative = [
        os.path.relpath(os.path.abspath(p) if absolute else p, base).replace(os.sep, "/")
        for p in paths
    ]
    stems = [os.path.splitext(r)[0] for r in relative]
    clashes = {s for s, count in Counter(stems).items() if count > 1}
    names = [r if s in clashes else s for r, s in zip(relative, stems)]
    names = [n if not n.startswith("../") else n.replace("../", "__/") for n in names]
    return Images(paths=list(paths), names=names)
