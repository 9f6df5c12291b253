"""A dataset's class list: names, colours and the ignore value, from the config or the data.

One rule for every format: ``data.classes`` (and ``data.palette``) in the config, else a
``classes.json`` or ``classes.txt`` in the dataset's root, else the format's standard list
(Pascal VOC's, ADE20K's), else one error saying where to put the names.

- ``classes.txt``: one class per line in label order, ``name`` or ``name R G B`` (its colour in
  RGB masks and overlays); blank lines and ``#`` comments are skipped.
- ``classes.json``: a list of names, or ``{"classes": [...], "palette": [[R, G, B], ...]}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densemnv3.errors import DataError

IGNORE_INDEX = 255
FILES = ("classes.json", "classes.txt")
_HOW = (
    "give data.classes in the config (and data.palette for RGB masks), or write ROOT/classes.txt "
    "(one 'name' or 'name R G B' per line, in label order)"
)


@dataclass(frozen=True)
class ClassList:
    """Class ``names`` in label order, their RGB ``palette`` ((K, 3) uint8, or None when the
    source gives none), the label of pixels not evaluated, and where the list came from."""

    names: tuple[str, ...]
    palette: np.ndarray | None
    source: str
    ignore_index: int = IGNORE_INDEX

    def __len__(self) -> int:
        return len(self.names)

    def colours(self) -> np.ndarray:
        """The palette, or a fixed distinct colour per class when the source gives none."""
        return self.palette if self.palette is not None else default_palette(len(self.names))


def read_classes(
    root: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    default: ClassList | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> ClassList:
    """The class list of the dataset at ``root`` (see the module's rule)."""
    root = Path(root)
    if classes is not None:
        names, source = tuple(str(c) for c in classes), "data.classes"
        colours = _palette(palette, len(names), "data.palette") if palette is not None else None
    else:
        found = next((root / f for f in FILES if (root / f).is_file()), None)
        if found is not None:
            names, colours = _read_file(found)
            source = str(found)
            if palette is not None:
                colours = _palette(palette, len(names), "data.palette")
        elif default is not None:
            names, colours, source = default.names, default.palette, default.source
            if palette is not None:
                colours = _palette(palette, len(names), "data.palette")
        else:
            raise DataError(f"{root}: no class list (no {' or '.join(FILES)}); {_HOW}")
    if not names:
        raise DataError(f"{source}: the class list is empty; {_HOW}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{source}: class {repeated[0]!r} is listed twice; name each class once")
    if not 0 <= ignore_index <= 255 or ignore_index < len(names):
        raise DataError(
            f"{source}: ignore value {ignore_index} is one of the {len(names)} class labels "
            f"(0-{len(names) - 1}) or outside 0-255; set data.ignore_index to another value"
        )
    return ClassList(names, colours, source, ignore_index)


def default_palette(n: int) -> np.ndarray:
    """Pascal VOC's colour map (bit-interleaved label ids): distinct colours for any ``n``,
    and the colours VOC's own palette PNGs use for its classes."""
    ids = np.arange(max(n, 256))
    colours = np.zeros((len(ids), 3), np.uint8)
    value = ids.copy()
    for shift in range(7, -1, -1):
        for channel in range(3):
            colours[:, channel] |= ((value >> channel) & 1).astype(np.uint8) << shift
        value >>= 3
    return colours[:n] if n else colours


def _read_file(path: Path) -> tuple[tuple[str, ...], np.ndarray | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the class list ({error}); {_HOW}") from error
    if path.suffix == ".json":
        return _read_json(path, text)
    names, colours = [], []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) >= 4 and all(p.isdigit() for p in parts[-3:]):
            names.append(" ".join(parts[:-3]))
            colours.append([int(p) for p in parts[-3:]])
        else:
            names.append(line)
            colours.append(None)
    given = [c for c in colours if c is not None]
    if given and len(given) != len(names):
        missing = names[colours.index(None)]
        raise DataError(
            f"{path}: class {missing!r} has no colour but others do; give every class "
            "'name R G B' or none"
        )
    return tuple(names), _palette(given, len(names), str(path)) if given else None


def _read_json(path: Path, text: str) -> tuple[tuple[str, ...], np.ndarray | None]:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise DataError(f"{path}: not JSON ({error}); {_HOW}") from error
    colours = None
    if isinstance(data, dict):
        colours, data = data.get("palette"), data.get("classes")
    if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
        raise DataError(
            f'{path}: expected a list of class names or {{"classes": [...], "palette": '
            "[[R, G, B], ...]}"
        )
    names = tuple(data)
    return names, _palette(colours, len(names), str(path)) if colours is not None else None


def _palette(colours, n: int, source: str) -> np.ndarray:
    try:
        array = np.asarray(colours, dtype=np.int64)
    except (TypeError, ValueError):
        array = np.zeros((0,))
    if array.shape != (n, 3) or array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise DataError(
            f"{source}: the palette must give each of the {n} classes one RGB colour "
            f"(3 integers 0-255); got shape {array.shape}"
        )
    if len({tuple(c) for c in array.tolist()}) != n:
        raise DataError(f"{source}: two classes share a colour; give each class its own")
    return array.astype(np.uint8)
