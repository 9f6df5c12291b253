"""Reading an ExecuTorch program (``.pte``) without running it: the metadata it records and the
tensors its ``forward`` declares, through ExecuTorch's runtime (an optional dependency, imported
on first use and quietly: its C++ runtime logs to the process's stderr).

A ``.pte`` describes itself as an ONNX file does: the same metadata keys and values
(:mod:`.metadata`), as the JSON string its constant method ``densemnv3_metadata`` returns — no
sidecar file, and an app on the phone reads it with ``Module.execute("densemnv3_metadata")``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .metadata import decode_values, encode_values
from .signature import Signature

__all__ = [
    "METADATA_METHOD",
    "pte_metadata_method",
    "quiet_imports",
    "quiet_native",
    "read_pte",
    "read_pte_metadata",
    "runtime",
]

#: The constant method of a densemnv3 ``.pte`` that returns its metadata as JSON.
METADATA_METHOD = "densemnv3_metadata"


def pte_metadata_method(values: Mapping[str, Any]) -> dict[str, str]:
    """The ``constant_methods`` entry that records ``values`` in a ``.pte``: encoded as in an ONNX
    file (:func:`~densemnv3.checkpoint.metadata.encode_values`), as one JSON string."""
    return {METADATA_METHOD: json.dumps(encode_values(values), sort_keys=True)}


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Silence file descriptor 2 (where ExecuTorch's C++ logs go) and Python warnings."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """Import ExecuTorch (and torchao, which it imports) without their import-time noise: an
    experimental-API warning, and torchao's enum registration that torch logs as a warning."""
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with quiet_native():
            yield
    finally:
        logger.setLevel(level)


def runtime() -> Any:
    """``executorch.runtime.Runtime.get()``, imported quietly (:func:`quiet_imports`)."""
    with quiet_imports():
        from executorch.runtime import Runtime

        return Runtime.get()


def read_pte_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of the ``.pte`` at ``path``, with the keys and values an ONNX file of
    ``tools/export.py`` records (empty for a program without it). Raises ``ImportError`` without
    ExecuTorch, ``RuntimeError``/``ValueError`` for a damaged file."""
    return read_pte(path)[0]


def read_pte(path: str | os.PathLike) -> tuple[dict[str, Any], tuple[Signature, Signature] | None]:
    """:func:`read_pte_metadata`, and the inputs and outputs its ``forward`` method declares
    (no names, static sizes: :mod:`.signature`), or ``None`` without a ``forward``."""
    with quiet_native():
        program = runtime().load_program(Path(path))
        signature = _forward_signature(program) if "forward" in program.method_names else None
        if METADATA_METHOD not in program.method_names:
            return {}, signature
        (text,) = program.load_method(METADATA_METHOD).execute([])
    values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"{METADATA_METHOD} returned {type(values).__name__}, not a dict")
    return decode_values(values), signature


#: ExecuTorch's ScalarType codes of the element types the check names.
_SCALAR_TYPES = {
    6: "float32",
    5: "float16",
    7: "float64",
    4: "int64",
    3: "int32",
    1: "int8",
    0: "uint8",
    15: "bfloat16",
}


def _forward_signature(program: Any) -> tuple[Signature, Signature]:
    """The ``forward`` method's tensors as :mod:`.signature` compares them, read from its
    metadata without loading it."""
    meta = program.metadata("forward")

    def entry(tensor_meta: Any) -> tuple[None, tuple[int, ...] | None, str | None]:
        try:
            info = tensor_meta()
        except (RuntimeError, ValueError, IndexError):  # not a tensor (an int, a list)
            return None, None, "not a tensor"
        code = int(info.dtype())
        dtype = _SCALAR_TYPES.get(code, f"scalar type {code}")
        return None, tuple(int(s) for s in info.sizes()), dtype

    inputs = [entry(lambda i=i: meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]
    outputs = [entry(lambda i=i: meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]
    return inputs, outputs
