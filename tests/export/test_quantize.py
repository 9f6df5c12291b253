"""int8 quantization (onnxruntime QDQ): agreement with fp32 on fixed inputs, deterministic
calibration, a graph that onnxruntime runs in int8 at any size, float postprocess for SSDLite and
the multi-task model."""

import pytest
import torch

from densemnv3.benchmark.models import calibrate_bn_
from densemnv3.export.quantize import (
    PIXEL_AGREEMENT,
    REL_RMS_TOLERANCE,
    agreement,
    calibration_order,
    export_for_quantization,
    quantize_onnx,
)
from densemnv3.models import (
    lraspp_mobilenet_v3_small,
    multitask_mobilenet_v3_small,
    ssdlite320_mobilenet_v3_small,
)
from densemnv3.runtimes import (
    ExportedDetector,
    ExportedMultiTask,
    ExportedSegmenter,
    engine_class,
    exported_model,
)

ORT = engine_class("onnxruntime")

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")

SEG_SIZE, DET_SIZE = (64, 96), (128, 128)


def fixed_images(count: int, size, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, *size, generator=g) for _ in range(count)]


def realistic(build, images):
    """``build()``'s model, default init from seed 0 (whatever ran before), with BatchNorm
    statistics of ``images``: activations of a realistic scale."""
    torch.manual_seed(0)
    model = build()
    batch = torch.cat(images)
    forward = getattr(model, "predict_raw", None) or getattr(model, "network", None) or model
    calibrate_bn_(model, lambda: forward(batch))
    return model.eval()


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """(fp32 model, prepared fp32 graph, int8 file, images) for a small LR-ASPP."""
    root = tmp_path_factory.mktemp("quantize")
    torch.set_num_threads(1)
    images = fixed_images(6, SEG_SIZE)
    model = realistic(lambda: lraspp_mobilenet_v3_small(num_classes=5), images)
    prepared = root / "prepared.onnx"
    assert export_for_quantization(model, prepared, SEG_SIZE) == "logits_raw"
    quantize_onnx(prepared, root / "int8.onnx", iter(images[:4]), 4, progress=False)
    return model, prepared, root / "int8.onnx", images


def test_int8_agrees_with_fp32_on_fixed_inputs(seg):
    model, _, int8, images = seg
    quantized = exported_model(
        int8, {"task": "segmentation", "outputs": "logits_raw", "precision": "int8"}, model, ORT
    )
    assert isinstance(quantized, ExportedSegmenter)
    check = agreement(quantized, model, images[4:])  # two images the calibration did not see
    # stated tolerance: argmax equal on >= 90 % of pixels, ||int8 - fp32|| <= 0.35 ||fp32||
    assert check["pixel_agreement"] >= PIXEL_AGREEMENT and check["rel_rms"] <= REL_RMS_TOLERANCE, (
        check
    )
    assert check["pixel_agreement"] > 0.93 and check["rel_rms"] < 0.12, (
        check
    )  # measured: 0.951, 0.063


def test_calibration_is_deterministic(seg, tmp_path):
    _, prepared, int8, images = seg
    quantize_onnx(prepared, tmp_path / "again.onnx", iter(images[:4]), 4, progress=False)
    assert (tmp_path / "again.onnx").read_bytes() == int8.read_bytes()
    quantize_onnx(prepared, tmp_path / "other.onnx", iter(images[2:6]), 4, progress=False)
    assert (tmp_path / "other.onnx").read_bytes() != int8.read_bytes()
    assert calibration_order(100, 8) == calibration_order(100, 8)
    assert calibration_order(100, 16)[:8] == calibration_order(100, 8)  # more images extend fewer
    assert sorted(calibration_order(5, 9)) == list(range(5))


def test_int8_graph_runs_in_onnxruntime_at_any_size(seg):
    model, prepared, int8, _ = seg
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "GlobalAveragePool"} <= ops
    assert "HardSwish" not in ops and "ReduceMean" not in ops  # rewritten for int8 kernels
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    fp32 = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"])
    for size in (SEG_SIZE, (48, 112)):
        x = fixed_images(1, size, seed=5)[0]
        (logits,) = session.run(None, {"images": x.numpy()})
        assert logits.shape == (1, 5, size[0] // 8, size[1] // 8)  # at stride 8, as LRASPP.network
        with torch.no_grad():  # the rewritten fp32 graph computes what PyTorch does
            expected = model.network(x)
        assert torch.allclose(
            torch.from_numpy(fp32.run(None, {"images": x.numpy()})[0]), expected, atol=1e-4
        )


def test_the_classifiers_stay_in_float_and_the_graph_ends_at_stride_8(seg):
    graph = onnx.load(str(seg[2])).graph
    producer = {out: node for node in graph.node for out in node.output}
    weights = {t.name for t in graph.initializer}
    total = producer[graph.output[0].name]  # low_classifier(low) + upsampled high_classifier(high)
    assert total.op_type == "Add"
    assert {producer[i].op_type for i in total.input} == {"Conv", "Resize"}
    classifiers = [producer[i] for i in total.input if producer[i].op_type == "Conv"]
    assert all(
        conv.input[1] in weights for conv in classifiers
    )  # float weights, no DequantizeLinear


def _conv_activation_pairs(graph) -> int:
    """Q/DQ pairs between a Conv and the HardSwish / HardSigmoid after it."""
    producer = {out: node for node in graph.node for out in node.output}

    def chain(name, *types):
        node = producer.get(name)
        if not types:
            return True
        return node is not None and node.op_type == types[0] and chain(node.input[0], *types[1:])

    return sum(
        chain(node.input[0], "DequantizeLinear", "QuantizeLinear", "Conv")
        for node in graph.node
        if node.op_type in ("HardSwish", "HardSigmoid")
    )


def test_the_openvino_form_fuses_each_activation_into_its_convolution(seg, tmp_path):
    """``runtime="openvino"``: the graph as exported (HardSwish, ReduceMean), quantized the same
    way, less the Q/DQ pair between each convolution and its activation; it computes what the
    onnxruntime form computes, in both runtimes, and records its form."""
    from densemnv3.export.int8_graph import fuse_activations
    from densemnv3.export.quantize import quantize_model
    from densemnv3.runtimes import read_metadata

    model, _, int8, images = seg
    path = tmp_path / "int8_openvino.onnx"
    report = quantize_model(
        model,
        path,
        calibration=iter(images[:4]),
        num_images=4,
        input_size=SEG_SIZE,
        check_images=images[4:],
        progress=False,
        runtime="openvino",
    )
    assert report.ok and read_metadata(path)["int8_form"] == "openvino"
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("HardSwish") == 18 and "GlobalAveragePool" not in ops  # not rewritten
    assert _conv_activation_pairs(graph) == 0
    # the pairs it removed: quantizing the exported graph as it is leaves one per activation
    raw = tmp_path / "raw.onnx"
    export_for_quantization(model, raw, SEG_SIZE, runtime="openvino")
    quantize_onnx(raw, tmp_path / "unfused.onnx", iter(images[:4]), 4, progress=False)
    unfused = onnx.load(str(tmp_path / "unfused.onnx"))
    pairs = _conv_activation_pairs(unfused.graph)
    assert pairs == ops.count("HardSwish") + ops.count("HardSigmoid")  # each follows a Conv
    assert fuse_activations(unfused) == pairs and _conv_activation_pairs(unfused.graph) == 0
    meta = {"task": "segmentation", "outputs": "logits_raw", "precision": "int8"}
    ours = exported_model(path, meta, model, ORT)
    check = agreement(ours, model, images[4:])
    assert check["pixel_agreement"] > 0.93 and check["rel_rms"] < 0.12, check
    if engine_class("openvino").installed():
        in_openvino = exported_model(path, meta, model, engine_class("openvino"))
        x = images[5]
        assert torch.allclose(in_openvino(x), ours(x), atol=0.05 * float(ours(x).abs().max()))


@pytest.mark.slow
def test_int8_detector_postprocesses_in_float(tmp_path):
    images = fixed_images(6, DET_SIZE, seed=3)
    model = realistic(
        lambda: ssdlite320_mobilenet_v3_small(num_classes=4, score_thresh=0.2), images
    )
    assert export_for_quantization(model, tmp_path / "prepared.onnx", DET_SIZE) == "raw"
    quantize_onnx(
        tmp_path / "prepared.onnx", tmp_path / "int8.onnx", iter(images[:4]), 4, progress=False
    )
    detector = exported_model(
        tmp_path / "int8.onnx",
        {"task": "detection", "outputs": "raw", "precision": "int8"},
        model,
        ORT,
    )
    assert isinstance(detector, ExportedDetector) and detector.score_thresh == 0.2
    check = agreement(detector, model, images[4:])
    assert (
        check["rel_rms_cls"] <= REL_RMS_TOLERANCE and check["rel_rms_box"] <= REL_RMS_TOLERANCE
    ), check
    for size in (DET_SIZE, (96, 160)):  # default boxes in float, computed in the graph for the size
        x = fixed_images(2, size, seed=7)[0]
        cls_logits, bbox_regression, anchors = detector.predict_raw(x)
        with torch.no_grad():
            assert torch.equal(anchors, model.predict_raw(x)[2])
            expected = model.postprocess(
                cls_logits, bbox_regression, anchors, size
            )  # the same code
        for got, exp in zip(detector(x), expected):
            assert all(torch.equal(got[k], exp[k]) for k in ("boxes", "scores", "labels"))


@pytest.mark.slow
def test_multitask_file_gives_what_the_pytorch_model_gives(tmp_path):
    """The raw multi-task graph: fp32 as PyTorch (logits at stride 8, SSDLite's tensors), the same
    postprocess; int8 within the stated agreement."""
    images = fixed_images(6, DET_SIZE, seed=4)
    model = realistic(
        lambda: multitask_mobilenet_v3_small(num_classes=5, det_num_classes=4, score_thresh=0.2),
        images,
    )
    prepared, int8 = tmp_path / "prepared.onnx", tmp_path / "int8.onnx"
    assert export_for_quantization(model, prepared, DET_SIZE) == "multitask_raw"
    meta = {"task": "multitask", "outputs": "multitask_raw"}
    fp32 = exported_model(prepared, {**meta, "precision": "fp32"}, model, ORT)
    assert (
        isinstance(fp32, ExportedMultiTask)
        and fp32.det.score_thresh == 0.2
        and fp32.num_classes == 5
    )
    for size in (DET_SIZE, (96, 160)):
        x = fixed_images(1, size, seed=8)[0]
        with torch.no_grad():
            expected = model.network(x)
            got = fp32.network(x)
            assert got[0].shape == (1, 5, size[0] // 8, size[1] // 8)
            for g, e in zip(got, expected):
                assert torch.allclose(g, e, atol=1e-4), (g - e).abs().max()
            out, reference = fp32(x), model(x)
        assert torch.allclose(
            out.logits, reference.logits, atol=1e-4
        )  # upsampled to the input size
        replay = model.det.postprocess(
            *got[1:], size
        )  # the model's own postprocess on the file's tensors
        assert all(
            torch.equal(a[k], b[k])
            for a, b in zip(out.detections, replay)
            for k in ("boxes", "labels")
        )
        fp32.det.score_thresh = 0.9  # the settings are the wrapper's, changeable as on the model
        assert all((d["scores"] > 0.9).all() for d in fp32(x).detections)
        fp32.det.score_thresh = 0.2

    quantize_onnx(prepared, int8, iter(images[:4]), 4, progress=False)
    check = agreement(
        exported_model(int8, {**meta, "precision": "int8"}, model, ORT), model, images[4:]
    )
    assert set(check) == {"pixel_agreement", "rel_rms", "rel_rms_cls", "rel_rms_box"}
    assert check["pixel_agreement"] >= PIXEL_AGREEMENT, check
    assert max(check["rel_rms"], check["rel_rms_cls"], check["rel_rms_box"]) <= REL_RMS_TOLERANCE, (
        check
    )
