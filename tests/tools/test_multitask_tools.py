"""The multi-task model through the tools: tools/train.py and tools/eval.py on tiny synthetic data,
its metrics.json with both tasks' numbers, ONNX export, the int8 file the tools run, the demo, and
the single-task tools' refusals. One training run serves them all."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "multitask_synthetic.py")
pytestmark = pytest.mark.slow

#: tiny_overrides' segmentation run, made multi-task: the Small model, 4 iterations, one evaluation.
MULTITASK = {
    "model__name": "multitask_mobilenet_v3_small",
    "model__options": "{}",
    "data__crop_size": "[48,96]",
    "data__eval_batch_size": 2,
    "schedule__iters": 4,
    "schedule__warmup_iters": 1,
    "train__eval_interval": 4,
    "train__checkpoint_interval": 4,
}


@pytest.fixture(scope="module")
def trained(run_tool, tiny_overrides, tiny_synthetic, tmp_path_factory):
    """(the run folder, tools/train.py's CompletedProcess)."""
    work = tmp_path_factory.mktemp("multitask") / "run"
    proc = run_tool(
        "train.py",
        CONFIG,
        "--no-progress",
        "--set",
        *tiny_overrides(tiny_synthetic, work, **MULTITASK),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, proc


@pytest.fixture(scope="module")
def evaluated(trained, run_tool, tmp_path_factory):
    """(tools/eval.py's metrics of last.pt, its output folder, its CompletedProcess)."""
    out = tmp_path_factory.mktemp("multitask_eval")
    proc = run_tool(
        "eval.py",
        "--weights",
        str(trained[0] / "last.pt"),
        "--out",
        str(out),
        "--save-predictions",
        str(out / "png"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text()), out, proc


def test_training_logs_and_records_both_tasks(trained):
    work, proc = trained
    lines = [line for line in proc.stderr.splitlines() if line.startswith("iter ")]
    assert len(lines) == 4 and all(
        f"{k} " in lines[-1] for k in ("ce", "bbox_regression", "classification")
    )
    header = (work / "results.csv").read_text().splitlines()[0].split(",")
    assert {
        "train/ce",
        "train/bbox_regression",
        "train/classification",
        "train/loss",
        "val/mIoU",
        "val/AP",
        "val/AP50",
        "val/mIoU_AP_mean",
    } <= set(header)
    in_training = json.loads((work / "metrics.json").read_text())
    assert {
        "mIoU",
        "per_class_iou",
        "AP",
        "AP50",
        "AP75",
        "per_class_ap",
        "mIoU_AP_mean",
    } <= in_training.keys()
    assert in_training["mIoU_AP_mean"] == pytest.approx(
        (in_training["mIoU"] + in_training["AP"]) / 2
    )
    assert "final mIoU_AP_mean" in proc.stdout and "AP50 " in proc.stdout


def test_eval_gives_the_numbers_of_training_and_both_tasks_files(trained, evaluated):
    """The generic eval: the same numbers as the evaluation in training, and both tasks' files."""
    in_training = json.loads((trained[0] / "metrics.json").read_text())
    metrics, out, proc = evaluated
    metrics = dict(metrics)
    assert metrics.pop("ms_per_image") > 0 and in_training.pop("ms_per_image") > 0  # timings
    assert in_training.pop("iter") == 4 and metrics == in_training
    assert len(list((out / "png").glob("*.png"))) == metrics["images_evaluated"] == 2
    detections = json.loads((out / "detections.json").read_text())
    assert all(d["category_id"] in {24, 25, 26, 27, 28, 31, 32, 33} for d in detections)
    assert "IoU" in proc.stdout and "Average Precision" in proc.stdout


def test_flip_averages_the_segmentation_and_keeps_the_detections(
    trained, evaluated, run_tool, tmp_path
):
    """Test-time flips: the segmentation averaged over the mirror, the detections of the image as
    it is."""
    proc = run_tool(
        "eval.py",
        "--weights",
        str(trained[0] / "last.pt"),
        "--out",
        str(tmp_path / "tta"),
        "--tta",
        "flip",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    flipped = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    metrics = evaluated[0]
    assert flipped["eval_mode"] == "whole, flip" and metrics["eval_mode"] == "whole"
    assert flipped["AP"] == metrics["AP"] and flipped["mIoU"] is not None
    assert "prediction: whole, flip:" in proc.stdout


def test_the_single_task_tools_say_which_tool_takes_it(trained, run_tool):
    proc = run_tool("eval_seg.py", "--weights", str(trained[0] / "last.pt"))
    assert proc.returncode == 2 and "this is a multitask model; use tools/eval.py" in proc.stderr
    proc = run_tool("train_det.py", CONFIG)
    assert proc.returncode == 2 and "this is a multitask config; use tools/train.py" in proc.stderr


def test_one_onnx_graph_with_both_outputs(trained, run_tool, tmp_path):
    """Checked in onnxruntime against PyTorch (at a second size too); the tools do not run this
    decoded form, and say so."""
    onnx_file = tmp_path / "mt.onnx"
    proc = run_tool(
        "export.py",
        "--weights",
        str(trained[0] / "last.pt"),
        "--format",
        "onnx",
        "--out",
        str(onnx_file),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "input (N, 3, 48, 96), H and W dynamic" in proc.stdout and "-> OK" in proc.stdout
    proc = run_tool("eval.py", "--weights", str(onnx_file))
    assert (
        proc.returncode == 2
        and "a multi-task ONNX file" in proc.stderr
        and "best.pt" in proc.stderr
    )


def test_the_int8_file_evaluates_and_the_demo_draws_both(trained, evaluated, run_tool, tmp_path):
    """tools/quantize.py's int8 file (the raw tensors of one pass) is one the tools run; the demo
    draws mask and boxes of one pass per frame, from the checkpoint and the int8 file."""
    work, metrics = trained[0], evaluated[0]
    int8 = tmp_path / "mt.int8.onnx"
    proc = run_tool(
        "quantize.py",
        "--weights",
        str(work / "last.pt"),
        "--out",
        str(int8),
        "--calib-images",
        "2",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "rel_rms_cls" in proc.stdout and "pixel_agreement" in proc.stdout and "-> OK" in proc.stdout
    )
    proc = run_tool(
        "eval.py",
        "--weights",
        str(int8),
        "--runtime",
        "onnxruntime",
        "--out",
        str(tmp_path / "ev8"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "inference: cpu, int8, onnxruntime" in proc.stdout
    quantized = json.loads((tmp_path / "ev8" / "metrics.json").read_text())
    assert quantized["images_evaluated"] == metrics["images_evaluated"]
    assert (
        abs(quantized["mIoU"] - metrics["mIoU"]) < 0.05
        and abs(quantized["AP50"] - metrics["AP50"]) < 0.1
    )

    from densemnv3.data.synthetic import make_synthetic_video

    video = make_synthetic_video(tmp_path / "street.mp4", frames=3, size=(64, 128))
    for weights in (work / "last.pt", int8):
        proc = run_tool(
            "demo_video.py",
            "--weights",
            str(weights),
            "--source",
            str(video),
            "--output",
            str(tmp_path / "out.mp4"),
            "--no-display",
            "--threads",
            "1",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "multitask on" in proc.stdout and "wrote 3 frames" in proc.stdout


def test_predict_writes_masks_and_boxes_of_one_pass(trained, run_tool, tiny_synthetic, tmp_path):
    work = trained[0]
    source = tiny_synthetic / "leftImg8bit" / "val"
    proc = run_tool(
        "predict.py", "--weights", str(work / "last.pt"), "--source", str(source), "--recursive",
        "--out", str(tmp_path / "out"), "--score-threshold", "0.01", "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = sorted(source.glob("*/*.png"))
    for path in images:
        name = path.relative_to(source).with_suffix("")
        assert (tmp_path / "out" / "labels" / f"{name}.png").is_file()
        assert (tmp_path / "out" / "overlays" / f"{name}.jpg").is_file()
    detections = json.loads((tmp_path / "out" / "detections.json").read_text())
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()[1:-1]
    assert len(rows) == len(images)
    assert sum(int(row.split(",")[4]) for row in rows) == len(detections)
