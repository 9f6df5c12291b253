"""NetAdapt's latency model: a lookup table of per-layer latencies on one inference route, whose
sum predicts a whole model's (Yang et al., ECCV 2018, section 3.2).

A table is one route (:data:`ROUTES`: ``torch``, the Predictor's CPU path; ``onnxruntime``, the
fp32 ONNX file; ``onnxruntime-int8``, the int8 QDQ file of tools/quantize.py; ``openvino``, the
fp32 ONNX file at its default precision hint), thread count, input size and CPU, at batch 1. Each
layer configuration (:mod:`.layers`) is built as a network of its own, timed once and kept in a
JSON file, so the hundreds a search proposes cost minutes once and nothing afterwards. A model's
prediction is the sum over its layers plus ``glue_ms`` (what no layer accounts for), which
:meth:`LatencyTable.calibrate` measures once on the original model. Int8 layers are quantized
with tools/quantize.py's settings but calibrated on one random input by min/max: ranges change no
kernel's speed.

How a layer is timed is the route's (:mod:`.timing`), whichever predicts the whole model better:
the wall clock, or for the :data:`PROFILED` routes the sum of its nodes in the runtime's profile
less the conversions at the graph's edges, which cost as much as the layer there. Every model is
timed with raw outputs, as the exported files hold it: without the LR-ASPP's final upsample, box
decoding or NMS.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import json
import os
import platform
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from densemnv3.checkpoint.metadata import OUTPUT_NAMES
from densemnv3.errors import UserError, did_you_mean
from densemnv3.export.graphs import exportable
from densemnv3.export.onnx_export import export_onnx, quiet
from densemnv3.inference.optimize import prepare_for_inference
from densemnv3.runtimes.engines import Engine, OnnxRuntimeEngine, OpenVINOEngine, package_version
from densemnv3.utils.device import torch_threads
from densemnv3.utils.files import write_text

from .layers import FLOAT_PREFIX, Layer, model_layers, onnx_model, torch_module
from .measure import SIDE_ROUNDS, SideBySide
from .timing import (
    interleaved_ms,
    median_ms,
    profiled_ms,
    steady_allocator,
    torch_call,
)

__all__ = ["ROUTES", "LatencyTable", "check_route", "default_cache_dir", "model_layers"]

ROUTES: tuple[str, ...] = ("torch", "onnxruntime", "onnxruntime-int8", "openvino")
#: Packages each route needs, with the extra of densemnv3 that installs them.
_NEEDS = {
    "torch": (),
    "onnxruntime": (("onnxruntime", "export"), ("onnx", "export"), ("onnxscript", "export")),
    "openvino": (("openvino", "openvino"), ("onnx", "export"), ("onnxscript", "export")),
}
_NEEDS["onnxruntime-int8"] = _NEEDS["onnxruntime"]
#: Seconds of timed runs per layer (at least LAYER_RUNS runs) and per whole model (MODEL_RUNS),
#: after WARMUP runs and WARMUP_SECONDS.
LAYER_SECONDS, LAYER_RUNS, MODEL_SECONDS, MODEL_RUNS = 0.15, 5, 2.0, 10
#: Side by side (:data:`~.measure.SIDE_ROUNDS` rounds): per round and model, a block of at least
#: BLOCK_CALLS calls and BLOCK_SECONDS: short, so that the models' turns see the same load.
BLOCK_SECONDS, BLOCK_CALLS = 0.02, 1
#: Routes whose layers are timed by the runtime's per-node profile, less the graph's edges
#: (:mod:`.timing`); the others by the wall clock.
PROFILED = {"onnxruntime-int8", "openvino"}
#: Random images int8 calibration uses when none are given.
RANDOM_IMAGES = 4
_FORMAT = 1


def check_route(route: str) -> None:
    """A one-line :class:`UserError` for an unknown route, or one whose package is missing."""
    if route not in ROUTES:
        raise UserError(
            f"unknown latency route {route!r}{did_you_mean(route, ROUTES)}; "
            f"choose one of {', '.join(ROUTES)}"
        )
    for package, extra in _NEEDS[route]:
        if importlib.util.find_spec(package) is None:
            raise UserError(
                f"the latency route {route!r} needs the {package!r} package, which is not "
                f"installed: pip install densemnv3[{extra}]"
            )


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/densemnv3/latency`` (default ``~/.cache/densemnv3/latency``)."""
    return (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "densemnv3" / "latency"
    )


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _runtime(route: str) -> str:
    package = "torch" if route == "torch" else route.split("-")[0]
    return f"{package} {torch.__version__ if package == 'torch' else package_version(package)}"


class LatencyTable:
    """Per-layer latencies (ms) on ``route`` with ``threads`` threads for ``(1, 3, *size)`` inputs.

    Measured layers are kept in :attr:`path` (under ``cache_dir``, default
    :func:`default_cache_dir`), whose name holds everything a latency depends on: the route, the
    runtime's version, the threads, the input size and the CPU model. ``progress`` shows a bar while
    new layers are timed.
    """

    def __init__(
        self,
        route: str,
        *,
        threads: int,
        size: tuple[int, int],
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> None:
        check_route(route)
        self.route, self.threads, self.size, self.progress = (
            route,
            int(threads),
            tuple(size),
            progress,
        )
        self.runtime = _runtime(route)
        name = f"{route}_{self.runtime}_{self.threads}t_{self.size[0]}x{self.size[1]}_{cpu_model()}"
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = folder / (re.sub(r"[^A-Za-z0-9.+_-]+", "-", name).strip("-") + ".json")
        stored = self._read()
        self._ms: dict[str, float] = stored.get("layers", {})
        #: What the layers leave out, in ms: set by :meth:`calibrate` (stored with the layers).
        self.glue_ms: float = stored.get("glue", {}).get("ms", 0.0)

    # ---------------------------------------------------------------- the table
    def layer_ms(self, layer: Layer) -> float:
        """The latency of ``layer`` in ms: timed the first time, read from the table after."""
        key = repr(layer)
        if key not in self._ms:
            self._ms[key] = self._time_layer(layer)
            self._write({"layers": {key: self._ms[key]}})
        return self._ms[key]

    def predict(self, model: nn.Module) -> float:
        """``model``'s latency in ms: its layers' (:func:`model_layers`) plus :attr:`glue_ms`."""
        return self._layers_ms(model) + self.glue_ms

    def measure(self, model: nn.Module, calibration: Sequence[Tensor] | None = None) -> float:
        """``model``'s latency in ms measured whole on the route: the median of repeated runs
        after a warm-up. ``calibration`` (``(3, H, W)`` or ``(1, 3, H, W)`` normalised images):
        the int8 route's calibration images (default: a few random ones)."""
        with self._threads():
            return median_ms(self._model_runner(model, calibration), MODEL_SECONDS, MODEL_RUNS)

    def runner(
        self, model: nn.Module, calibration: Sequence[Tensor] | None = None
    ) -> Callable[[], Any]:
        """A call that runs ``model`` once on the route (its file exported now), for
        :meth:`side_by_side`; ``calibration`` as in :meth:`measure`."""
        return self._model_runner(model, calibration)

    def side_by_side(
        self, runners: dict[str, Callable[[], Any]], rounds: int = SIDE_ROUNDS
    ) -> SideBySide:
        """``runners`` (name -> :meth:`runner`) timed in turn, ``rounds`` rounds: what decides
        whether one model is faster than another on a machine whose load drifts."""
        with self._threads():
            return SideBySide(interleaved_ms(runners, rounds, BLOCK_SECONDS, BLOCK_CALLS))

    def calibrate(
        self, model: nn.Module, calibration: Sequence[Tensor] | None = None
    ) -> tuple[float, float]:
        """Measure the original ``model`` and set :attr:`glue_ms` to what its layers leave out
        (stored in the table); returns ``(predicted, measured)`` ms, equal from now on."""
        layers_ms = self._layers_ms(model)
        measured = self.measure(model, calibration)
        self.glue_ms = measured - layers_ms
        self._write({"glue": {"ms": self.glue_ms, "model": type(model).__name__}})
        return layers_ms + self.glue_ms, measured

    def _layers_ms(self, model: nn.Module) -> float:
        layers = model_layers(model, self.size)
        new = list(dict.fromkeys(layer for layer in layers if repr(layer) not in self._ms))
        if len(new) > 1:
            from tqdm import tqdm

            for layer in tqdm(
                new,
                desc=f"latency table ({self.route})",
                unit="layer",
                leave=False,
                disable=None if self.progress else True,
                dynamic_ncols=True,
            ):
                self.layer_ms(layer)
        return sum(self.layer_ms(layer) for layer in layers)

    # ---------------------------------------------------------------- the cache file
    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) and data.get("format") == _FORMAT else {}

    def _write(self, update: dict[str, Any]) -> None:
        """Merge ``update`` into the file (re-read first: another process may have added layers),
        written atomically."""
        data = self._read() or {
            "format": _FORMAT,
            "route": self.route,
            "runtime": self.runtime,
            "threads": self.threads,
            "size": list(self.size),
            "cpu": cpu_model(),
        }
        data.setdefault("layers", {}).update(update.get("layers", {}))
        if "glue" in update:
            data["glue"] = update["glue"]
        write_text(self.path, json.dumps(data, indent=0))

    # ---------------------------------------------------------------- timing
    def _threads(self) -> contextlib.AbstractContextManager:
        if self.route == "torch":
            steady_allocator()
        return torch_threads(self.threads)

    def _time_layer(self, layer: Layer) -> float:
        x = torch.randn(1, *layer.shape, generator=torch.Generator().manual_seed(0))
        with self._threads():
            if self.route == "torch":
                module = prepare_for_inference(torch_module(layer), channels_last=True)
                return median_ms(
                    torch_call(module, x.contiguous(memory_format=torch.channels_last)),
                    LAYER_SECONDS,
                    LAYER_RUNS,
                )
            with tempfile.TemporaryDirectory(prefix="densemnv3-latency-") as tmp:
                path = self._layer_file(layer, Path(tmp), x)
                if self.route in PROFILED:
                    runtime = "openvino" if self.route == "openvino" else "onnxruntime"
                    return profiled_ms(
                        runtime, path, x.numpy(), self.threads, LAYER_SECONDS, LAYER_RUNS
                    )
                engine = self._engine(path)
            return median_ms(functools.partial(engine.run, x.numpy()), LAYER_SECONDS, LAYER_RUNS)

    def _layer_file(self, layer: Layer, folder: Path, x: Tensor) -> Path:
        import onnx

        proto, path = onnx_model(layer), folder / "layer.onnx"
        if self.route != "onnxruntime-int8":
            onnx.save(proto, str(path))
            return path
        from densemnv3.export.int8_graph import int8_friendly

        int8_friendly(proto)
        onnx.save(proto, str(folder / "fp32.onnx"))
        keep_float = [node.name for node in proto.graph.node if node.name.startswith(FLOAT_PREFIX)]
        _quantize_minmax(folder / "fp32.onnx", path, [{"x": x.numpy()}], keep_float)
        return path

    def _engine(self, path: Path) -> Engine:
        """The route's engine on ``path`` (which it has read: the file may go)."""
        engine = OpenVINOEngine if self.route == "openvino" else OnnxRuntimeEngine
        return engine(path, self.threads, "int8" if self.route == "onnxruntime-int8" else "fp32")

    def _model_runner(
        self, model: nn.Module, calibration: Sequence[Tensor] | None
    ) -> Callable[[], Any]:
        """A call that runs ``model`` once on the route (its file exported now)."""
        model = copy.deepcopy(model).cpu().eval()
        x = torch.randn(1, 3, *self.size, generator=torch.Generator().manual_seed(0))
        if self.route == "torch":
            net, _ = exportable(
                prepare_for_inference(model, fuse_bn=True, channels_last=True), outputs="raw"
            )
            return torch_call(net, x.contiguous(memory_format=torch.channels_last))
        with tempfile.TemporaryDirectory(prefix="densemnv3-latency-") as tmp:
            path = Path(tmp) / "model.onnx"
            if self.route == "onnxruntime-int8":
                images = list(calibration) if calibration is not None else _random_images(self.size)
                _quantized_file(model, path, self.size, images, self.progress)
            else:
                net, form = exportable(prepare_for_inference(model), outputs="raw")
                # the exporter of tools/export.py, at the one size timed: a static graph exports
                # several times faster than the dynamic one and runs as fast
                with quiet():
                    export_onnx(net, path, self.size, OUTPUT_NAMES[form], static=True)
            engine = self._engine(path)
        return functools.partial(engine.run, x.numpy())


def _quantized_file(
    model: nn.Module, path: Path, size: tuple[int, int], images: list[Tensor], progress: bool
) -> None:
    """``model`` as tools/quantize.py writes its int8 file. Where its percentile calibration
    fails on ``images`` (an activation constant over them: random images on an untrained model),
    the graph is calibrated by min/max instead: the same nodes, so the same speed."""
    from densemnv3.export.int8_graph import float_nodes
    from densemnv3.export.quantize import export_for_quantization, quantize_onnx

    prepared = path.with_name("prepared.onnx")
    export_for_quantization(model, prepared, size, static=True)
    try:
        quantize_onnx(prepared, path, images, len(images), progress=progress)
    except UserError:
        import onnx

        feeds = [
            {"images": (image if image.dim() == 4 else image[None]).numpy()} for image in images
        ]
        _quantize_minmax(prepared, path, feeds, float_nodes(onnx.load(str(prepared))))


def _quantize_minmax(
    source: Path, target: Path, feeds: Sequence[dict], keep_float: Sequence[str]
) -> None:
    """Quantize the fp32 graph at ``source`` to ``target`` with tools/quantize.py's settings (QDQ,
    int8 weights per channel, uint8 activations; the ``keep_float`` nodes left in float), the
    ranges min/max over ``feeds`` (input name -> array): the nodes its percentile ranges give,
    in a fraction of the time."""
    import logging

    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    inputs = iter(feeds)

    class Reader:  # onnxruntime's CalibrationDataReader protocol
        def get_next(self) -> dict | None:
            return next(inputs, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing", as in quantize.py
    onnxruntime.set_default_logger_severity(3)
    try:
        with quiet():
            quantize_static(
                str(source),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=list(keep_float),
            )
    finally:
        root.setLevel(level)
        onnxruntime.set_default_logger_severity(2)


def _random_images(size: tuple[int, int]) -> list[Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(3, *size, generator=generator) for _ in range(RANDOM_IMAGES)]
