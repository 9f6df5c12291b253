"""ExecuTorch: runs the ``.pte`` programs of ``tools/export.py --format executorch`` (fp32 or int8,
lowered to XNNPACK) on the CPU, behind :class:`~densemnv3.runtimes.engines.Engine`.

A ``.pte`` describes itself as an ONNX file does: the same metadata keys and values
(:mod:`.metadata`), as the JSON string its constant method ``densemnv3_metadata`` returns
(:func:`pte_metadata_method` makes it, :func:`read_pte_metadata` reads it) — no sidecar file, and
an app on the phone reads it with the same ``Module.execute("densemnv3_metadata")``.

Threads: ExecuTorch's XNNPACK delegate runs on one process-wide pthreadpool (as many threads as
cores at first), which Python sizes only through the pybindings' experimental
``_unsafe_reset_threadpool`` (with ``_threadpool_get_thread_count``: used here only, and tested).
A reset destroys the old pool, and an XNNPACK method keeps the pool it was loaded with, so an
engine resets the pool to its ``threads`` *before* loading its method and, when another engine
has reset it since, loads its method again (:meth:`ExecuTorchEngine.run`).

ExecuTorch's C++ runtime logs to the process's stderr (cpuinfo probing when its pool starts,
each reset, the cause of a load failure); the engine silences it while it loads, so a tool's
output and its one-line errors stay as they are.
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

import numpy as np

from densemnv3.errors import CheckpointError

from .engines import Engine
from .metadata import decode_values, encode_values
from .signature import Signature

__all__ = [
    "METADATA_METHOD",
    "ExecuTorchEngine",
    "pte_metadata_method",
    "quiet_imports",
    "quiet_native",
    "read_pte",
    "read_pte_metadata",
    "runtime",
]

#: The constant method of a densemnv3 ``.pte`` that returns its metadata as JSON.
METADATA_METHOD = "densemnv3_metadata"

#: How many times an engine of this process has resized ExecuTorch's pool: a method loaded
#: before the last resize holds a destroyed pool and is loaded again.
_pool_resets = 0


def pte_metadata_method(values: Mapping[str, Any]) -> dict[str, str]:
    """The ``constant_methods`` entry that records ``values`` in a ``.pte``: encoded as in an ONNX
    file (:func:`~densemnv3.runtimes.metadata.encode_values`), as one JSON string."""
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


def _reason(err: BaseException) -> str:
    """A load failure in a few words: the file is damaged, or needs what this runtime lacks."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"truncated or damaged, or made by another ExecuTorch version: {text}"


def _portable_lib() -> Any:
    runtime()  # imports it quietly
    from executorch.extension.pybindings import portable_lib

    return portable_lib


class ExecuTorchEngine(Engine):
    """A ``.pte`` program's ``forward``, run by ExecuTorch's runtime (the pybindings, with the
    XNNPACK backend) on ``threads`` threads; the file's precision is the one it computes in."""

    name, formats, package, extra = "executorch", ("pte",), "executorch", "executorch"
    batch = 1

    def __init__(self, path, threads, file_precision, precision=None, streams=1) -> None:
        super().__init__(path, threads, file_precision, precision, streams)
        self.require()
        self._load()

    def _load(self) -> None:
        """Size the pool to ``threads``, then load the program and its ``forward`` on it."""
        global _pool_resets
        lib = _portable_lib()
        with quiet_native():
            if lib._threadpool_get_thread_count() != self.threads:
                lib._unsafe_reset_threadpool(self.threads)
                _pool_resets += 1
            self._resets = _pool_resets
            try:
                self.program = runtime().load_program(self.path)
                self.method = self.program.load_method("forward")
            except (RuntimeError, KeyError) as err:  # the runtime's error code; no forward method
                raise CheckpointError(
                    f"{self.path}: ExecuTorch cannot load its forward method "
                    f"({_reason(err)}); export it again with tools/export.py "
                    f"--format executorch"
                ) from None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        if self._resets != _pool_resets:  # another engine resized the pool: ours is gone
            self.method = self.program = None
            self._load()
        import torch

        outputs = self.method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])
        # copies already: the runtime clones its outputs out of the method's arena (clone_outputs)
        return [o.numpy() for o in outputs]

    def pool_threads(self) -> int:
        """The threads of ExecuTorch's pool now (what XNNPACK runs on)."""
        return int(_portable_lib()._threadpool_get_thread_count())
