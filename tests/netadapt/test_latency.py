"""The latency lookup table: the layers found in a model, their graphs, the cache, the routes."""

import json
from collections import Counter

import pytest
import torch
from torch import nn

from densemnv3.config import ModelConfig
from densemnv3.errors import UserError
from densemnv3.models import build_model
from densemnv3.netadapt import latency
from densemnv3.netadapt.latency import LatencyTable, check_route
from densemnv3.netadapt.layers import (
    Chain,
    Conv,
    LRASPPBranch,
    SqueezeExcite,
    model_layers,
    onnx_model,
    torch_module,
)
from densemnv3.netadapt.timing import edge_nodes

SIZE = (64, 128)


def lraspp_small(width: float = 1.0) -> nn.Module:
    return build_model(
        ModelConfig(
            name="lraspp_mobilenet_v3_small",
            num_classes=5,
            options={"width_mult": width, "reduced_tail": True, "output_stride": 32},
        )
    )


def convs_in(layers) -> int:
    """How many convs the layers hold (a squeeze-excitation has two, LR-ASPP's branch three)."""
    return sum(
        3
        if isinstance(layer, LRASPPBranch)
        else sum(2 if isinstance(op, SqueezeExcite) else 1 for op in layer.ops)
        for layer in layers
    )


def test_lraspp_layers_are_its_blocks_and_cover_every_conv():
    model = lraspp_small()
    layers = model_layers(model, SIZE)
    # the stem, 11 blocks, the last 1x1 conv, LR-ASPP's branch and low classifier
    assert len(layers) == 15
    assert layers[0] == Chain((3, 64, 128), (Conv(3, 16, 3, 2, 1, act="hardswish"),))
    first = layers[1]  # 16 -> 16, depthwise stride 2, squeeze-excitation, no expansion
    assert first.shape == (16, 32, 64) and not first.residual
    assert [type(op) for op in first.ops] == [Conv, SqueezeExcite, Conv]
    assert first.ops[0] == Conv(16, 16, 3, 2, 1, groups=16, act="relu")
    residual = [i for i, layer in enumerate(layers) if getattr(layer, "residual", False)]
    assert residual == [3, 5, 6, 8, 10, 11]  # the blocks of stride 1 that keep their width
    assert layers[-2] == LRASPPBranch((288, 2, 4), 128, 5, (8, 16))
    assert layers[-1].ops == (Conv(24, 5, keep_float=True),)
    assert convs_in(layers) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())  # the model as it was
    model.train()
    assert model_layers(model, SIZE) == layers and all(m.training for m in model.modules())


def test_layers_change_with_the_widths():
    wide, thin = model_layers(lraspp_small(1.0), SIZE), model_layers(lraspp_small(0.5), SIZE)
    assert len(wide) == len(thin)
    assert [layer != other for layer, other in zip(wide, thin)] == [True] * len(wide)
    assert thin[1].ops[0] == Conv(8, 8, 3, 2, 1, groups=8, act="relu")
    shrunk = lraspp_small()
    shrunk.head.cbr[0] = nn.Conv2d(288, 96, 1, bias=False)  # as the channel surgery leaves it
    shrunk.head.cbr[1] = nn.BatchNorm2d(96)
    shrunk.head.scale[1] = nn.Conv2d(288, 96, 1, bias=False)
    shrunk.head.high_classifier = nn.Conv2d(96, 5, 1)
    assert model_layers(shrunk, SIZE)[-2] == LRASPPBranch((288, 2, 4), 96, 5, (8, 16))


@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_small", "multitask_mobilenet_v3_small"])
def test_detectors_cover_every_conv(name):
    model = build_model(
        ModelConfig(
            name=name,
            num_classes=9 if name.startswith("ssd") else 5,
            options={"reduced_tail": True},
        )
    )
    layers = model_layers(model, SIZE)
    assert convs_in(layers) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    classifiers = [
        layer
        for layer in layers
        if isinstance(layer, Chain) and getattr(layer.ops[-1], "keep_float", False)
    ]
    assert len(classifiers) == 12 + name.startswith(
        "multi"
    )  # 6 maps x (class, box) (+ LR-ASPP's low one)
    # the block SSDLite taps inside (C4_expand) runs in two pieces: found as its expansion, then
    # the rest
    assert (
        sum(layer.ops == (SqueezeExcite(288, 72),) for layer in layers if isinstance(layer, Chain))
        == 1
    )


def test_layer_graphs_compute_what_their_modules_compute():
    ort = pytest.importorskip("onnxruntime")
    model = build_model(ModelConfig(name="multitask_mobilenet_v3_small", num_classes=5))
    layers = list(dict.fromkeys(model_layers(model, SIZE)))
    for layer in layers:
        module = torch_module(layer)
        x = torch.randn(1, *layer.shape, generator=torch.Generator().manual_seed(1))
        session = ort.InferenceSession(
            onnx_model(layer, module).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        got = session.run(None, {"x": x.numpy()})[0]
        assert got.shape == tuple(module(x).shape), layer
        assert abs(got - module(x).numpy()).max() < 1e-4, layer


def test_check_route_says_what_to_do_in_one_line(monkeypatch):
    with pytest.raises(
        UserError,
        match=r"unknown latency route 'onnxrutime' \(did you mean 'onnxruntime'\?\); "
        r"choose one of torch, onnxruntime, onnxruntime-int8, openvino",
    ):
        check_route("onnxrutime")
    real = latency.importlib.util.find_spec
    monkeypatch.setattr(
        latency.importlib.util, "find_spec", lambda name: None if name == "openvino" else real(name)
    )
    with pytest.raises(UserError, match=r"pip install densemnv3\[openvino\]$") as err:
        check_route("openvino")
    assert "\n" not in str(err.value)
    check_route("onnxruntime")
    check_route("torch")


def fake_ms(layer) -> float:
    return float(len(repr(layer)) % 97) / 10


def test_the_cache_file_keeps_layers_and_glue(tmp_path, monkeypatch):
    monkeypatch.setattr(LatencyTable, "_time_layer", lambda self, layer: fake_ms(layer))
    model = lraspp_small()
    table = LatencyTable("onnxruntime", threads=1, size=SIZE, cache_dir=tmp_path, progress=False)
    layers = model_layers(model, SIZE)
    table.glue_ms = 1.5
    assert table.predict(model) == pytest.approx(
        sum(table.layer_ms(layer) for layer in layers) + 1.5
    )
    stored = json.loads(table.path.read_text())
    assert (
        len(stored["layers"]) == len(set(layers))
        and stored["threads"] == 1
        and stored["size"] == [64, 128]
    )
    monkeypatch.setattr(LatencyTable, "measure", lambda self, model, calibration=None: 30.0)
    predicted, measured = table.calibrate(model)
    assert predicted == measured == 30.0 and table.glue_ms == pytest.approx(
        30.0 - sum(map(fake_ms, layers))
    )

    def fail(self, layer):
        raise AssertionError(f"re-measured {layer}")

    monkeypatch.setattr(LatencyTable, "_time_layer", fail)
    again = LatencyTable("onnxruntime", threads=1, size=SIZE, cache_dir=tmp_path, progress=False)
    assert again.path == table.path
    assert again.glue_ms == table.glue_ms and again.predict(model) == pytest.approx(30.0)
    with pytest.raises(AssertionError, match="re-measured"):
        again.predict(lraspp_small(0.75))


def test_the_cache_key_names_what_a_latency_depends_on(tmp_path):
    table = LatencyTable(
        "onnxruntime", threads=2, size=(512, 1024), cache_dir=tmp_path, progress=False
    )
    name = table.path.name
    assert (
        table.path.parent == tmp_path
        and name.startswith("onnxruntime_onnxruntime-")
        and "_2t_512x1024_" in name
    )
    assert latency.package_version("onnxruntime") in name
    others = {
        LatencyTable(route, threads=threads, size=size, cache_dir=tmp_path, progress=False).path
        for route, threads, size in [
            ("onnxruntime", 1, (512, 1024)),
            ("onnxruntime", 2, (256, 512)),
            ("onnxruntime-int8", 2, (512, 1024)),
            ("torch", 2, (512, 1024)),
        ]
    }
    assert len(others) == 4 and table.path not in others
    assert latency.default_cache_dir().parts[-2:] == ("densemnv3", "latency")


def test_edges_are_the_conversions_at_the_graph_inputs_and_outputs():
    nodes = {
        "q": ("QuantizeLinear", ["x"], ["a"]),
        "t": ("Transpose", ["a"], ["b"]),
        "conv": ("QLinearConv", ["b"], ["c"]),
        "t2": ("Transpose", ["c"], ["d"]),  # inside: kept
        "conv2": ("QLinearConv", ["d"], ["e"]),
        "t3": ("Transpose", ["e"], ["f"]),
        "dq": ("DequantizeLinear", ["f"], ["y"]),
    }
    assert edge_nodes(nodes, {"x"}, {"y"}, {"QuantizeLinear", "DequantizeLinear", "Transpose"}) == {
        "q",
        "t",
        "t3",
        "dq",
    }


def test_torch_route_times_layers_and_models_and_restores_threads(tmp_path):
    model = lraspp_small(0.5)
    table = LatencyTable("torch", threads=1, size=(32, 64), cache_dir=tmp_path, progress=False)
    before = torch.get_num_threads()
    layer = model_layers(model, (32, 64))[0]
    assert table.layer_ms(layer) > 0 and table.measure(model) > 0
    assert torch.get_num_threads() == before
    assert repr(layer) in json.loads(table.path.read_text())["layers"]


@pytest.mark.slow
def test_onnxruntime_runs_models_side_by_side_on_the_route(tmp_path):
    """The route's own runners, timed in turn: a time per round for each, and a calibrated table
    that predicts the original as measured (no latency is compared: the machine may be shared)."""
    pytest.importorskip("onnxruntime")
    table = LatencyTable("onnxruntime", threads=1, size=SIZE, cache_dir=tmp_path, progress=False)
    original, thin = lraspp_small(), lraspp_small(0.5)
    predicted, measured = table.calibrate(original)
    assert predicted == pytest.approx(measured) == pytest.approx(table.predict(original))
    calls = Counter()

    def counted(name, run):
        def call():
            calls[name] += 1
            return run()

        return call

    run = table.runner(thin)
    assert run()[0].shape[:2] == (1, 5)  # the route's raw logits
    times = table.side_by_side(
        {"original": counted("original", table.runner(original)), "thin": counted("thin", run)},
        rounds=3,
    )
    assert {k: len(v) for k, v in times.rounds.items()} == {"original": 3, "thin": 3}
    assert all(t > 0 for v in times.rounds.values() for t in v)
    assert times.ratio("thin", "original") > 0
    least = 3 * latency.BLOCK_CALLS  # rounds x a block's calls
    assert calls["original"] >= least and calls["thin"] >= least


@pytest.mark.slow
def test_int8_layer_graphs_run_the_int8_files_kernels(tmp_path):
    """Optimized by onnxruntime, the layers' int8 graphs hold the int8 file's compute nodes, one
    for one (QLinearConv with int8_friendly's hard-swish convs, the classifiers in float, ...)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    compute = {
        "QLinearConv",
        "QLinearMul",
        "QLinearAdd",
        "QLinearGlobalAveragePool",
        "QLinearSigmoid",
        "Conv",
        "HardSigmoid",
        "Mul",
        "HardSwish",
    }

    def kernels(path):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        nodes = onnx.load(options.optimized_model_filepath).graph.node
        return Counter(node.op_type for node in nodes if node.op_type in compute)

    model = lraspp_small()
    table = LatencyTable(
        "onnxruntime-int8", threads=1, size=SIZE, cache_dir=tmp_path, progress=False
    )
    whole = tmp_path / "model.onnx"
    latency._quantized_file(model, whole, SIZE, latency._random_images(SIZE)[:2], progress=False)
    layers = Counter()
    for i, layer in enumerate(model_layers(model, SIZE)):
        (tmp_path / str(i)).mkdir()
        layers += kernels(table._layer_file(layer, tmp_path / str(i), torch.randn(1, *layer.shape)))
    assert layers == kernels(whole)
    assert layers["QLinearConv"] > 40 and layers["Conv"] == 2
