"""What a weights file is by its content, and reading a PyTorch checkpoint from one.

:func:`sniff` classifies a file by its bytes, whatever its name: ``torch.save``'s zip or legacy
pickle, a TorchScript archive, an ONNX model, an ExecuTorch program (``.pte``), text, or unknown
binary data.
:func:`read_checkpoint` loads a PyTorch checkpoint and, for anything else, raises one
:class:`~densemnv3.errors.CheckpointError` saying what the file is. Nothing here needs ``onnx``.
"""

from __future__ import annotations

import ast
import codecs
import os
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO, Literal

import torch

from densemnv3.errors import CheckpointError

__all__ = [
    "FIX",
    "Kind",
    "TORCH_KINDS",
    "file_kind",
    "not_a_checkpoint",
    "read_checkpoint",
    "sniff",
]

Kind = Literal["empty", "zip", "torchscript", "pickle", "onnx", "pte", "text", "unknown binary"]
#: The kinds ``torch.load`` reads (TorchScript is a zip too, but holds a program, not a state dict).
TORCH_KINDS = ("zip", "pickle")
FIX = "use another checkpoint, e.g. last.pt or best.pt of a run"

#: ``ModelProto``'s fields in onnx.proto: number -> protobuf wire type (0 varint, 2 bytes).
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_HEAD = 512


def sniff(path: str | os.PathLike) -> Kind:
    """What the file at ``path`` holds, by its content (see :data:`Kind`)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "empty"
    with open(path, "rb") as f:
        head = f.read(_HEAD)
        if head.startswith(b"PK"):
            return "torchscript" if _is_torchscript(path) else "zip"
        if head[0] == 0x80 and len(head) > 1 and 1 <= head[1] <= 5:  # PROTO opcode, protocol 1-5
            return "pickle"
        if _is_pte(head):
            return "pte"
        if head[0] == 0x08 and _is_onnx(f, size):  # field 1 (ir_version), a varint
            return "onnx"
    return "text" if _text(head) is not None else "unknown binary"


def file_kind(path: str | os.PathLike) -> Kind:
    """:func:`sniff`, with a file that cannot be opened a :class:`CheckpointError`."""
    try:
        return sniff(path)
    except OSError as err:
        raise CheckpointError(
            f"{path}: cannot read it ({err.strerror}); check its permissions"
        ) from None


def _is_torchscript(path: Path) -> bool:
    """A complete zip with TorchScript's ``code/`` folder."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.startswith("code/") or "/code/" in n for n in archive.namelist())


def _is_pte(head: bytes) -> bool:
    """An ExecuTorch program: a flatbuffer whose file identifier (bytes 4-8) is ``ET`` and the
    schema version in two digits (``ET12`` from ExecuTorch 1.x), its root table after that."""
    return (
        len(head) >= 8
        and head[4:6] == b"ET"
        and head[6:8].isdigit()
        and 8 <= int.from_bytes(head[:4], "little") < 2**31
    )


def _varint(f: BinaryIO) -> int | None:
    value = shift = 0
    for _ in range(10):
        byte = f.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
    return None


def _is_onnx(f: BinaryIO, size: int) -> bool:
    """The top-level protobuf fields of an ONNX ``ModelProto``, walked from the first byte:
    ``ir_version`` (1-64) first, every field one of ``ModelProto``'s with its wire type (or a
    later field number), the last ending at the end of the file — or, for a truncated file,
    running past it after two complete fields."""
    f.seek(0)
    fields = 0
    while f.tell() < size and fields < 10_000:
        tag = _varint(f)
        if tag is None:
            return False
        number, wire = tag >> 3, tag & 7
        expected = _ONNX_FIELDS.get(number, wire if 26 < number < 64 else -1)
        if wire != expected or wire not in (0, 1, 2, 5) or (fields == 0 and number != 1):
            return False
        if wire == 0:
            value = _varint(f)
            if value is None:
                return fields >= 2  # cut inside this field
            if fields == 0 and not 1 <= value <= 64:
                return False
        else:
            length = _varint(f) if wire == 2 else 8 if wire == 1 else 4
            if length is None or f.tell() + length > size:
                return fields >= 2  # cut inside this field
            f.seek(length, os.SEEK_CUR)
        fields += 1
    return fields >= 2


def _text(head: bytes) -> str | None:
    """``head`` as text when it is UTF-8 of printable characters (a character cut at its end is
    dropped), else ``None``."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    text = text.removeprefix("\ufeff")
    return text if all(c.isprintable() or c in "\t\n\r\f\v" for c in text) else None


def _sets_cfg(path: Path) -> bool:
    """Python source that binds ``cfg`` at top level: a densemnv3 config."""
    if path.stat().st_size > 2**20:
        return False
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.asname or a.name.split(".")[0] for a in node.names]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
        else:
            continue
        if "cfg" in names:
            return True
    return False


def not_a_checkpoint(path: str | os.PathLike, kind: Kind) -> str:
    """What a file that is no PyTorch checkpoint is, and what to do: the message after
    ``path: ``."""
    path = Path(path)
    size = path.stat().st_size
    if kind == "empty":
        return f"an empty file (0 bytes), not a checkpoint; {FIX}"
    if kind == "torchscript":
        return f"a TorchScript model (as tools/export.py writes), not a checkpoint; {FIX}"
    if kind == "onnx":
        return (
            "an ONNX model, run by onnxruntime, not a PyTorch checkpoint; give the checkpoint it "
            "was made from (best.pt)"
        )
    if kind == "pte":
        return (
            "an ExecuTorch program (.pte), run by ExecuTorch, not a PyTorch checkpoint; give the "
            "checkpoint it was exported from (best.pt)"
        )
    if kind == "text":
        if _sets_cfg(path):
            return (
                "a densemnv3 config (Python that sets cfg), not a checkpoint; give it as the "
                "config (the first argument) and a checkpoint as the weights, e.g. last.pt or "
                "best.pt of a run"
            )
        with open(path, "rb") as f:
            text = _text(f.read(_HEAD)) or ""
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"a text file, not a checkpoint (it starts {first!r}); {FIX}"
    return f"not a checkpoint at all ({size} bytes of unknown binary data); {FIX}"


def _unreadable(path: Path, kind: Kind, err: BaseException) -> str:
    """What a zip or pickle file that ``torch.load`` refused is, in a few words."""
    size = path.stat().st_size
    if kind == "zip":
        if not zipfile.is_zipfile(path):
            return f"truncated checkpoint ({size} bytes; the zip archive ends early)"
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            first = names[0] if names else "nothing"
            return f"a zip archive (first entry {first!r}), not a PyTorch checkpoint"
    if "Unsupported global" in str(err):
        return (
            "holds pickled Python objects (e.g. a whole nn.Module saved with torch.save(model)), "
            "which are not loaded, for safety; save model.state_dict() instead"
        )
    if kind == "pickle" and (isinstance(err, (EOFError, struct.error)) or "EOF" in str(err)):
        return f"truncated checkpoint ({size} bytes; the pickle stream ends early)"
    return f"a damaged checkpoint ({size} bytes; torch.load fails with {type(err).__name__})"


def read_checkpoint(path: str | os.PathLike, kind: Kind | None = None) -> dict:
    """``torch.load(path, weights_only=True)``; a file that is missing or is no PyTorch
    checkpoint raises :class:`CheckpointError` saying what the file is. ``kind``: the file's
    :func:`sniff`, when the caller has it already."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found; check the path (--weights / --resume)"
        )
    kind = kind or file_kind(path)
    if kind not in TORCH_KINDS:
        raise CheckpointError(f"{path}: {not_a_checkpoint(path, kind)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - damaged files make torch.load raise anything
        raise CheckpointError(f"{path}: {_unreadable(path, kind, err)}; {FIX}") from None
