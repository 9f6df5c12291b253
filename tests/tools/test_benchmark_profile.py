"""tools/benchmark.py --profile: each runtime's own profiler, per operator, kernel and precision."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from densemnv3.benchmark.profile import conv_kinds, format_profile, profile_file

ROOT = Path(__file__).resolve().parents[2]
SIZE = (64, 128)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """LR-ASPP-Small's fp32 and int8 ONNX files at 64x128, as --routes and --profile make them."""
    pytest.importorskip("onnxruntime")
    from densemnv3.benchmark.models import random_pair
    from densemnv3.benchmark.routes import route_files

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        _, _, ours, _ = random_pair("lraspp_small", SIZE, torch.device("cpu"), gen)
        folder = tmp_path_factory.mktemp("profile")
        files = route_files(ours, folder, SIZE, "segmentation", pte=False)
    finally:
        torch.set_num_threads(threads)
    assert set(files) == {"fp32.onnx", "int8.onnx", *_openvino_files()}
    return files


def _openvino_files() -> list[str]:
    """The int8 file shaped for OpenVINO, made where OpenVINO is installed."""
    from densemnv3.runtimes import engine_class

    return ["int8_openvino.onnx"] if engine_class("openvino").installed() else []


def _x():
    return np.random.default_rng(0).standard_normal((1, 3, *SIZE)).astype(np.float32)


def _convs(profile: dict) -> dict[str, int]:
    """Calls per run of each convolution kind in a profile (the op name's words after the type)."""
    kinds: dict[str, int] = {}
    for op in profile["ops"]:
        if "Conv" in op["op"]:
            kind = op["op"].split(" ", 1)[1] if " " in op["op"] else "?"
            kinds[kind] = kinds.get(kind, 0) + op["calls"]
    return kinds


def _counts(kinds: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind in kinds.values():
        out[kind] = out.get(kind, 0) + 1
    return out


def test_onnxruntime_profile_counts_every_convolution_in_its_precision(onnx_files):
    graph = _counts(conv_kinds(onnx_files["fp32.onnx"]))
    # LR-ASPP-Small: the stem, 11 depthwise convolutions (3 of 3x3, 8 of 5x5), 1x1 the rest
    assert graph["3x3"] == 1 and graph["depthwise 3x3"] == 3 and graph["depthwise 5x5"] == 8
    assert graph["1x1"] > 30

    fp32 = profile_file(onnx_files["fp32.onnx"], "onnxruntime", _x(), 1, 3)
    assert fp32["route"] == "onnxruntime fp32.onnx" and fp32["engine"].startswith("onnxruntime ")
    assert fp32["wall_ms"] > 0 and fp32["ops_ms"] > 0
    # every convolution of the graph, once per run, each named with its kind
    assert _convs(fp32) == graph
    conv_precisions = {op["precision"] for op in fp32["ops"] if "Conv" in op["op"]}
    assert conv_precisions == {"fp32"}
    assert fp32["ops"] == sorted(fp32["ops"], key=lambda o: -o["ms"])  # largest first

    int8 = profile_file(onnx_files["int8.onnx"], "onnxruntime", _x(), 1, 3)
    convs = [op for op in int8["ops"] if op["op"].startswith("QLinearConv")]
    assert {op["precision"] for op in convs} == {"int8"}
    kinds = _convs(int8)
    # the same convolutions, plus the 1x1 depthwise gates the int8 graph computes hard-swish with
    assert {k: kinds.get(k) for k in graph} == graph
    assert kinds["depthwise 1x1"] > 5
    ops = {(op["op"], op["precision"]) for op in int8["ops"]}
    assert ("QuantizeLinear", "fp32→int8") in ops and ("DequantizeLinear", "int8→fp32") in ops
    shares = {op["precision"]: 0.0 for op in int8["ops"]}
    for op in int8["ops"]:
        shares[op["precision"]] += op["ms"] / int8["ops_ms"]
    assert shares["int8"] > 0.5


def test_openvino_profile_names_the_kernel_and_the_precision_it_ran_in(onnx_files):
    pytest.importorskip("openvino")
    fp32 = profile_file(onnx_files["fp32.onnx"], "openvino", _x(), 1, 3)
    int8 = profile_file(onnx_files["int8.onnx"], "openvino", _x(), 1, 3)
    graph = _counts(conv_kinds(onnx_files["fp32.onnx"]))
    assert _convs(fp32) == graph  # OpenVINO keeps each convolution a node of its own
    hint = {"f32": "fp32", "bf16": "bf16"}[fp32["engine"].split("precision hint ")[1].split()[0]]
    assert {op["precision"] for op in fp32["ops"] if "Convolution" in op["op"]} == {hint}
    calls = {}
    for op in int8["ops"]:
        if op["op"] == "Convolution 1x1":
            calls[op["precision"]] = calls.get(op["precision"], 0) + op["calls"]
    # in int8 but LR-ASPP's two classifiers, which the int8 file leaves in float
    assert calls == {"int8": graph["1x1"] - 2, hint: 2}
    assert all(op["kernel"] and not op["kernel"].endswith(("_I8", "_f32")) for op in int8["ops"])


def test_the_table_sums_the_small_rows():
    ops = [
        {"op": "Conv 1x1", "kernel": "CPU", "precision": "fp32", "calls": 10, "ms": 9.0},
        {"op": "Mul", "kernel": "CPU", "precision": "fp32", "calls": 2, "ms": 0.96},
        {"op": "Shape", "kernel": "CPU", "precision": "int64", "calls": 3, "ms": 0.03},
        {"op": "Add", "kernel": "CPU", "precision": "fp32", "calls": 1, "ms": 0.01},
    ]
    table = format_profile(
        {
            "route": "onnxruntime a.onnx",
            "engine": "onnxruntime 1",
            "wall_ms": 10.5,
            "ops_ms": 10.0,
            "ops": ops,
        }
    )
    lines = table.splitlines()
    assert lines[0] == (
        "onnxruntime a.onnx (onnxruntime 1): wall 10.5 ms per run, operators 10.0 ms "
        "(fp32 100%, int64 0%)"
    )
    assert lines[3] == "| Conv 1x1 | CPU | fp32 | 10 | 9.00 | 90.0% |"
    assert lines[4] == "| Mul | CPU | fp32 | 2 | 0.96 | 9.6% |"
    assert lines[5] == "| other (2 rows) | | | 4 | 0.04 | 0.4% |"
    assert len(lines) == 6


@pytest.mark.slow
@pytest.mark.executorch
def test_executorch_profile_reads_xnnpacks_operators(tmp_path):
    pytest.importorskip("executorch")
    from densemnv3.benchmark.models import random_pair
    from densemnv3.errors import ExportCheckError
    from densemnv3.export.pte import export_executorch

    gen = torch.Generator().manual_seed(0)
    _, _, ours, _ = random_pair("lraspp_small", SIZE, torch.device("cpu"), gen)
    images = [torch.randn(1, 3, *SIZE, generator=gen) for _ in range(2)]
    paths = {}
    for precision in ("fp32", "int8"):
        paths[precision] = tmp_path / f"{precision}.pte"
        try:
            export_executorch(
                ours,
                paths[precision],
                input_size=SIZE,
                metadata={"task": "segmentation"},
                int8=precision == "int8",
                calibration=iter(images),
                num_images=len(images),
            )
        except ExportCheckError:  # random weights: int8's agreement says nothing; file kept
            assert precision == "int8" and paths[precision].exists()
    for precision, path in paths.items():
        profile = profile_file(path, "executorch", _x(), 1, 3)
        convs = [op for op in profile["ops"] if op["op"].startswith(("Convolution", "Fully"))]
        assert convs and {op["kernel"] for op in convs} == {"XNNPACK"}
        assert {op["precision"] for op in convs} == {precision}
        depthwise = [op for op in convs if "DWConv" in op["op"]]
        assert sum(op["calls"] for op in depthwise) == 11  # LR-ASPP-Small's depthwise convs
        assert profile["ops_ms"] > 0


def test_profile_command_tables_every_file_of_the_runtimes_asked(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    spec = importlib.util.spec_from_file_location("benchmark_tool", ROOT / "tools" / "benchmark.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        argv = ["--quick", "--model", "lraspp_small", "--profile", "--runtime", "onnxruntime"]
        assert tool.main([*argv, "--threads", "1", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    (record,) = json.loads(out.read_text())["results"]
    assert record["case"] == "lraspp_small profile" and record["threads"] == 1
    files = ["fp32.onnx", "int8.onnx", *_openvino_files()]
    assert [p["route"] for p in record["profiles"]] == [f"onnxruntime {f}" for f in files]
    printed = capsys.readouterr().out
    assert printed.count("| operator | kernel | precision | calls | ms | share |") == len(files)
    assert "| QLinearConv 1x1 | CPU | int8 |" in printed
