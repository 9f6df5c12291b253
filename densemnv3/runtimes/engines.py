"""The engines that run an exported file on the CPU, behind one interface (:class:`Engine`).

An engine takes a float32 ``(N, 3, H, W)`` array and returns the graph's outputs as arrays, in
the order the file declares them. Each is imported only when it runs, so a missing package is a
one-line error naming the extra that installs it:

- :class:`OnnxRuntimeEngine`: ONNX files, fp32 and int8 (QDQ), onnxruntime's CPU provider;
  ``pip install densemnv3[export]``.
- :class:`OpenVINOEngine`: the same ONNX files as they are, OpenVINO's CPU plugin; its precision
  hint is explicit: ``bf16`` where the CPU has it (AVX-512 BF16 / AMX), else ``f32``; ``fp32``
  asks for f32 everywhere. ``pip install densemnv3[openvino]``.
- :class:`~densemnv3.runtimes.executorch_engine.ExecuTorchEngine`: ``.pte`` programs lowered to
  XNNPACK (:mod:`.executorch_engine`); ``pip install densemnv3[executorch]``.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from densemnv3.errors import UserError

__all__ = ["Engine", "OnnxRuntimeEngine", "OpenVINOEngine", "openvino_core", "package_version"]


def package_version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a package without metadata still runs
        return "?"


class Engine:
    """Runs one exported file with ``threads`` intra-op threads.

    ``precision`` is what the user asked for (None: the engine's default for the file, which is
    ``file_precision`` except where the engine says otherwise, see :meth:`compute_precision`).
    ``streams``: slices of a batch it runs side by side (:meth:`run_streams`), the threads
    shared among them; 1: :meth:`run` takes the batch whole.
    """

    name: ClassVar[str] = ""
    #: The file formats it runs ("onnx", "pte").
    formats: ClassVar[tuple[str, ...]] = ()
    #: The module it imports, and the extra of densemnv3 that installs it.
    package: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    #: The batch its files take (None: any; ExecuTorch programs are traced at batch 1).
    batch: ClassVar[int | None] = None

    #: Whether it runs slices of a batch side by side (:meth:`run_streams`).
    splits: ClassVar[bool] = False

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int,
        file_precision: str,
        precision: str | None = None,
        streams: int = 1,
    ) -> None:
        self.path = Path(path)
        self.threads = threads
        self.streams = streams
        self.file_precision = file_precision
        self.precision = self.compute_precision(file_precision, precision)

    @classmethod
    def installed(cls) -> bool:
        try:
            importlib.import_module(cls.package)
        except ImportError:
            return False
        return True

    @classmethod
    def require(cls) -> None:
        """A :class:`UserError` naming the extra when the engine's package is missing."""
        if not cls.installed():
            raise UserError(
                f"--runtime {cls.name} needs the '{cls.package}' package, which is not "
                f"installed: pip install densemnv3[{cls.extra}]"
            )

    @classmethod
    def compute_precision(cls, file_precision: str, precision: str | None) -> str:
        """The precision the engine computes a ``file_precision`` file in when ``precision`` is
        asked for; raises :class:`UserError` for one it cannot give."""
        if precision not in (None, file_precision):
            raise UserError(
                f"{cls.name} runs an {file_precision} file in {file_precision}; drop "
                f"--precision {precision}"
                + (
                    " (or use --runtime openvino, whose precision hint takes fp32 and bf16)"
                    if file_precision == "fp32"
                    else ""
                )
            )
        return file_precision

    @classmethod
    def inaccurate(cls, metadata: Mapping[str, Any]) -> str | None:
        """Why the engine scores a file of this ``metadata`` measurably below PyTorch (then
        ``--runtime auto`` does not take it, and asking for it warns), or None."""
        return None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def run_streams(self, chunks: list[np.ndarray]) -> list[list[np.ndarray]]:
        """The outputs of each of ``streams`` slices of a batch, run side by side."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} {package_version(self.package)}"


class OnnxRuntimeEngine(Engine):
    """One session per stream, ``threads // streams`` threads each, run from a thread pool
    (onnxruntime releases the GIL while it runs)."""

    name, formats, package, extra = "onnxruntime", ("onnx",), "onnxruntime", "export"
    splits = True

    def __init__(self, path, threads, file_precision, precision=None, streams=1) -> None:
        super().__init__(path, threads, file_precision, precision, streams)
        self.require()
        self.sessions = [self._session(max(1, threads // streams)) for _ in range(streams)]
        self.session = self.sessions[0]
        self.input_name = self.session.get_inputs()[0].name
        self.pool = (
            ThreadPoolExecutor(streams - 1, thread_name_prefix="densemnv3-stream")
            if streams > 1
            else None
        )

    @staticmethod
    def session_options(threads: int):
        """The options of every session: ``threads`` intra-op threads, one inter-op."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # its workers spin through each run, as by default, but stop when it returns: left
        # spinning, they take the cores from the post-processing that follows every run
        # (BENCHMARKS.md, SSDLite batch 8 end to end)
        options.add_session_config_entry("session.force_spinning_stop", "1")
        return options

    def _session(self, threads: int):
        import onnxruntime as ort

        options = self.session_options(threads)
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})

    def run_streams(self, chunks: list[np.ndarray]) -> list[list[np.ndarray]]:
        pending = [
            self.pool.submit(s.run, None, {self.input_name: c})
            for s, c in zip(self.sessions[1:], chunks[1:])
        ]
        return [self.run(chunks[0])] + [p.result() for p in pending]


@functools.cache
def openvino_core() -> Any:
    """The process's one ``openvino.Core``, kept until exit.

    Each ``Core`` that loads the CPU plugin gives the calling thread an alternate signal stack of
    its own and, when it is freed, puts back the one it found. Cores freed in another order than
    made leave the thread on a stack already unmapped, and the next signal handled there (Python
    runs every handler it installs on the alternate stack: SIGCHLD after torch's DataLoader, SIGINT,
    SIGTERM) kills the process with SIGSEGV. One Core that lives as long as the process never does.
    """
    import openvino as ov

    return ov.Core()


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here (AVX-512 BF16 or AMX)."""
    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINOEngine(Engine):
    name, formats, package, extra = "openvino", ("onnx",), "openvino", "openvino"

    @classmethod
    def compute_precision(cls, file_precision: str, precision: str | None) -> str:
        """fp32 files: ``bf16`` where the CPU has it, unless ``fp32`` is asked; int8 files stay
        int8 (their float parts follow the same hint)."""
        cls.require()
        if precision not in (None, "fp32", "bf16", file_precision):
            raise UserError(
                f"openvino's precision hint is fp32 or bf16 (default: bf16 where the CPU has "
                f"it), got --precision {precision}"
            )
        if precision == "bf16" and not cpu_has_bf16():
            raise UserError(
                "--precision bf16: this CPU has no bf16 instructions (AVX-512 BF16 or AMX) "
                "for OpenVINO; use fp32"
            )
        if file_precision != "fp32":
            return file_precision
        return "bf16" if precision == "bf16" or (precision is None and cpu_has_bf16()) else "fp32"

    @classmethod
    def inaccurate(cls, metadata: Mapping[str, Any]) -> str | None:
        if (
            metadata.get("task") == "detection"
            and metadata.get("precision") == "int8"
            and metadata.get("int8_form", "onnxruntime") != "openvino"
        ):
            return (
                "OpenVINO 2026.4 scores the onnxruntime-shaped int8 SSDLite file 2.5-4 AP50 "
                "points below PyTorch on the synthetic val split (onnxruntime: 0.4-1.4); the file "
                "of tools/quantize.py --runtime openvino loses 1.25 in OpenVINO (BENCHMARKS.md)"
            )
        return None

    splits = True

    def __init__(self, path, threads, file_precision, precision=None, streams=1) -> None:
        super().__init__(path, threads, file_precision, precision, streams)
        self.hint = "f32" if precision == "fp32" or not cpu_has_bf16() else "bf16"
        self.asked = precision
        # streams of one compiled model, not a model per stream: each of those would pin its
        # threads to the same first cores, and the streams would run no faster than one
        compiled = self.compile(streams)
        self.requests = [compiled.create_infer_request() for _ in range(streams)]
        self.request = self.requests[0]
        self.count = len(compiled.outputs)

    def compile(self, streams: int = 1, profile: bool = False) -> Any:
        """The file compiled for the CPU with the engine's threads and precision hint;
        ``profile``: with per-node performance counters (:mod:`densemnv3.benchmark.profile`)."""
        import openvino.properties as props
        import openvino.properties.hint as hints

        return openvino_core().compile_model(
            str(self.path),
            "CPU",
            {
                props.inference_num_threads(): self.threads,
                hints.inference_precision(): self.hint,
                props.enable_profiling(): profile,
                **(
                    {props.num_streams(): streams}
                    if streams > 1
                    else {hints.performance_mode(): hints.PerformanceMode.LATENCY}
                ),
            },
        )

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        self.request.infer({0: x})
        return self._outputs(self.request)

    def run_streams(self, chunks: list[np.ndarray]) -> list[list[np.ndarray]]:
        for request, chunk in zip(self.requests, chunks):
            request.start_async({0: chunk})
        for request in self.requests:
            request.wait()
        return [self._outputs(request) for request in self.requests]

    def _outputs(self, request) -> list[np.ndarray]:
        # the request reuses its output buffers: copy before the next frame overwrites them
        return [request.get_output_tensor(i).data.copy() for i in range(self.count)]

    def describe(self) -> str:
        why = (
            "--precision fp32"
            if self.asked == "fp32"
            else "the CPU has bf16"
            if self.hint == "bf16"
            else "no bf16 on this CPU"
        )
        return f"{super().describe()}, precision hint {self.hint} ({why})"
