"""Where a route's time goes: each exported file run by each runtime under that runtime's own
profiler, its operators grouped by type, kernel and the precision they ran in.

``benchmark --model lraspp_large --profile [--runtime onnxruntime openvino executorch]``:

- onnxruntime: its profiler (``SessionOptions.enable_profiling``), each node's kernel time in the
  graph it runs after its own optimisations (so ``QLinearConv`` where the file has Q/DQ pairs
  around a ``Conv``); the precision is the element type the node reads, and ``a→b`` where it
  writes another one (``QuantizeLinear``: fp32→int8).
- OpenVINO: the CPU plugin's per-node performance counters (``PERF_COUNT``); the executed kernel
  (``jit_avx2_1x1_I8``) names the implementation and, last, the precision it ran in; ``ref`` is
  a reference (unoptimised) fallback.
- ExecuTorch: ETDump (``enable_etdump``), XNNPACK's per-operator events, whose names carry the
  data type (``QC8``/``QS8``: int8, ``F32``, ``F16``), and the portable operators outside the
  delegate.

Every table gives the operators' ms per run, their share of the summed operator time, and the
run's wall-clock median without the profiler beside the sum (a profiler's own overhead and the
time between operators are the difference).
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from densemnv3.runtimes import engine_class

__all__ = [
    "OpTime",
    "add_profile_arguments",
    "bench_profile",
    "format_profile",
    "format_profiles",
    "profile_file",
    "summarize_precisions",
]

#: Rows below this share of the operator time are summed into one "other" row when printed.
MIN_SHARE = 0.005

_ORT_TYPES = {"float": "fp32", "float16": "fp16", "uint8": "int8", "int8": "int8"}
_XNN_TYPES = {"QC8": "int8", "QS8": "int8", "QU8": "int8", "X8": "int8", "F32": "fp32"}
_XNN_TYPES |= {"F16": "fp16", "QD8": "int8", "X32": "fp32", "X16": "fp16"}  # X: by width


@dataclass
class OpTime:
    """One operator type run in one kernel and precision, summed over a run."""

    op: str  # the runtime's operator name (QLinearConv, GroupConvolution, Convolution (NHWC...))
    kernel: str  # onnxruntime: the provider; OpenVINO: the implementation; ExecuTorch: the backend
    precision: str  # int8, fp32, fp16, bf16, or in→out for a conversion; "-" where unnamed
    calls: int  # per run
    ms: float  # per run


def profile_file(path: Path, runtime: str, x: np.ndarray, threads: int, iters: int) -> dict:
    """``path`` run by ``runtime`` on ``x``: its wall-clock median over ``iters`` runs (after two
    untimed ones) and, from ``iters`` more under the profiler, its :class:`OpTime` rows (largest
    first), as a dict: ``route``, ``wall_ms``, ``ops_ms`` (their sum), ``ops``, ``engine``."""
    from .routes import file_metadata

    precision = file_metadata(path, detection=False)["precision"]
    engine = engine_class(runtime)(path, threads, precision)
    for _ in range(2):
        engine.run(x)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        engine.run(x)
        times.append(time.perf_counter() - start)
    ops = {"onnxruntime": _onnxruntime, "openvino": _openvino, "executorch": _executorch}[runtime](
        engine, x, iters
    )
    ops.sort(key=lambda o: -o.ms)
    return {
        "route": f"{runtime} {path.name}",
        "engine": engine.describe(),
        "wall_ms": statistics.median(times) * 1e3,
        "ops_ms": sum(o.ms for o in ops),
        "ops": [asdict(o) for o in ops],
    }


def _grouped(events, iters: int) -> list[OpTime]:
    """(op, kernel, precision, ms) events summed over ``iters`` runs into per-run rows."""
    ms: dict[tuple[str, str, str], float] = defaultdict(float)
    calls: dict[tuple[str, str, str], int] = defaultdict(int)
    for op, kernel, precision, t in events:
        ms[(op, kernel, precision)] += t
        calls[(op, kernel, precision)] += 1
    return [OpTime(*key, calls=round(calls[key] / iters), ms=ms[key] / iters) for key in ms]


def _onnxruntime(engine, x: np.ndarray, iters: int) -> list[OpTime]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="densemnv3-profile-") as tmp:
        options = engine.session_options(engine.threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(
            str(engine.path), options, providers=["CPUExecutionProvider"]
        )
        name = session.get_inputs()[0].name
        for _ in range(iters + 1):  # the first: warm-up, left out below
            session.run(None, {name: x})
        trace = json.loads(Path(session.end_profiling()).read_text())
    events, kinds = [], conv_kinds(engine.path)
    for e in _after_first_run(trace):
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        op = args.get("op_name", "?")
        events.append(
            (
                op + (_ort_kind(args, e["name"], kinds) if "Conv" in op else ""),
                args.get("provider", "CPU").replace("ExecutionProvider", ""),
                _ort_precision(args),
                e.get("dur", 0) / 1e3,
            )
        )
    return _grouped(events, iters)


def _ort_kind(args: dict, name: str, kinds: dict[str, str]) -> str:
    """A convolution's kind from the weight shape onnxruntime records, or, where it packed the
    weight away (its NHWC int8 kernels), from the node's name."""
    shapes = [next(iter(s.values()), []) for s in args.get("input_type_shape") or [] if s]
    weight = next((s for s in shapes[1:] if len(s) == 4), None)
    if weight is None:
        return _kind(name, kinds)
    kernel = f"{weight[2]}x{weight[3]}"
    return f" depthwise {kernel}" if weight[1] == 1 else f" {kernel}"


def _after_first_run(trace: list[dict]) -> list[dict]:
    """The events of every ``model_run`` of an onnxruntime trace but the first (the warm-up)."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace if e.get("name") == "model_run")
    if len(runs) < 2:
        return trace
    start = runs[1][0]
    return [e for e in trace if e.get("ts", 0) >= start]


def conv_kinds(path: Path) -> dict[str, str]:
    """Each convolution node of the ONNX file ``path`` by name: its kind, from its weight's shape
    ``(O, I / groups, kH, kW)``: ``1x1``, ``depthwise 3x3``, ``3x3`` ... (a quantized file's
    weight through its ``DequantizeLinear``). The runtimes rename the nodes they rewrite, keeping
    the name as a prefix (``node_conv2d_1_token_21``, ``node_conv2d_1/WithoutBiases``)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    kinds = {}
    for node in graph.node:
        weight = shapes.get(node.input[1]) if "Conv" in node.op_type else None
        if weight and len(weight) == 4:
            kernel = f"{weight[2]}x{weight[3]}"
            kinds[node.name] = f"depthwise {kernel}" if weight[1] == 1 else kernel
    return kinds


def _kind(node: str, kinds: dict[str, str]) -> str:
    """The kind of the convolution a runtime's node ``node`` runs (its longest known prefix)."""
    best = max((n for n in kinds if node.startswith(n)), key=len, default=None)
    return f" {kinds[best]}" if best else ""


def _ort_precision(args: dict) -> str:
    def first(key: str) -> str:
        shapes = args.get(key) or [{}]
        kind = next(iter(shapes[0]), "")
        return _ORT_TYPES.get(kind, kind or "-")

    read, wrote = first("input_type_shape"), first("output_type_shape")
    return read if read == wrote or wrote == "-" else f"{read}→{wrote}"


_OV_PRECISION = re.compile(r"_(I8|i8|U8|u8|f32|F32|bf16|BF16|f16|FP16|FP32|i32|I32|i64)$")
_OV_NAMES = {"i8": "int8", "u8": "int8", "f32": "fp32", "fp32": "fp32", "fp16": "fp16"}


def _openvino(engine, x: np.ndarray, iters: int) -> list[OpTime]:
    request = engine.compile(profile=True).create_infer_request()
    request.infer({0: x})
    events, kinds = [], conv_kinds(engine.path)
    for _ in range(iters):
        request.infer({0: x})
        for node in request.profiling_info:
            if node.status != node.Status.EXECUTED:
                continue
            match = _OV_PRECISION.search(node.exec_type)
            kernel = node.exec_type[: match.start()] if match else node.exec_type
            precision = match.group(1).lower() if match else "-"
            conv = "Convolution" in node.node_type
            events.append(
                (
                    node.node_type + (_kind(node.node_name, kinds) if conv else ""),
                    kernel,
                    _OV_NAMES.get(precision, precision),
                    node.real_time.total_seconds() * 1e3,
                )
            )
    return _grouped(events, iters)


_XNN_NAME = re.compile(r"^(?P<op>.*?)(?: #\d+)?$")


def _executorch(engine, x: np.ndarray, iters: int) -> list[OpTime]:
    import torch

    from densemnv3.checkpoint.pte import quiet_native
    from densemnv3.errors import UserError
    from densemnv3.runtimes.executorch_engine import _portable_lib

    lib = _portable_lib()
    engine.run(x)  # the engine's pool, sized to its threads
    with quiet_native():
        module = lib._load_for_executorch(str(engine.path), enable_etdump=True, debug_buffer_size=0)
    if not module.has_etdump():
        raise UserError(
            "this ExecuTorch build records no ETDump: --profile --runtime executorch needs the "
            "pybindings built with the event tracer (the executorch wheels from PyPI are)"
        )
    inputs = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))]
    module.forward(inputs)
    for _ in range(iters):
        module.forward(inputs)
    with tempfile.TemporaryDirectory(prefix="densemnv3-profile-") as tmp, quiet_native():
        dump = Path(tmp) / "run.etdp"
        module.write_etdump_result_to_file(str(dump))
        from executorch.devtools import Inspector

        inspector = Inspector(etdump_path=str(dump))
    events = []
    for block in inspector.event_blocks:
        for event in block.events:
            name, raw = event.name, (event.perf_data.raw if event.perf_data else [])
            if event.is_delegated_op:
                op = _XNN_NAME.match(name).group("op")
                kinds = re.findall(r"\b(QC8|QS8|QU8|QD8|X8|X16|X32|F32|F16)\b", op)
                precision = _XNN_TYPES[kinds[0]] if kinds else "-"
                kernel = event.delegate_backend_name or "XNNPACK"
            elif name.startswith("native_call_"):
                op, kernel, precision = name[len("native_call_") :], "portable", "-"
            else:  # the method's own events, and the wrappers around the calls above
                continue
            events += [(op, kernel, precision, t) for t in raw[1:]]  # the first run: warm-up
    return _grouped(events, iters)


def summarize_precisions(profile: dict) -> dict[str, float]:
    """The share of the operator time in each precision (conversions ``a→b`` as they are)."""
    total = profile["ops_ms"] or 1.0
    shares: dict[str, float] = defaultdict(float)
    for op in profile["ops"]:
        shares[op["precision"]] += op["ms"] / total
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))


def format_profile(profile: dict, min_share: float = MIN_SHARE) -> str:
    """A markdown table of one route's profile, rows under ``min_share`` summed into one."""
    total = profile["ops_ms"] or 1.0
    shares = ", ".join(
        f"{name} {share:.0%}" for name, share in summarize_precisions(profile).items()
    )
    lines = [
        f"{profile['route']} ({profile['engine']}): wall {profile['wall_ms']:.1f} ms per run, "
        f"operators {profile['ops_ms']:.1f} ms ({shares})",
        "| operator | kernel | precision | calls | ms | share |",
        "|---|---|---|---:|---:|---:|",
    ]
    rest = [o for o in profile["ops"] if o["ms"] / total < min_share]
    for o in profile["ops"]:
        if o["ms"] / total >= min_share:
            lines.append(
                f"| {o['op']} | {o['kernel']} | {o['precision']} | {o['calls']} "
                f"| {o['ms']:.2f} | {o['ms'] / total:.1%} |"
            )
    if rest:
        ms = sum(o["ms"] for o in rest)
        lines.append(
            f"| other ({len(rest)} rows) | | | {sum(o['calls'] for o in rest)} "
            f"| {ms:.2f} | {ms / total:.1%} |"
        )
    return "\n".join(lines)


def add_profile_arguments(parser) -> None:
    """``--profile`` and the ``--runtime`` it profiles in."""
    parser.add_argument(
        "--profile",
        action="store_true",
        help="CPU: each exported file's time per operator, kernel and precision, from each "
        "runtime's own profiler",
    )
    parser.add_argument(
        "--runtime",
        nargs="+",
        choices=("onnxruntime", "openvino", "executorch"),
        help="--profile: the runtimes to profile (default: every installed one)",
    )


def bench_profile(case: str, size: tuple[int, int], args, device) -> dict:
    """Every exported file of the model ``case`` (:func:`~.routes.route_files`) profiled in each
    of ``args.runtime`` (default: every installed one) that reads it, at batch 1: ours with
    torchvision's random weights on noise, or ``--weights`` (LR-ASPP) on synthetic drive frames."""
    import torch

    from densemnv3.runtimes import engines_for

    from .models import random_pair
    from .routes import drive_frames, route_files, trained_model

    if device.type != "cpu":
        raise SystemExit("--profile profiles the CPU runtimes; use --device cpu")
    installed = [
        n for n in ("onnxruntime", "openvino", "executorch") if engine_class(n).installed()
    ]
    runtimes = args.runtime or installed
    for name in runtimes:
        engine_class(name).require()
    detection = case.startswith("ssdlite")
    gen = torch.Generator().manual_seed(0)
    size, _, ours, _ = random_pair(case, size, device, gen, args.cfg)
    weights = None if detection else getattr(args, "weights", None)
    if weights:
        ours = trained_model(weights, case)
    x = drive_frames(size, 1) if weights else torch.randn(1, 3, *size, generator=gen)
    threads = args.threads or torch.get_num_threads()
    profiles = []
    with tempfile.TemporaryDirectory(prefix="densemnv3-profile-") as tmp:
        files = route_files(
            ours,
            Path(tmp),
            size,
            "detection" if detection else "segmentation",
            images=x if weights else None,
            pte="executorch" in runtimes,
        )
        for path in files.values():
            for engine in engines_for(path.suffix.lstrip(".")):
                if engine.name in runtimes:
                    print(f"  profiling {engine.name} {path.name} ...", flush=True)
                    profiles.append(profile_file(path, engine.name, x.numpy(), threads, args.iters))
    return {
        "case": f"{case} profile" + (f" (ours: {weights})" if weights else ""),
        "input": f"{size[0]}x{size[1]}",
        "batch": 1,
        "threads": threads,
        "profiles": profiles,
    }


def format_profiles(record: dict) -> str:
    """Each route's table (:func:`format_profile`), under one line naming the case."""
    head = f"{record['case']}, {record['input']}, batch 1, {record['threads']} threads"
    return "\n\n".join([head, *(format_profile(p) for p in record["profiles"])])
