"""The multi-task model through the tools: tools/train.py and tools/eval.py on tiny synthetic data,
its metrics.json with both tasks' numbers, ONNX export, the int8 file the tools run, the demo, and
the single-task tools' refusals."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "multitask_synthetic.py")


#: tiny_overrides' segmentation run, made multi-task: the Small model, 4 iterations, one evaluation.
MULTITASK = {"model__name": "multitask_mobilenet_v3_small", "model__options": "{}", "data__crop_size": "[48,96]",
             "data__eval_batch_size": 2, "schedule__iters": 4, "schedule__warmup_iters": 1,
             "train__eval_interval": 4, "train__checkpoint_interval": 4}


@pytest.mark.slow
def test_train_eval_export_and_demo(run_tool, tiny_overrides, tiny_synthetic, tmp_path):
    work = tmp_path / "run"
    proc = run_tool("train.py", CONFIG, "--no-progress", "--set", *tiny_overrides(tiny_synthetic, work, **MULTITASK))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("iter ")]
    assert len(lines) == 4 and all(f"{k} " in lines[-1] for k in ("ce", "bbox_regression", "classification"))
    header = (work / "results.csv").read_text().splitlines()[0].split(",")
    assert {"train/ce", "train/bbox_regression", "train/classification", "train/loss", "val/mIoU",
            "val/AP", "val/AP50", "val/mIoU_AP_mean"} <= set(header)
    in_training = json.loads((work / "metrics.json").read_text())
    assert {"mIoU", "per_class_iou", "AP", "AP50", "AP75", "per_class_ap", "mIoU_AP_mean"} <= in_training.keys()
    assert in_training["mIoU_AP_mean"] == pytest.approx((in_training["mIoU"] + in_training["AP"]) / 2)
    assert "final mIoU_AP_mean" in proc.stdout and "AP50 " in proc.stdout

    # the generic eval: the same numbers as the evaluation inside training, and both tasks' files
    out = tmp_path / "ev"
    proc = run_tool("eval.py", "--weights", str(work / "last.pt"), "--out", str(out),
                    "--save-predictions", str(out / "png"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics.pop("ms_per_image") > 0 and in_training.pop("ms_per_image") > 0  # timings
    assert in_training.pop("iter") == 4 and metrics == in_training
    assert len(list((out / "png").glob("*.png"))) == metrics["images_evaluated"] == 2
    detections = json.loads((out / "detections.json").read_text())
    assert all(d["category_id"] in {24, 25, 26, 27, 28, 31, 32, 33} for d in detections)
    assert "IoU" in proc.stdout and "Average Precision" in proc.stdout

    # test-time flips: the segmentation averaged over the mirror, the detections of the image as it is
    proc = run_tool("eval.py", "--weights", str(work / "last.pt"), "--out", str(tmp_path / "tta"), "--tta", "flip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    flipped = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    assert flipped["eval_mode"] == "whole, flip" and metrics["eval_mode"] == "whole"
    assert flipped["AP"] == metrics["AP"] and flipped["mIoU"] is not None
    assert "prediction: whole, flip:" in proc.stdout

    # the single-task tools say which tool takes it
    proc = run_tool("eval_seg.py", "--weights", str(work / "last.pt"))
    assert proc.returncode == 2 and "this is a multitask model; use tools/eval.py" in proc.stderr
    proc = run_tool("train_det.py", CONFIG)
    assert proc.returncode == 2 and "this is a multitask config; use tools/train.py" in proc.stderr

    # one ONNX graph with both outputs, checked in onnxruntime against PyTorch
    onnx_file = tmp_path / "mt.onnx"
    proc = run_tool("export.py", "--weights", str(work / "last.pt"), "--format", "onnx", "--out", str(onnx_file))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "input (N, 3, 48, 96), H and W dynamic" in proc.stdout and "-> OK" in proc.stdout
    # (checked at a second size too); the tools do not run this decoded form, and say so
    proc = run_tool("eval.py", "--weights", str(onnx_file))
    assert proc.returncode == 2 and "a multi-task ONNX file" in proc.stderr and "best.pt" in proc.stderr

    # tools/quantize.py's int8 file (the raw tensors of one pass) is one the tools run
    int8 = tmp_path / "mt.int8.onnx"
    proc = run_tool("quantize.py", "--weights", str(work / "last.pt"), "--out", str(int8), "--calib-images", "2",
                    "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rel_rms_cls" in proc.stdout and "pixel_agreement" in proc.stdout and "-> OK" in proc.stdout
    proc = run_tool("eval.py", "--weights", str(int8), "--runtime", "onnxruntime", "--out", str(tmp_path / "ev8"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "inference: cpu, int8, onnxruntime" in proc.stdout
    quantized = json.loads((tmp_path / "ev8" / "metrics.json").read_text())
    assert quantized["images_evaluated"] == metrics["images_evaluated"]
    assert abs(quantized["mIoU"] - metrics["mIoU"]) < 0.05 and abs(quantized["AP50"] - metrics["AP50"]) < 0.1

    # the demo draws mask and boxes of one pass per frame, from the checkpoint and the int8 file
    from densemnv3.data.synthetic import make_synthetic_video

    video = make_synthetic_video(tmp_path / "street.mp4", frames=3, size=(64, 128))
    for weights in (work / "last.pt", int8):
        proc = run_tool("demo_video.py", "--weights", str(weights), "--source", str(video),
                        "--output", str(tmp_path / "out.mp4"), "--no-display", "--threads", "1")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "multitask on" in proc.stdout and "wrote 3 frames" in proc.stdout
