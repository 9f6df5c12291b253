"""Every dataset layout end to end: the same pixels give the same metrics in each layout, a short
training runs from each through evaluation, export and predict, and ``data check`` names each
fault and draws its contact sheet."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densemnv3.cli import data as data_cli
from densemnv3.data.coco import CocoDetection
from densemnv3.data.synthetic import write_format
from densemnv3.data.yolo import YoloDetection
from densemnv3.evaluation.coco import CocoEvaluator

ROOT = Path(__file__).resolve().parents[2]
SEG = str(ROOT / "configs" / "lraspp_synthetic.py")
DET = str(ROOT / "configs" / "ssdlite_synthetic.py")
MULTI = str(ROOT / "configs" / "multitask_synthetic.py")
SEG_LAYOUTS = ("cityscapes", "folder", "voc", "ade20k")


@pytest.fixture(scope="module")
def layouts(tiny_synthetic, tmp_path_factory) -> dict[str, Path]:
    """The tiny synthetic set (Cityscapes + COCO) written in every other layout."""
    out = tmp_path_factory.mktemp("layouts")
    written = {f: write_format(tiny_synthetic, out / f, f) for f in ("folder", "voc", "ade20k")}
    return {
        "cityscapes": tiny_synthetic,
        "yolo": write_format(tiny_synthetic, out / "y", "yolo"),
    } | written


@pytest.fixture(scope="module")
def fitted(tiny_synthetic, tmp_path_factory) -> Path:
    """An LR-ASPP-Small checkpoint fitted to the tiny set's 10 images (40 steps, then its
    BatchNorm statistics measured on them), so that its labels are mostly right: 0.8 of the
    pixels, many classes with an IoU."""
    import dataclasses

    import torch.nn.functional as F

    from densemnv3.config import load_config
    from densemnv3.models import build_model
    from densemnv3.tasks import build_task

    sets = ["model.name=lraspp_mobilenet_v3_small", f"data.root={tiny_synthetic}"]
    cfg = load_config(SEG, [*sets, "data.synthetic=None", "data.cache_images=False"])
    torch.manual_seed(0)
    model, task = build_model(cfg.model), build_task(cfg)
    pairs = [
        d[i]
        for d in map(lambda s: task.dataset(s, train=False), ("train", "val"))
        for i in range(len(d))
    ]
    images, labels = (torch.stack(t) for t in zip(*pairs))
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(40):
        loss = F.cross_entropy(model(images), labels.long(), ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # the average over the pass below
    with torch.no_grad():
        model(images)
    path = tmp_path_factory.mktemp("fitted") / "best.pt"
    state = {"model": model.state_dict(), "arch": cfg.model.name}
    torch.save(state | {"config": dataclasses.asdict(cfg)}, path)
    return path


def _saved_as_labels(folder: Path, fmt: str) -> dict[str, np.ndarray]:
    """``--save-predictions`` PNGs read back as labels: each layout saves its masks' values."""
    from densemnv3.data.labels import ID_TO_TRAIN_ID

    out = {}
    for path in sorted(folder.glob("*.png")):
        values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        name = path.stem.removesuffix("_leftImg8bit")
        out[name] = {
            "cityscapes": lambda v: ID_TO_TRAIN_ID[v],
            "ade20k": lambda v: np.where(v == 0, 255, v - 1),
        }.get(fmt, lambda v: v)(values)
    return out


def test_same_masks_give_the_same_metrics_in_every_layout(run_tool, fitted, layouts, tmp_path):
    metrics, saved = {}, {}
    for fmt in SEG_LAYOUTS:
        proc = run_tool(
            "eval_seg.py",
            "--weights",
            str(fitted),
            "--out",
            str(tmp_path / fmt),
            "--save-predictions",
            str(tmp_path / fmt / "pred"),
            "--set",
            f"data.root={layouts[fmt]}",
            f"data.format={fmt}",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics[fmt] = json.loads((tmp_path / fmt / "metrics.json").read_text())
        saved[fmt] = _saved_as_labels(tmp_path / fmt / "pred", fmt)
    base = metrics["cityscapes"]
    assert 0.2 < base["mIoU"] < 1 and base["images_evaluated"] == 2
    assert sum(1 for v in base["per_class_iou"].values() if v) >= 5
    for fmt in SEG_LAYOUTS[1:]:
        m = metrics[fmt]
        assert m["mIoU"] == pytest.approx(base["mIoU"], abs=1e-6), fmt
        assert m["pixel_accuracy"] == pytest.approx(base["pixel_accuracy"], abs=1e-6), fmt
        assert m["per_class_iou"].keys() == base["per_class_iou"].keys()
        for name, iou in base["per_class_iou"].items():
            assert (m["per_class_iou"][name] is None) == (iou is None), (fmt, name)
            if iou is not None:
                assert m["per_class_iou"][name] == pytest.approx(iou, abs=1e-6), (fmt, name)
        # Cityscapes' category and instance scores belong to its layout only
        assert "mIoU_category" in base and "mIoU_category" not in m
        assert saved[fmt].keys() == saved["cityscapes"].keys() and len(saved[fmt]) == 2
        for name, labels in saved["cityscapes"].items():
            np.testing.assert_array_equal(saved[fmt][name], labels, err_msg=f"{fmt} {name}")


def test_coco_json_and_yolo_txt_give_the_same_12_stats(tiny_synthetic, layouts):
    coco = CocoDetection(
        tiny_synthetic,
        tiny_synthetic / "annotations" / "instances_train.json",
        label_mapping="contiguous",
    )
    yolo = YoloDetection(layouts["yolo"], "train")
    assert coco.class_names == yolo.class_names and len(coco) == len(yolo) == 8
    stem = {  # the Cityscapes stem of each image id: the YOLO files drop "_leftImg8bit"
        d: {Path(d.coco.imgs[i]["file_name"]).stem.removesuffix("_leftImg8bit"): i for i in d.ids}
        for d in (coco, yolo)
    }
    assert stem[coco].keys() == stem[yolo].keys()
    rng = np.random.default_rng(0)
    detections = {}  # by stem: the ground truth jittered, some missed, and false positives
    for name, image_id in stem[coco].items():
        target = coco[coco.ids.index(image_id)][1]
        boxes, labels = target["boxes"].numpy(), target["labels"].numpy()
        keep = rng.random(len(boxes)) > 0.2
        found = boxes[keep] + rng.normal(0, 1.5, (int(keep.sum()), 4))
        corner = rng.uniform(0, 90, (2, 2))
        false = np.concatenate([corner, corner + rng.uniform(8, 30, (2, 2))], 1)
        detections[name] = (
            np.concatenate([found, false]),
            rng.random(len(found) + 2),
            np.concatenate([labels[keep], rng.integers(1, 9, 2)]),
        )
    stats = []
    for dataset in (coco, yolo):
        evaluator = CocoEvaluator(dataset.coco)
        for name, (boxes, scores, labels) in detections.items():
            categories = [dataset.label_to_category_id[int(label)] for label in labels]
            evaluator.add(stem[dataset][name], boxes, scores, categories)
        stats.append(evaluator.evaluate(dataset.ids).stats)
    assert len(stats[0]) == 12 and stats[1] == pytest.approx(stats[0], abs=1e-3)
    assert 0.1 < stats[0][0] < 0.95


def _train_eval_export_predict(run_tool, config, tool, overrides, images, tmp_path, *, det):
    work = tmp_path / "run"
    proc = run_tool(tool, config, "--no-progress", "--set", *overrides, f"work_dir={work}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads((work / "metrics.json").read_text())
    proc = run_tool(
        "eval.py", "--weights", str(work / "best.pt"), "--out", str(tmp_path / "ev"), "--set",
        *overrides,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    key = "AP" if det else "mIoU"
    assert evaluated[key] == pytest.approx(trained[key], abs=1e-9)
    proc = run_tool(
        "export.py", "--weights", str(work / "best.pt"), "--format", "onnx", "--out",
        str(tmp_path / "model.onnx"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "model.onnx").stat().st_size > 100_000
    proc = run_tool(
        "predict.py", "--weights", str(work / "best.pt"), "--source", str(images), "--out",
        str(tmp_path / "pred"), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (tmp_path / "pred" / "predictions.csv").read_text().splitlines()
    assert len([r for r in rows if r and not r.startswith(("#", "path"))]) == 2
    return work


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["folder", "voc", "ade20k"])
def test_segmentation_layout_trains_evaluates_exports_and_predicts(
    fmt, run_tool, tiny_overrides, layouts, tmp_path
):
    images = {"folder": "images/val", "voc": "JPEGImages", "ade20k": "images/validation"}[fmt]
    source = tmp_path / "images"
    shutil.copytree(layouts[fmt] / images, source)
    for extra in sorted(source.glob("*.png"))[2:]:  # voc's JPEGImages hold both splits
        extra.unlink()
    overrides = tiny_overrides(
        layouts[fmt], tmp_path / "run", data__format=fmt, train__eval_interval=6
    )
    overrides = [o for o in overrides if not o.startswith("work_dir=")]
    work = _train_eval_export_predict(
        run_tool, SEG, "train_seg.py", overrides, source, tmp_path, det=False
    )
    # the class names read from the data are in the checkpoint's config
    assert "classes=('road', 'sidewalk'" in (work / "config.py").read_text()
    labels = sorted((tmp_path / "pred" / "labels").rglob("*.png"))
    assert len(labels) == 2 and cv2.imread(str(labels[0]), cv2.IMREAD_UNCHANGED).shape == (64, 128)


#: A few steps on the tiny set, one evaluation at the end.
SHORT = [
    "data.synthetic=None",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.workers=0",
    "schedule.iters=3",
    "schedule.warmup_iters=1",
    "train.eval_interval=3",
    "train.checkpoint_interval=3",
    "train.log_interval=1",
]
DET_OVERRIDES = ["model.name=ssdlite320_mobilenet_v3_small", *SHORT]


@pytest.mark.slow
@pytest.mark.parametrize("fmt, classes", [("yolo", "None"), ("voc", 20)])  # None: the data's
def test_detection_layout_trains_evaluates_exports_and_predicts(
    fmt, classes, run_tool, layouts, tmp_path
):
    root = layouts[fmt] if fmt == "yolo" else layouts["voc"]
    overrides = [*DET_OVERRIDES, f"data.root={root}", f"data.format={fmt}"]
    overrides.append(f"model.num_classes={classes}")
    images = root / ("images/val" if fmt == "yolo" else "JPEGImages")
    source = tmp_path / "images"
    source.mkdir()
    for path in sorted(images.glob("*.png"))[:2]:
        shutil.copy(path, source)
    work = _train_eval_export_predict(
        run_tool, DET, "train_det.py", overrides, source, tmp_path, det=True
    )
    config = (work / "config.py").read_text()
    assert f"num_classes={9 if fmt == 'yolo' else 20}," in config
    assert "classes=('person', 'rider', 'car'" in config or "classes=('road'" in config
    detections = json.loads((tmp_path / "ev" / "detections.json").read_text())
    # the dataset's own class ids: YOLO's 0-7, VOC's positions in its class list (1-19)
    ids = {d["category_id"] for d in detections}
    assert ids <= (set(range(8)) if fmt == "yolo" else set(range(1, 20)))


@pytest.mark.slow
def test_multitask_from_voc_masks_and_voc_boxes(run_tool, layouts, tmp_path):
    overrides = [
        *SHORT,
        f"data.root={layouts['voc']}",
        "data.format=voc",
        "data.det_format=voc",
        "model.options={'det_num_classes': 20, 'reduced_tail': True}",
        "data.crop_size=[64,96]",
        f"work_dir={tmp_path / 'run'}",
    ]
    proc = run_tool("train.py", MULTI, "--no-progress", "--set", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["mIoU"] is not None and metrics["AP"] >= 0
    assert len(metrics["per_class_iou"]) == 19
    # the boxes' class names are in the checkpoint, for the Predictor
    assert "det_classes=('road', 'sidewalk'" in (tmp_path / "run" / "config.py").read_text()


def _broken_sets(layouts, tmp_path) -> tuple[Path, Path]:
    """A folder set with colour masks (one holding a colour of no class, one of another size)
    and a YOLO set with a box outside the image."""
    folder = tmp_path / "folder"
    shutil.copytree(layouts["folder"], folder)
    palette = np.array(json.loads((folder / "classes.json").read_text())["palette"], np.uint8)
    masks = sorted((folder / "masks" / "val").glob("*.png"))
    for path in masks:
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        rgb = np.where((labels == 255)[..., None], 0, palette[np.minimum(labels, 18)])
        cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    wrong = cv2.imread(str(masks[0]))
    wrong[:4, :4] = (1, 2, 250)  # BGR: the colour (250, 2, 1) is no class's
    cv2.imwrite(str(masks[0]), wrong)
    small = cv2.imread(str(masks[1]))
    cv2.imwrite(str(masks[1]), small[:32])
    yolo = tmp_path / "yolo"
    shutil.copytree(layouts["yolo"], yolo)
    label = sorted((yolo / "labels" / "val").glob("*.txt"))[0]
    label.write_text(label.read_text() + "2 0.95 0.5 0.2 0.1\n")
    return folder, yolo


def test_data_check_names_each_fault_and_draws_a_contact_sheet(layouts, tmp_path, run_in_process):
    folder, yolo = _broken_sets(layouts, tmp_path)
    code, out, err = run_in_process(
        data_cli.main,
        ["check", SEG, "--out", str(tmp_path / "seg"), "--no-progress",
         "--set", f"data.root={folder}", "data.format=folder", "data.synthetic=None"],
    )  # fmt: skip
    assert code == 1, err
    assert "split 'train': 8 images" in out and "2 problems:" in out
    assert "colour (250, 2, 1) (16 pixels) is not in the palette" in out
    assert "mask is 128x32 (WxH) but its image" in out
    assert not (tmp_path / "seg" / "contact_sheet_val.png").exists()  # no val sample decodes
    sheet = cv2.imread(str(tmp_path / "seg" / "contact_sheet_train.png"))
    # 8 tiles of 64x128 scaled to 320 wide on 4 columns, and a legend of 19 classes on 3 rows
    assert sheet.shape == (2 * (160 + 22) + 3 * 20 + 6, 4 * 320, 3)
    code, out, err = run_in_process(
        data_cli.main,
        ["check", DET, "--out", str(tmp_path / "det"), "--no-progress",
         "--set", f"data.root={yolo}", "data.format=yolo", "data.synthetic=None"],
    )  # fmt: skip
    assert code == 1, err
    assert "line" in out and "outside the image" in out
    assert "split 'train': 8 images" in out and "split 'val': 1 images" in out
    sheet = cv2.imread(str(tmp_path / "det" / "contact_sheet_train.png"))
    # 8 tiles of 64x128 scaled to 320 wide, on a 4-column grid: 2 rows of (160 + caption)
    assert sheet.shape == (2 * (160 + 22), 4 * 320, 3)
    assert (tmp_path / "det" / "data_check_val.txt").read_text().count("outside the image") == 1


def test_data_check_of_a_clean_set_exits_0_with_class_shares(layouts, tmp_path, run_in_process):
    code, out, err = run_in_process(
        data_cli.main,
        ["check", SEG, "--out", str(tmp_path), "--no-progress", "--set",
         f"data.root={layouts['voc']}", "data.format=voc", "data.synthetic=None"],
    )  # fmt: skip
    assert code == 0, err
    assert "no problems found" in out and "split 'train': 8 images" in out
    shares = [
        float(line.split("|")[1].strip(" %"))
        for line in out.splitlines()
        if " | " in line and "%" in line
    ]
    assert sum(shares[: len(shares) // 2]) == pytest.approx(100, abs=0.1)  # train's rows
    sheet = cv2.imread(str(tmp_path / "contact_sheet_val.png"))
    assert sheet.shape[1] == 4 * 320 and sheet.shape[0] > 160 + 22  # tiles and the legend
    assert torch.tensor(sheet).float().std() > 10


def test_multitask_pairs_a_mask_layout_with_a_box_layout_by_file_name(layouts, tmp_path):
    from densemnv3.config import DataConfig
    from densemnv3.data.formats import detection_dataset, segmentation_dataset
    from densemnv3.data.multitask_pairs import PairedMultiTask
    from densemnv3.errors import DataError

    seg = segmentation_dataset(DataConfig(root=str(layouts["voc"]), format="voc"), "train", None)
    yolo = tmp_path / "yolo"
    shutil.copytree(layouts["yolo"], yolo)
    det = detection_dataset(DataConfig(root=str(yolo), format="yolo"), "train", None)
    pairs = PairedMultiTask(seg, det)
    assert len(pairs) == 8 and pairs.class_names == det.class_names
    for index in (0, 7):
        image, target = pairs[index]
        det_index = det.ids.index(target["image_id"])
        assert Path(det.image_path(det.ids[det_index])).stem == pairs.sample_id(index)
        assert torch.equal(target["boxes"], det[det_index][1]["boxes"])
        assert target["mask"].shape == image.shape[:2] == target["orig_size"]
    gone = sorted((yolo / "images" / "train").glob("*.png"))[0]
    gone.unlink()
    det = detection_dataset(DataConfig(root=str(yolo), format="yolo"), "train", None)
    with pytest.raises(DataError, match=f"{gone.stem}.png: no boxes for it in"):
        PairedMultiTask(seg, det)
    assert len(PairedMultiTask(seg, det, skip_bad=True)) == 7
