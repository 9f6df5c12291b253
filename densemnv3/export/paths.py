"""Where an exported file is written: ``--out`` checked and given its format's suffix."""

from __future__ import annotations

import os
from pathlib import Path

from densemnv3.errors import UserError


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a writable file name (its folder is created); a :class:`UserError` otherwise."""
    path = Path(path)
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{path}: {blocker} is a file, not a folder; choose another --out")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"{path}: cannot create its folder ({err.strerror}); choose another --out"
        ) from None
    if path.is_dir():
        raise UserError(
            f"{path}: is a folder; --out must be a file name, e.g. {path / 'model.onnx'}"
        )
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{path.parent}: folder is not writable; choose another --out")
    return path


#: File name suffixes of each format; the first is added to an ``--out`` name without one.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "onnx": (".onnx",),
    "torchscript": (".pt", ".pth", ".ts", ".torchscript", ".ptl"),
    "executorch": (".pte",),
}


#: What each format's file is called in messages.
_FORMAT_NAMES = {"onnx": "an ONNX", "torchscript": "a TorchScript", "executorch": "an ExecuTorch"}


#: Suffixes that name a model format: an ``--out`` ending in another format's is an error.
_MODEL_SUFFIXES = {
    *SUFFIXES["onnx"],
    *SUFFIXES["torchscript"],
    *SUFFIXES["executorch"],
    ".ckpt",
    ".bin",
    ".safetensors",
    ".tflite",
    ".engine",
    ".pb",
    ".xml",
}


def output_file(path: str | os.PathLike, fmt: str) -> Path:
    """The file ``--out path`` names for a ``fmt`` model, checked by :func:`check_output_path`:
    ``path`` when it ends in one of the format's :data:`SUFFIXES`; ``path`` with the format's
    suffix added when it ends in none or in one that names no model format (``model_int8`` ->
    ``model_int8.onnx``); a :class:`UserError` when its suffix is another format's (``m.pt``)."""
    path = Path(path)
    suffix, own = path.suffix.lower(), SUFFIXES[fmt]
    if path.is_dir():
        return check_output_path(path)  # raises: a folder
    if suffix in _MODEL_SUFFIXES and suffix not in own:
        raise UserError(
            f"{path}: {_FORMAT_NAMES[fmt]} file's name ends in {' or '.join(own)}, not "
            f"{path.suffix}; choose --out {path.with_suffix(own[0])}"
        )
    if suffix not in own:
        path = path.with_name(path.name + own[0])
    return check_output_path(path)
