"""The runtime layer: every engine runs an exported file as PyTorch does, ``--runtime`` says
what it cannot do in one line, ``auto`` takes the fastest measured and remembers it, and the
thread budget reaches the engine."""

import pytest
import torch

from densemnv3.errors import UserError
from densemnv3.models import lraspp_mobilenet_v3_small
from densemnv3.runtimes import ExportedSegmenter, check_runtime, engine_class, exported_model
from densemnv3.runtimes import choice as choice_module

pytest.importorskip("onnxruntime")
SIZE = (64, 128)


@pytest.fixture(scope="module")
def seg_files(tmp_path_factory):
    """A random-weight LR-ASPP-Small (BatchNorm statistics randomised too), its fp32 ONNX file
    and an image batch."""
    from densemnv3.export.onnx_export import export_model
    from tests.conftest import randomize_

    torch.manual_seed(0)
    model = randomize_(lraspp_mobilenet_v3_small(num_classes=5)).eval()
    folder = tmp_path_factory.mktemp("engines")
    export_model(
        model,
        folder / "fp32.onnx",
        fmt="onnx",
        input_size=SIZE,
        check_batches=(1,),
        metadata={"task": "segmentation"},
    )
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    return model, folder / "fp32.onnx", x


META = {"task": "segmentation", "outputs": "logits_raw", "precision": "fp32"}


def test_onnxruntime_and_openvino_fp32_match_pytorch(seg_files):
    model, path, x = seg_files
    with torch.inference_mode():
        ref = model(x)["out"] if isinstance(model(x), dict) else model(x)
    ort = exported_model(path, META, model, engine_class("onnxruntime"))
    assert isinstance(ort, ExportedSegmenter)
    torch.testing.assert_close(ort(x), ref, atol=1e-4, rtol=1e-4)  # upsampled outside the graph
    with torch.inference_mode():
        torch.testing.assert_close(
            ort.network(x), model.network(x), atol=1e-4, rtol=1e-4
        )  # stride 8
    if not engine_class("openvino").installed():
        pytest.skip("openvino not installed")
    f32 = exported_model(path, META, model, engine_class("openvino"), asked="fp32")
    assert (
        f32.compute_precision == "fp32"
        and "precision hint f32 (--precision fp32)" in f32.describe()
    )
    torch.testing.assert_close(f32(x), ref, atol=1e-3, rtol=1e-3)
    default = exported_model(path, META, model, engine_class("openvino"))
    from densemnv3.runtimes.engines import cpu_has_bf16

    assert default.compute_precision == ("bf16" if cpu_has_bf16() else "fp32")
    agreement = (default(x).argmax(1) == ref.argmax(1)).float().mean().item()
    assert agreement > 0.97, agreement  # bf16 keeps 8 bits of mantissa: a few near-ties flip


@pytest.mark.slow
def test_the_predictor_takes_the_labels_of_the_files_stride_8_logits(tmp_path):
    """The Predictor over an exported file (logits at stride 8) labels frames as over the PyTorch
    model: the labels of the logits' bilinear upsampling to the frame."""
    import numpy as np

    from densemnv3.config import Config
    from densemnv3.export.onnx_export import export_model
    from densemnv3.inference import Predictor
    from tests.inference.test_predictor import calibrate_bn_

    blocks = np.random.default_rng(2).integers(0, 256, (2, 9, 17, 3), dtype=np.uint8)
    frames = blocks.repeat(8, axis=1).repeat(8, axis=2)  # regions of their own colour
    cfg = Config(task="segmentation")
    torch.manual_seed(0)
    model = lraspp_mobilenet_v3_small(num_classes=5)
    calibrate_bn_(model, model, torch.rand(2, 3, *SIZE) * 4 - 2)  # labels that vary
    export_model(model, tmp_path / "m.onnx", fmt="onnx", input_size=SIZE, check_batches=(1,))
    ort = exported_model(tmp_path / "m.onnx", META, model, engine_class("onnxruntime"))
    got, expected = (
        Predictor(ort, cfg, device="cpu")(frames),
        Predictor(model, cfg, device="cpu")(frames),
    )
    agree = np.mean([np.mean(g == e) for g, e in zip(got, expected)])
    assert agree > 0.999 and len(np.unique(got[0])) > 2, agree  # ties aside; measured 1.0


def test_runtime_errors_are_one_line(seg_files, monkeypatch):
    _, path, _ = seg_files
    with pytest.raises(
        UserError,
        match=r"--runtime torch: .*fp32.onnx is an ONNX file, which runs in openvino or "
        r"onnxruntime",
    ):
        check_runtime("torch", "onnx", path)
    with pytest.raises(UserError, match=r"--runtime executorch: .* an ONNX file"):
        check_runtime("executorch", "onnx", path)
    with pytest.raises(
        UserError,
        match=r"--runtime openvino: best.pt is a PyTorch checkpoint, which runs in torch; "
        r"export it",
    ):
        check_runtime("openvino", "pytorch", "best.pt")
    with pytest.raises(UserError, match="--runtime must be one of auto, torch"):
        check_runtime("tensorrt", "onnx", path)
    monkeypatch.setattr(engine_class("openvino"), "installed", classmethod(lambda cls: False))
    with pytest.raises(
        UserError,
        match=r"--runtime openvino needs the 'openvino' package, which is not installed: "
        r"pip install densemnv3\[openvino\]",
    ):
        exported_model(path, META, None, engine_class("openvino"))
    with pytest.raises(
        UserError, match=r"onnxruntime runs an fp32 file in fp32; drop --precision bf16"
    ):
        exported_model(path, META, None, engine_class("onnxruntime"), asked="bf16")


def test_auto_takes_the_fastest_measured_and_remembers_it(seg_files, monkeypatch):
    model, path, _ = seg_files
    if not engine_class("openvino").installed():
        pytest.skip("openvino not installed")
    calls = []

    def fake_time(m, size):
        calls.append((m.runtime, size, m.threads))
        return {"onnxruntime": 5.0, "openvino": 9.0}[m.runtime]

    monkeypatch.setattr(choice_module, "time_engine", fake_time)
    chosen = choice_module.load_exported(path, "onnx", META, model, size=(48, 96), threads=1)
    assert chosen.runtime == "onnxruntime" and chosen.threads == 1
    assert sorted(calls) == [("onnxruntime", (48, 96), 1), ("openvino", (48, 96), 1)]
    assert (
        "auto: fastest here at 48x96, 1 threads (onnxruntime 5.0 ms, openvino 9.0 ms; measured now)"
        in chosen.route
    )
    again = choice_module.load_exported(path, "onnx", META, model, size=(48, 96), threads=1)
    assert (
        len(calls) == 2
        and again.runtime == "onnxruntime"
        and "measured on this CPU earlier" in again.route
    )
    choice_module.load_exported(
        path, "onnx", META, model, size=(48, 96), threads=2
    )  # another budget: timed again
    assert len(calls) == 4
    asked = choice_module.load_exported(path, "onnx", META, model, runtime="openvino")
    assert asked.runtime == "openvino" and asked.route == "--runtime openvino" and len(calls) == 4


def test_one_installed_engine_is_taken_without_timing(seg_files, monkeypatch):
    model, path, _ = seg_files
    monkeypatch.setattr(engine_class("openvino"), "installed", classmethod(lambda cls: False))
    monkeypatch.setattr(choice_module, "time_engine", lambda *a: pytest.fail("timed"))
    chosen = choice_module.load_exported(path, "onnx", META, model)
    assert chosen.runtime == "onnxruntime"
    assert chosen.route == (
        "the only installed runtime for onnx files; pip install densemnv3[openvino] adds openvino"
    )


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_thread_budget_reaches_the_engine(seg_files, runtime):
    model, path, x = seg_files
    if not engine_class(runtime).installed():
        pytest.skip(f"{runtime} not installed")
    m = exported_model(
        path, META, model, engine_class(runtime), asked="fp32" if runtime == "openvino" else None
    )
    m.threads = 1
    first = m.engine()
    if runtime == "onnxruntime":
        options = first.session.get_session_options()
        assert options.intra_op_num_threads == 1
        # its workers stop spinning when a run returns, leaving the cores to the post-processing
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    else:
        assert first.request.get_compiled_model().get_property("INFERENCE_NUM_THREADS") == 1
    assert m.engine() is first  # same budget, same engine
    m.threads = 2
    second = m.engine()
    assert second is not first and second.threads == 2
    whole = torch.cat([m(x[:1]), m(x[1:])])
    split = m(x)  # two images, two threads: two streams of one thread, side by side
    if runtime == "onnxruntime":
        assert [s.get_session_options().intra_op_num_threads for s in m.engine(2).sessions] == [
            1,
            1,
        ]
    else:
        compiled = m.engine(2).request.get_compiled_model()
        assert (
            compiled.get_property("NUM_STREAMS") == 2
            and compiled.get_property("INFERENCE_NUM_THREADS") == 2
        )
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)


def test_a_fixed_batch_file_runs_image_by_image(tmp_path):
    import numpy as np

    from densemnv3.runtimes import Engine, ExportedModel

    class BatchOfOne(Engine):  # as a .pte: batch 1, and an output without a batch axis
        name, batch = "fake", 1

        def run(self, x):
            assert len(x) == 1
            return [x.mean(1, keepdims=True), np.arange(8, dtype=np.float32).reshape(2, 4)]

    model = ExportedModel(tmp_path / "m.pte", {"precision": "fp32"}, BatchOfOne)
    x = torch.randn(3, 3, 8, 8)
    per_image, anchors = model.run(x)
    torch.testing.assert_close(per_image, x.mean(1, keepdim=True))
    assert anchors.shape == (2, 4)


def test_a_batch_is_split_into_streams_that_share_the_thread_budget(tmp_path, monkeypatch):
    """min(batch, threads) slices, run by one engine of that many streams; per-image outputs are
    joined in order, a shared one (SSDLite's anchors) taken once; a graph with its NMS inside,
    or an engine that does not split, runs the batch whole."""
    import numpy as np

    from densemnv3.runtimes import OUTPUT_NAMES, Engine, ExportedModel

    made, seen = [], []

    class Recording(Engine):
        name, splits = "fake", True

        def __init__(self, *args) -> None:
            super().__init__(*args)
            made.append((self.threads, self.streams))

        def run(self, x):
            seen.append(len(x))
            return [
                x.mean(1, keepdims=True),
                np.arange(8, dtype=np.float32).reshape(2, 4),
                x[:, :1, 0, 0],
            ]

        def run_streams(self, chunks):
            assert len(chunks) == self.streams
            return [self.run(c) for c in chunks]

    monkeypatch.setitem(OUTPUT_NAMES, "fake", ("cls_logits", "anchors", "bbox_regression"))
    model = ExportedModel(tmp_path / "m.onnx", {"precision": "fp32", "outputs": "fake"}, Recording)
    model.threads = 3
    x = torch.randn(5, 3, 8, 8)
    mean, anchors, corner = model.run(x)
    assert made == [(3, 3)] and seen == [2, 2, 1]
    torch.testing.assert_close(mean, x.mean(1, keepdim=True))  # in order
    assert anchors.shape == (2, 4) and torch.equal(corner, x[:, :1, 0, 0])
    made.clear()
    assert model.run(x[:1])[0].shape == (1, 1, 8, 8) and made == [
        (3, 1)
    ]  # one image: the batch whole
    model.run(x)
    assert made == [(3, 1)]  # the engine of each stream count is kept
    model.run(x[:2])
    assert (
        made == [(3, 1), (3, 2)] and len(model._engines) == 2
    )  # the split engine of 3 streams freed
    model.threads = 2
    model.run(x)
    assert made == [(3, 1), (3, 2), (2, 2)]  # a new budget: a new engine
    nms = ExportedModel(
        tmp_path / "m.onnx", {"precision": "fp32", "outputs": "detections"}, Recording
    )
    nms.threads = 2
    assert nms.streams(8) == 1 and model.streams(8) == 2 and model.streams(1) == 1
    Recording.splits = False
    assert model.streams(8) == 1


def test_auto_leaves_out_a_runtime_that_scores_the_file_below_pytorch(
    seg_files, monkeypatch, capsys
):
    """OpenVINO loses 2.5-4 AP50 points on onnxruntime-shaped int8 SSDLite files (BENCHMARKS.md):
    auto never takes it for them, and asking for it warns; the OpenVINO-shaped file is its own."""
    from types import SimpleNamespace

    model, path, _ = seg_files
    monkeypatch.setattr(choice_module, "time_engine", lambda *a: pytest.fail("timed"))
    monkeypatch.setattr(
        choice_module,
        "exported_model",
        lambda p, meta, t, engine, asked: SimpleNamespace(runtime=engine.name),
    )
    int8_det = {**META, "task": "detection", "precision": "int8"}
    assert engine_class("openvino").inaccurate(int8_det) and not engine_class(
        "openvino"
    ).inaccurate(META)
    assert engine_class("openvino").inaccurate({**int8_det, "int8_form": "openvino"}) is None
    assert engine_class("onnxruntime").inaccurate(int8_det) is None
    chosen = choice_module.load_exported(path, "onnx", int8_det, model)
    assert (
        chosen.runtime == "onnxruntime"
        and "not openvino, which scores this file below PyTorch" in chosen.route
    )
    asked = choice_module.load_exported(path, "onnx", int8_det, model, runtime="openvino")
    assert asked.runtime == "openvino"
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "AP50 points below PyTorch" in err
    assert "--runtime openvino loses 1.25" in err
