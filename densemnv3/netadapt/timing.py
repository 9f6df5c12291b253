"""How the latency table times one layer or one model: wall clock, or a runtime's own per-node
profile less the conversions at the graph's edges.

A layer timed alone is a graph of its own, and its runtime converts at its edges what the whole
model keeps inside: OpenVINO reorders the fp32 input to its bf16 blocked layout and back (at
512x1024 those reorders cost more than the layers' convolutions), onnxruntime's int8 graph
quantizes and transposes to NHWC and back. Where the runtime reports each node's time, a layer's
latency is therefore the sum over its nodes less those edge conversions (:func:`profiled_ms`);
what the whole model pays once for its own edges is in the table's glue.
"""

from __future__ import annotations

import bisect
import itertools
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "edge_nodes",
    "interleaved_ms",
    "median_ms",
    "profiled_ms",
    "steady_allocator",
    "torch_call",
    "warm_up",
]

#: Calls before timing (at least, and at least WARMUP_SECONDS of them).
WARMUP, WARMUP_SECONDS = 3, 0.05
#: Nodes that only convert a graph's input or output: layout, quantization.
_ONNXRUNTIME_EDGES = {
    "ReorderInput",
    "ReorderOutput",
    "Transpose",
    "QuantizeLinear",
    "DequantizeLinear",
}
_OPENVINO_EDGES = {"Reorder", "Convert"}


def warm_up(run: Callable[[], Any]) -> int:
    """Call ``run()`` :data:`WARMUP` times and for at least :data:`WARMUP_SECONDS`; return how many
    times."""
    start = time.perf_counter()
    for calls in itertools.count():
        if calls >= WARMUP and time.perf_counter() - start >= WARMUP_SECONDS:
            return calls
        run()
    raise AssertionError  # unreachable: count() does not end


def median_ms(run: Callable[[], Any], seconds: float, runs: int) -> float:
    """The median ms of ``run()`` over at least ``runs`` calls and ``seconds``, after a warm-up."""
    warm_up(run)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        run()
        times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def interleaved_ms(
    runs: dict[str, Callable[[], Any]],
    rounds: int,
    seconds: float,
    calls: int,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Per round, the median ms of each of ``runs`` over a block of at least ``calls`` calls and
    ``seconds``, the models taking turns block by block, the order reversed every other round
    (as the benchmark's interleaved timing, in blocks so that a model of a few ms is not timed
    by one call): a load change hits every model alike, so ratios taken round by round cancel
    it where absolute times taken apart drift."""
    names = list(runs)
    for name in names:
        warm_up(runs[name])
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            run = runs[name]
            times: list[float] = []
            start = clock()
            while len(times) < calls or clock() - start < seconds:
                begin = clock()
                run()
                times.append((clock() - begin) * 1e3)
            out[name].append(statistics.median(times))
    return out


def torch_call(module: nn.Module, x: Tensor) -> Callable[[], Any]:
    """``module(x)`` in inference mode, as a call."""

    def run() -> Any:
        with torch.inference_mode():
            return module(x)

    return run


def steady_allocator() -> None:
    """Put glibc's allocator in the state a process running the model reaches after a few calls.

    glibc serves blocks above a threshold (128 KiB at first) from fresh ``mmap``s, page-faulted
    on every call, and raises the threshold to the largest such block freed (up to 32 MiB). A
    layer timed alone never frees a block larger than its own and stays slow (the stem several
    times slower than in the whole model); freeing one just under 32 MiB once gives every layer the
    heap the whole model's steady state gives it.
    """
    torch.empty((32 << 20) - (1 << 16), dtype=torch.uint8)  # allocated and freed at once


def profiled_ms(
    runtime: str, path: Path, x: np.ndarray, threads: int, seconds: float, runs: int
) -> float:
    """The median over runs of the ms the nodes of the graph at ``path`` take on ``runtime``
    (``"onnxruntime"`` or ``"openvino"``, set up as its engine is), less the nodes that only
    convert its input or output."""
    profile = _onnxruntime if runtime == "onnxruntime" else _openvino
    return statistics.median(profile(path, x, threads, seconds, runs))


def _repeat(run: Callable[[], Any], seconds: float, runs: int) -> Iterator[Any]:
    """``run()``'s results over at least ``runs`` calls and ``seconds`` (after :func:`warm_up`)."""
    start, count = time.perf_counter(), 0
    while count < runs or time.perf_counter() - start < seconds:
        count += 1
        yield run()


def edge_nodes(
    nodes: dict[str, tuple[str, list[str], list[str]]],
    inputs: set[str],
    outputs: set[str],
    kinds: set[str],
) -> set[str]:
    """The nodes (name -> (kind, inputs, outputs)) of ``kinds`` on a path of them from a graph
    input or to a graph output."""
    edges: set[str] = set()
    for start, forward in ((inputs, True), (outputs, False)):
        reached = set(start)
        changed = True
        while changed:
            changed = False
            for name, (kind, ins, outs) in nodes.items():
                ends = ins if forward else outs
                if name not in edges and kind in kinds and ends and set(ends) & reached:
                    edges.add(name)
                    reached |= set(outs if forward else ins)
                    changed = True
    return edges


def _onnxruntime(path: Path, x: np.ndarray, threads: int, seconds: float, runs: int) -> list[float]:
    """The ms of each run's nodes less the edges, from onnxruntime's profiler."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()  # as OnnxRuntimeEngine's, plus the profiler
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    options.optimized_model_filepath = str(path.with_suffix(".optimized.onnx"))  # to find the edges
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    nodes = {n.name: (n.op_type, list(n.input), list(n.output)) for n in graph.node}
    edges = edge_nodes(
        nodes, {i.name for i in graph.input}, {o.name for o in graph.output}, _ONNXRUNTIME_EDGES
    )
    name = session.get_inputs()[0].name
    warm = warm_up(lambda: session.run(None, {name: x}))
    for _ in _repeat(lambda: session.run(None, {name: x}), seconds, runs):
        pass
    events = json.loads(Path(session.end_profiling()).read_text())
    runs_at = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    totals = [0.0] * len(runs_at)
    starts = [begin for begin, _ in runs_at]
    for e in events:
        if (
            e.get("cat") == "Node"
            and e["name"].endswith("_kernel_time")
            and e["name"].removesuffix("_kernel_time") not in edges
        ):
            totals[max(bisect.bisect_right(starts, e["ts"]) - 1, 0)] += e["dur"] / 1e3
    return totals[warm:]


def _openvino(path: Path, x: np.ndarray, threads: int, seconds: float, runs: int) -> list[float]:
    """The ms of each run's nodes less the edges, from OpenVINO's per-node profile."""
    import openvino.properties as props
    import openvino.properties.hint as hints

    from densemnv3.runtimes.engines import cpu_has_bf16, openvino_core

    compiled = openvino_core().compile_model(
        str(path),
        "CPU",
        {  # as OpenVINOEngine's, plus the profiler
            props.inference_num_threads(): threads,
            hints.inference_precision(): "bf16" if cpu_has_bf16() else "f32",
            hints.performance_mode(): hints.PerformanceMode.LATENCY,
            props.enable_profiling(): True,
        },
    )
    nodes = {
        op.get_friendly_name(): (
            op.get_rt_info()["layerType"].astype(str),
            [i.get_node().get_friendly_name() for i in op.input_values()],
            [op.get_friendly_name()],
        )
        for op in compiled.get_runtime_model().get_ordered_ops()
    }
    inputs = {name for name, (kind, _, _) in nodes.items() if kind == "Input"}
    outputs = {ins[0] for kind, ins, _ in nodes.values() if kind == "Output"}
    edges = edge_nodes(nodes, inputs, outputs, _OPENVINO_EDGES)
    request = compiled.create_infer_request()

    def run() -> float:
        request.infer({0: x})
        infos = request.get_profiling_info()
        return sum(i.real_time.total_seconds() for i in infos if i.node_name not in edges) * 1e3

    warm_up(run)
    return list(_repeat(run, seconds, runs))
