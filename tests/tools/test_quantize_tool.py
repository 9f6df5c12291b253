"""tools/quantize.py: an int8 file that the eval tools, the Predictor and the demo run with
--weights, and one-line errors for what an ONNX file cannot do."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(fitted_seg_checkpoint):
    return fitted_seg_checkpoint


@pytest.fixture(scope="module")
def int8_file(checkpoint):
    from tools.quantize import main

    torch.set_num_threads(1)
    out = checkpoint.with_suffix(".int8.onnx")
    code = main(["--weights", str(checkpoint), "--calib-images", "3", "--no-progress"])
    assert code == 0 and out.is_file()
    return out


def test_quantize_writes_a_self_describing_int8_file(int8_file, checkpoint):
    from densemnv3.load import load_model
    from densemnv3.runtimes import ExportedSegmenter, read_metadata

    metadata = read_metadata(int8_file)
    assert metadata["precision"] == "int8" and metadata["task"] == "segmentation"
    assert metadata["calibration_images"] == 3 and metadata["input_size"] == "dynamic"
    loaded = load_model(None, int8_file)
    assert (
        isinstance(loaded.model, ExportedSegmenter)
        and loaded.cfg == load_model(None, checkpoint).cfg
    )
    assert loaded.checkpoint.description.startswith(
        "an int8 ONNX segmentation model of lraspp_mobilenet_v3_small"
    )


def test_predictor_runs_the_int8_file(int8_file, checkpoint, tiny_synthetic):
    import cv2

    from densemnv3.errors import UserError
    from densemnv3.inference import Predictor

    frame = cv2.imread(str(next((tiny_synthetic / "leftImg8bit" / "val").rglob("*.png"))))
    int8 = Predictor.from_checkpoint(int8_file)  # the fastest installed runtime, measured
    assert int8.settings.describe().startswith("inference: cpu, int8, ")
    assert (
        "; auto: fastest here" in int8.settings.describe()
        or "the only installed runtime" in int8.settings.describe()
    )
    labels, reference = int8(frame), Predictor.from_checkpoint(checkpoint, device="cpu")(frame)
    assert labels.shape == frame.shape[:2] and labels.dtype == np.uint8
    assert (labels == reference).mean() > 0.9
    with pytest.raises(
        UserError, match="onnxruntime runs an int8 file in int8; drop --precision bf16"
    ):
        Predictor.from_checkpoint(int8_file, precision="bf16", runtime="onnxruntime")
    with pytest.raises(UserError, match="tools/quantize.py"):
        Predictor.from_checkpoint(checkpoint, precision="int8")


def test_demo_runs_the_int8_file(int8_file, tmp_path, capsys):
    from densemnv3.data.synthetic import make_synthetic_video
    from tools.demo_video import main

    video = make_synthetic_video(tmp_path / "clip.mp4", frames=3, size=(64, 128))
    assert (
        main(
            [
                "--weights",
                str(int8_file),
                "--source",
                str(video),
                "--output",
                str(tmp_path / "out.mp4"),
                "--no-display",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "inference: cpu, int8, onnxruntime" in stdout and "frames: 3 processed" in stdout


def test_eval_seg_scores_the_int8_file(int8_file, run_tool, tmp_path):
    proc = run_tool("eval_seg.py", "--weights", str(int8_file), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images_evaluated"] == 2 and 0 <= metrics["mIoU"] <= 1


@pytest.mark.slow
def test_the_openvino_shaped_file_runs_in_every_tool(checkpoint, run_tool, tmp_path, capsys):
    """``--runtime openvino``: ``best.int8.openvino.onnx``, checked and scored as the default
    file is, by the eval tool in either runtime (the same graph, so nearly the same score)."""
    pytest.importorskip("openvino")
    from densemnv3.runtimes import read_metadata
    from tools.quantize import main

    torch.set_num_threads(1)
    args = ["--weights", str(checkpoint), "--calib-images", "3", "--no-progress"]
    assert main([*args, "--runtime", "openvino"]) == 0
    out = checkpoint.with_suffix(".int8.openvino.onnx")
    printed = capsys.readouterr().out
    assert "QDQ for openvino" in printed and f"wrote {out}" in printed and "-> OK" in printed
    assert read_metadata(out)["int8_form"] == "openvino"
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert "HardSwish" in ops and "GlobalAveragePool" not in ops
    scores = {}
    for runtime in ("openvino", "onnxruntime"):
        folder = tmp_path / runtime
        proc = run_tool(
            "eval_seg.py", "--weights", str(out), "--runtime", runtime, "--out", str(folder)
        )
        assert proc.returncode == 0, proc.stderr
        assert f"inference: cpu, int8, {runtime}" in proc.stdout
        scores[runtime] = json.loads((folder / "metrics.json").read_text())["mIoU"]
    assert abs(scores["openvino"] - scores["onnxruntime"]) < 0.01, scores


def assert_one_line_error(code, stderr, *needles):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_what_an_onnx_file_cannot_do_is_one_line(int8_file, run_in_process, tmp_path):
    from densemnv3.errors import CheckpointError
    from densemnv3.models import inspect_checkpoint, load_weights, lraspp_mobilenet_v3_small
    from tools.export import main as export
    from tools.quantize import main as quantize

    code, _, err = run_in_process(
        export, ["--weights", str(int8_file), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]
    )
    assert_one_line_error(
        code,
        err,
        str(int8_file),
        "an int8 ONNX segmentation model",
        "holds no PyTorch weights for export",
        "give the checkpoint it was made from",
    )
    code, _, err = run_in_process(quantize, ["--weights", str(int8_file)])
    assert_one_line_error(code, err, "holds no PyTorch weights for quantization")
    with pytest.raises(CheckpointError, match="holds no PyTorch weights for a PyTorch model"):
        load_weights(
            lraspp_mobilenet_v3_small(),
            inspect_checkpoint(int8_file),
            task="segmentation",
            model_name="lraspp_mobilenet_v3_small",
        )  # training, --resume, model.weights
    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(str(int8_file))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    with pytest.raises(CheckpointError, match="an ONNX model not written by densemnv3"):
        inspect_checkpoint(foreign)
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xff" * 100)
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        inspect_checkpoint(tmp_path / "junk.onnx")


def test_missing_onnxruntime_says_what_to_install(
    checkpoint, run_in_process, monkeypatch, tmp_path
):
    from tools.quantize import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    code, _, err = run_in_process(
        main, ["--weights", str(checkpoint), "--out", str(tmp_path / "q.onnx")]
    )
    assert_one_line_error(
        code,
        err,
        "int8 quantization needs the 'onnxruntime' package",
        "pip install densemnv3[export]",
    )
