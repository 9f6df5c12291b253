"""Bad data, found and named: every unreadable or inconsistent sample of a dataset, skipped with
``data.skip_bad`` and listed in ``skipped_files.txt``; boxes dropped for having no area, listed in
``dropped_boxes.txt``. Training and evaluation both report through :func:`report_bad_data`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from densemnv3.errors import DataError
from densemnv3.utils.files import write_text

SHOWN = 3  # dropped boxes named on screen; the file has them all


def find_bad_samples(
    load: Callable[[int], object], size: int, *, desc: str, progress: bool = True
) -> list[tuple[int, str]]:
    """``(index, reason)`` of every sample whose ``load(index)`` raises :class:`DataError`."""

    def problem(index: int) -> str | None:
        try:
            load(index)
        except DataError as error:
            return str(error)
        return None

    # OpenCV releases the GIL while decoding, so threads scale with the cores.
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        problems = list(
            tqdm(
                pool.map(problem, range(size)),
                total=size,
                desc=desc,
                disable=None if progress else True,
                leave=False,
            )
        )
    return [(i, reason) for i, reason in enumerate(problems) if reason is not None]


def report_bad_data(
    datasets: Sequence,
    out_dir: str | os.PathLike,
    *,
    skip_bad: bool,
    log: Callable[[str], None],
    write: bool = True,
    progress: bool = True,
) -> list[tuple[str, str]]:
    """With ``skip_bad``, check every sample of ``datasets`` up front (their ``validate``) so
    that the bad ones are left out, and list all skipped files in ``out_dir/skipped_files.txt``;
    list dropped boxes in ``out_dir/dropped_boxes.txt`` either way. ``log`` gets one line per
    list; ``write=False`` (DDP ranks other than 0) checks without writing or logging. Returns
    the skipped (file, reason) pairs."""
    out_dir = Path(out_dir)
    skipped, dropped, ann_files = [], [], []
    for dataset in datasets:
        if skip_bad:
            dataset.validate(progress=progress and write)
            skipped += dataset.bad_files
        boxes = getattr(dataset, "dropped_boxes", [])
        if boxes:
            dropped += boxes
            ann_files.append(str(dataset.ann_file))
    if not write:
        return skipped
    out_dir.mkdir(parents=True, exist_ok=True)
    if skipped:
        path = out_dir / "skipped_files.txt"
        _write_lines(path, [f"{file}\t{reason}" for file, reason in skipped])
        log(f"data.skip_bad: skipped {len(skipped)} bad files, listed in {path}")
    if dropped:
        path = out_dir / "dropped_boxes.txt"
        _write_lines(path, [f"{ann_id}\t{file}\t{box}" for ann_id, file, box in dropped])
        named = ", ".join(f"annotation {ann_id} ({file})" for ann_id, file, _ in dropped[:SHOWN])
        more = f" and {len(dropped) - SHOWN} more" if len(dropped) > SHOWN else ""
        log(
            f"{', '.join(ann_files)}: dropped {len(dropped)} boxes with no width or height after "
            f"clipping to the image: {named}{more}; all listed in {path}"
        )
    return skipped


def sample_counts(dataset) -> dict[str, int]:
    """``images_evaluated`` / ``images_skipped`` for a ``metrics.json``."""
    return {"images_evaluated": len(dataset), "images_skipped": len(dataset.bad_files)}


def _write_lines(path: Path, lines: list[str]) -> None:
    write_text(path, "".join(f"{line}\n" for line in lines))
