"""Detection tools on tiny synthetic data: COCO round trip, empty detections, bad annotations."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from densemnv3.data.coco import CocoDetection
from densemnv3.evaluation.coco import CocoEvaluator
from densemnv3.models import ssdlite320_mobilenet_v3_small

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "ssdlite_synthetic.py")


def det_overrides(root: Path, work: Path, **extra) -> list[str]:
    values = {
        "model.name": "ssdlite320_mobilenet_v3_small",
        "data.root": str(root),
        "data.synthetic": "None",
        "data.batch_size": "2",
        "data.eval_batch_size": "2",
        "data.workers": "0",
        "schedule.iters": "4",
        "schedule.warmup_iters": "1",
        "train.eval_interval": "4",
        "train.checkpoint_interval": "2",
        "train.log_interval": "1",
        "work_dir": str(work),
    }
    values.update({k.replace("__", "."): str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in values.items()]


def save_small_detector(path: Path, **options) -> Path:
    torch.save(
        {"model": ssdlite320_mobilenet_v3_small(num_classes=9, **options).state_dict()}, path
    )
    return path


def test_ground_truth_fed_back_gives_ap_1(tiny_synthetic, tmp_path):
    """dataset -> detections.json -> COCOeval: AP = 1.0, through the contiguous label mapping."""
    ds = CocoDetection(
        tiny_synthetic,
        tiny_synthetic / "annotations/instances_val.json",
        label_mapping="contiguous",
    )
    evaluator = CocoEvaluator(ds.coco)
    n_boxes = 0
    for i in range(len(ds)):
        _, target = ds[i]
        categories = [ds.label_to_category_id[int(label)] for label in target["labels"]]
        evaluator.add(target["image_id"], target["boxes"], torch.ones(len(categories)), categories)
        n_boxes += len(categories)
    assert n_boxes > 0
    path = evaluator.write_results(tmp_path / "detections.json")
    results = json.loads(path.read_text())
    assert len(results) == n_boxes and {r["category_id"] for r in results} <= {
        24,
        25,
        26,
        27,
        28,
        31,
        32,
        33,
    }
    metrics = evaluator.evaluate()
    assert metrics.AP == pytest.approx(1.0) and metrics.AP50 == pytest.approx(1.0)


def test_eval_with_no_detections(run_tool, tiny_synthetic, tmp_path):
    weights = save_small_detector(tmp_path / "w.pt")
    out = tmp_path / "out"
    proc = run_tool(
        "eval_det.py",
        CONFIG,
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--set",
        *det_overrides(tiny_synthetic, tmp_path / "run", model__options="{'score_thresh': 1.0}"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "detections.json").read_text()) == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0
    assert "Average Precision" in proc.stdout


@pytest.mark.slow
def test_train_and_eval_det_end_to_end(run_tool, tiny_synthetic, tmp_path):
    work = tmp_path / "run"
    proc = run_tool(
        "train_det.py", CONFIG, "--no-progress", "--set", *det_overrides(tiny_synthetic, work)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # without a progress bar, one log line per log_interval (1 here)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("iter ")]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert "loss " in lines[-1] and "bbox_regression " in lines[-1] and "s/it" in lines[-1]
    for name in ("last.pt", "best.pt", "results.csv", "results.png", "metrics.json", "config.py"):
        assert (work / name).is_file(), name
    rows = (work / "results.csv").read_text().splitlines()
    assert rows[0].startswith("iter,epoch,lr,") and "val/AP50" in rows[0] and len(rows) == 2
    proc = run_tool(
        "eval_det.py",
        CONFIG,
        "--weights",
        str(work / "best.pt"),
        "--out",
        str(tmp_path / "ev"),
        "--set",
        *det_overrides(tiny_synthetic, work),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class_ap"} <= metrics.keys()
    # the config trains channels_last: the tool takes the same path as the evaluation inside
    # training, so best.pt (saved by that evaluation) gives the same numbers to the last digit
    in_training = json.loads((work / "metrics.json").read_text())
    assert in_training.pop("iter") == 4 and in_training == metrics
    assert metrics["images_evaluated"] == 2 and metrics["images_skipped"] == 0
    # the checkpoint describes itself: no config needed, same numbers
    proc = run_tool(
        "eval_det.py", "--weights", str(work / "best.pt"), "--out", str(tmp_path / "alone")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "alone" / "metrics.json").read_text()) == metrics
    detections = json.loads((tmp_path / "ev" / "detections.json").read_text())
    assert all(
        len(d["bbox"]) == 4 and d["category_id"] in {24, 25, 26, 27, 28, 31, 32, 33}
        for d in detections
    )
    # boxes are in original (64x128) image pixels, not the 320x320 network input
    assert all(
        d["bbox"][0] + d["bbox"][2] <= 128.5 and d["bbox"][1] + d["bbox"][3] <= 64.5
        for d in detections
    )
    # a (height, width) input: the detections still come back in original pixels
    proc = run_tool(
        "eval_det.py",
        CONFIG,
        "--weights",
        str(work / "best.pt"),
        "--out",
        str(tmp_path / "ev2"),
        "--set",
        *det_overrides(tiny_synthetic, work, data__image_size="[96,192]"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    detections = json.loads((tmp_path / "ev2" / "detections.json").read_text())
    assert detections
    assert all(
        d["bbox"][0] + d["bbox"][2] <= 128.5 and d["bbox"][1] + d["bbox"][3] <= 64.5
        for d in detections
    )


@pytest.fixture
def synthetic_copy(tiny_synthetic, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_synthetic, root)
    return root


def edit_annotations(root: Path, split: str, edit) -> None:
    path = root / "annotations" / f"instances_{split}.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_missing_image_names_file(run_tool, synthetic_copy, tmp_path):
    image = json.loads((synthetic_copy / "annotations/instances_val.json").read_text())["images"][0]
    (synthetic_copy / image["file_name"]).unlink()
    weights = save_small_detector(tmp_path / "w.pt")
    proc = run_tool(
        "eval_det.py",
        CONFIG,
        "--weights",
        str(weights),
        "--set",
        *det_overrides(synthetic_copy, tmp_path / "run"),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and Path(image["file_name"]).name in errors[0]
    assert "Traceback" not in proc.stderr


def test_degenerate_boxes_dropped_and_counted(run_tool, synthetic_copy, tmp_path):
    def degenerate(data):
        data["annotations"][0]["bbox"][2] = 0  # zero width
        data["annotations"][1]["bbox"][3] = -4  # negative height
        data["annotations"][2]["bbox"] = [5000, 5000, 10, 10]  # outside the image

    edit_annotations(synthetic_copy, "train", degenerate)
    ann = json.loads((synthetic_copy / "annotations/instances_train.json").read_text())[
        "annotations"
    ]
    ds = CocoDetection(synthetic_copy, synthetic_copy / "annotations/instances_train.json")
    assert [ann_id for ann_id, _, _ in ds.dropped_boxes] == [a["id"] for a in ann[:3]]
    work = tmp_path / "run"
    proc = run_tool(
        "train_det.py",
        CONFIG,
        "--no-progress",
        "--set",
        *det_overrides(synthetic_copy, work, schedule__iters=1, train__eval_interval=100),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(line for line in proc.stderr.splitlines() if "dropped 3 boxes" in line)
    assert f"annotation {ann[0]['id']} (" in line and str(work / "dropped_boxes.txt") in line
    listed = (work / "dropped_boxes.txt").read_text().splitlines()
    assert [int(row.split("\t")[0]) for row in listed] == [a["id"] for a in ann[:3]]


def test_wrong_category_mapping_is_a_config_error(run_tool, tiny_synthetic, tmp_path):
    proc = run_tool(
        "train_det.py",
        CONFIG,
        "--set",
        *det_overrides(tiny_synthetic, tmp_path / "run", data__label_mapping="contigous"),
    )
    assert proc.returncode == 2 and "contigous" in proc.stderr and "Traceback" not in proc.stderr


def test_skip_bad_lists_missing_coco_images(run_tool, synthetic_copy, tmp_path):
    image = json.loads((synthetic_copy / "annotations/instances_train.json").read_text())["images"][
        0
    ]
    (synthetic_copy / image["file_name"]).unlink()
    work = tmp_path / "run"
    proc = run_tool(
        "train_det.py",
        CONFIG,
        "--no-progress",
        "--set",
        *det_overrides(
            synthetic_copy, work, data__skip_bad=True, schedule__iters=1, train__eval_interval=100
        ),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(image["file_name"]).name in (work / "skipped_files.txt").read_text()


def test_det_augmentation_switches(tiny_synthetic):
    from densemnv3.config import load_config
    from densemnv3.data.transforms import RandomIoUCrop, RandomZoomOut
    from densemnv3.tasks.detection import DetectionTask

    def kinds(*overrides):
        cfg = load_config(
            CONFIG, [f"data.root={tiny_synthetic}", "data.synthetic=None", *overrides]
        )
        transform = DetectionTask(cfg).train_dataset().transform
        return {type(t) for t in transform.transforms}

    assert {RandomZoomOut, RandomIoUCrop} <= kinds("data.zoom_out=True", "data.iou_crop=True")
    assert not {RandomZoomOut, RandomIoUCrop} & kinds("data.zoom_out=False", "data.iou_crop=False")
