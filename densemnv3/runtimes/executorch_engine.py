"""ExecuTorch: runs the ``.pte`` programs of ``tools/export.py --format executorch`` (fp32 or int8,
lowered to XNNPACK) on the CPU, behind :class:`~densemnv3.runtimes.engines.Engine`.

A ``.pte`` describes itself as an ONNX file does, with the same metadata: the JSON string its
constant method ``densemnv3_metadata`` returns (written and read by
:mod:`densemnv3.checkpoint.pte`).

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

from typing import Any

import numpy as np

from densemnv3.checkpoint.pte import quiet_native, runtime
from densemnv3.errors import CheckpointError

from .engines import Engine

__all__ = ["ExecuTorchEngine"]

#: How many times an engine of this process has resized ExecuTorch's pool: a method loaded
#: before the last resize holds a destroyed pool and is loaded again.
_pool_resets = 0


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
