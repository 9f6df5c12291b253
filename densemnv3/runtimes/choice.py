"""Which engine runs an exported file: the one asked for (``--runtime``), or the fastest this
machine has installed, measured.

``--runtime auto`` (the default) times every installed engine that reads the file's format (and
scores it as PyTorch does: :meth:`Engine.inaccurate`) on this CPU, with the thread count it will run
with, at the size it will see, and takes the fastest; the figures and the choice go in the
``inference:`` line, and in a small cache (``$XDG_CACHE_HOME/densemnv3/routes.json``, keyed by the
file, its size and mtime, the input size, the threads and the engines' versions) so the next run
starts at once. One engine installed is chosen without timing. PyTorch checkpoints run in torch
(``--runtime torch``), on any device.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from densemnv3.errors import UserError

from .engines import Engine, OnnxRuntimeEngine, OpenVINOEngine, package_version
from .model import ExportedModel, exported_model
from .names import RUNTIMES

__all__ = [
    "FORMAT_NAMES",
    "RUNTIMES",
    "engine_class",
    "engines_for",
    "load_exported",
    "route_cache_path",
]

FORMAT_NAMES = {
    "onnx": "an ONNX file",
    "pte": "an ExecuTorch program (.pte)",
    "pytorch": "a PyTorch checkpoint",
}
_WARMUP, _TIMED = 2, 5


def engine_class(name: str) -> type[Engine]:
    if name == "onnxruntime":
        return OnnxRuntimeEngine
    if name == "openvino":
        return OpenVINOEngine
    if name == "executorch":
        from .executorch_engine import ExecuTorchEngine

        return ExecuTorchEngine
    raise UserError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {name!r}")


def engines_for(fmt: str) -> list[type[Engine]]:
    """The engines that read ``fmt`` files, fastest first on the CPUs measured (BENCHMARKS.md)."""
    names = {"onnx": ("openvino", "onnxruntime"), "pte": ("executorch",)}.get(fmt, ())
    return [engine_class(n) for n in names]


def check_runtime(runtime: str, fmt: str, path: str | os.PathLike) -> None:
    """A :class:`UserError` when ``--runtime`` cannot run a ``fmt`` file."""
    if runtime not in RUNTIMES:
        raise UserError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "auto":
        return
    if fmt == "pytorch":
        if runtime != "torch":
            raise UserError(
                f"--runtime {runtime}: {path} is a PyTorch checkpoint, which runs in torch; "
                f"export it first (tools/export.py, tools/quantize.py) and give that file, "
                f"or drop --runtime"
            )
        return
    names = [e.name for e in engines_for(fmt)]
    if runtime not in names:
        raise UserError(
            f"--runtime {runtime}: {path} is {FORMAT_NAMES[fmt]}, which runs in "
            f"{' or '.join(names)}; use one of them, or drop --runtime"
        )


def route_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "densemnv3" / "routes.json"


def _cache_key(
    path: Path, size: tuple[int, int], threads: int, asked: str | None, engines: list[type[Engine]]
) -> str:
    stat = path.stat()
    versions = ",".join(f"{e.name}={package_version(e.package)}" for e in engines)
    return (
        f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{size[0]}x{size[1]}|{threads}t|"
        f"{asked or 'default'}|{versions}"
    )


def _read_cache() -> dict:
    try:
        data = json.loads(route_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, entry: dict) -> None:
    """Best effort: a cache that cannot be written costs the next run its timing, nothing else."""
    from densemnv3.utils.files import write_text

    data = _read_cache()
    data[key] = entry
    try:
        write_text(route_cache_path(), json.dumps(data, indent=1))
    except Exception:  # noqa: BLE001 - WriteError, OSError: the choice stands without the cache
        pass


def time_engine(model: ExportedModel, size: tuple[int, int]) -> float:
    """The median milliseconds of one ``(1, 3, *size)`` forward of ``model``'s engine."""
    x = np.random.default_rng(0).standard_normal((1, 3, *size), dtype=np.float32)
    engine = model.engine()
    for _ in range(_WARMUP):
        engine.run(x)
    times = []
    for _ in range(_TIMED):
        start = time.perf_counter()
        engine.run(x)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def load_exported(
    path: str | os.PathLike,
    fmt: str,
    metadata: Mapping[str, Any],
    template: nn.Module,
    *,
    runtime: str = "auto",
    precision: str | None = None,
    size: tuple[int, int] | None = None,
    threads: int | None = None,
) -> ExportedModel:
    """The exported file at ``path`` (format ``fmt``) run by ``runtime``; ``auto`` measures the
    installed engines at ``size`` (the file's fixed size wins) with ``threads`` threads (None:
    torch's count) and takes the fastest. ``model.route`` says which and why, in a few words."""
    path = Path(path)
    check_runtime(runtime, fmt, path)
    if runtime not in ("auto", "torch"):
        reason = engine_class(runtime).inaccurate(metadata)
        if reason:
            print(f"warning: {path}: {reason}", file=sys.stderr)
        model = exported_model(path, metadata, template, engine_class(runtime), precision)
        model.route, model.threads = f"--runtime {runtime}", threads
        return model
    engines = [e for e in engines_for(fmt) if not e.inaccurate(metadata)]
    installed = [e for e in engines if e.installed()]
    if not installed:
        extras = " or ".join(f"pip install densemnv3[{e.extra}]" for e in engines)
        raise UserError(
            f"{path} is {FORMAT_NAMES[fmt]}, which no installed runtime reads: {extras}"
        )
    if len(installed) == 1:
        model = exported_model(path, metadata, template, installed[0], precision)
        model.threads = threads
        missing = [e for e in engines if e not in installed]
        left_out = [e.name for e in engines_for(fmt) if e.inaccurate(metadata)]
        model.route = (
            f"the only installed runtime for {fmt} files"
            + "".join(f"; pip install densemnv3[{e.extra}] adds {e.name}" for e in missing)
            + "".join(f"; not {name}, which scores this file below PyTorch" for name in left_out)
        )
        return model
    fixed = metadata.get("input_size")
    size = tuple(fixed) if isinstance(fixed, (list, tuple)) else tuple(size or (512, 1024))
    threads = threads or torch.get_num_threads()
    key = _cache_key(path, size, threads, precision, installed)
    cached = _read_cache().get(key)
    candidates = {e.name: exported_model(path, metadata, template, e, precision) for e in installed}
    if isinstance(cached, dict) and cached.get("choice") in candidates:
        timings, source = cached["ms"], "measured on this CPU earlier"
    else:
        timings = {}
        for name, model in candidates.items():
            model.threads = threads
            timings[name] = round(time_engine(model, size), 2)
            model.release()  # free it; the chosen one is made again at its first call
        source = "measured now"
        _write_cache(key, {"choice": min(timings, key=timings.get), "ms": timings})
    choice = min(timings, key=timings.get)
    model = candidates[choice]
    figures = ", ".join(
        f"{name} {ms:.1f} ms" for name, ms in sorted(timings.items(), key=lambda kv: kv[1])
    )
    model.route = (
        f"auto: fastest here at {size[0]}x{size[1]}, {threads} threads ({figures}; {source})"
    )
    return model
