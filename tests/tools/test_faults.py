"""Fault injection: every tool over corrupted copies of a tiny synthetic set.

Without ``data.skip_bad`` each fault stops the tool with exit 2 and one ``error:`` line that
names the file, nothing else on stderr (no traceback, no libpng message, no progress bar). With
it, the eval tools score exactly the good images: ``metrics.json`` equals the one from the same
set with the bad files deleted, to the last digit, and predictions exist for the good images only.
Wrong checkpoints get one line naming the file and what it is, in every tool.
"""

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densemnv3.config import load_config
from densemnv3.models import build_model

ROOT = Path(__file__).resolve().parents[2]
SEG_CONFIG = str(ROOT / "configs" / "lraspp_synthetic.py")
DET_CONFIG = str(ROOT / "configs" / "ssdlite_synthetic.py")
SIZE = (64, 128)


def seg_set(root: Path, work: Path, **extra) -> list[str]:
    values = {
        "model.name": "lraspp_mobilenet_v3_small",
        "data.root": root,
        "data.synthetic": None,
        "data.crop_size": [64, 96],
        "data.batch_size": 4,
        "data.eval_batch_size": 2,
        "schedule.iters": 1,
        "schedule.warmup_iters": 0,
        "train.eval_interval": 1,
        "work_dir": work,
    } | extra
    return ["--set", *(f"{k}={v}" for k, v in values.items())]


def det_set(root: Path, work: Path, **extra) -> list[str]:
    values = {
        "data.root": root,
        "data.synthetic": None,
        "data.image_size": list(SIZE),
        "data.batch_size": 4,
        "data.eval_batch_size": 2,
        "schedule.iters": 1,
        "schedule.warmup_iters": 0,
        "train.eval_interval": 1,
        "work_dir": work,
    } | extra
    return ["--set", *(f"{k}={v}" for k, v in values.items())]


TQDM_FRAME = re.compile(r"^train: +\d+%\|")


def assert_one_error_line(proc, *needles: str, bar: bool = False) -> None:
    """Exit 2 and exactly one stderr line, ``error: ...`` naming ``needles``; with ``bar``, the
    training progress bar's frames besides it (the error line must still start a line)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [
        line
        for line in proc.stderr.split("\n")
        if line.strip() and not (bar and TQDM_FRAME.match(line) and "error:" not in line)
    ]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ---------------------------------------------------------------- the set and its corruptions


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """4 train and 8 val images of 64x128, and random-weight checkpoints of both tasks."""
    from densemnv3.data.synthetic import make_synthetic

    root = make_synthetic(
        tmp_path_factory.mktemp("faults") / "data",
        train=4,
        val=8,
        size=SIZE,
        seed=3,
        progress=False,
    )
    for name, config, extra in (
        ("seg", SEG_CONFIG, ["model.name=lraspp_mobilenet_v3_small"]),
        ("det", DET_CONFIG, [f"data.image_size={list(SIZE)}"]),
    ):
        torch.manual_seed(0)
        cfg = load_config(config, extra)
        model = build_model(cfg.model)
        state = {"model": model.state_dict(), "arch": cfg.model.name, "config": asdict(cfg)}
        torch.save(state, root.parent / f"{name}.pt")
    _add_boxes_the_detector_finds(root, model)
    return root


def _add_boxes_the_detector_finds(root: Path, model) -> None:
    """Random weights find no synthetic object; give each val image one that its first
    detection finds, so that the AP compared below is not a trivial zero."""
    from densemnv3.tasks import build_task

    cfg = load_config(DET_CONFIG, det_set(root, root.parent / "run")[1:])
    task = build_task(cfg)
    task.evaluate(
        model,
        task.val_dataset(),
        torch.device("cpu"),
        progress=False,
        results_path=root.parent / "found.json",
    )
    found = json.loads((root.parent / "found.json").read_text())

    def add(data):
        for image in data["images"]:
            det = next(d for d in found if d["image_id"] == image["id"])
            data["annotations"].append(
                {
                    "id": 10_000 + image["id"],
                    "image_id": image["id"],
                    "bbox": det["bbox"],
                    "category_id": det["category_id"],
                    "area": det["bbox"][2] * det["bbox"][3],
                    "iscrowd": 0,
                }
            )

    edit_json(root, "val", add)


def copy_of(base: Path, tmp_path: Path, name: str = "data") -> Path:
    root = tmp_path / name
    shutil.copytree(base, root)
    return root


def images(root: Path, split: str) -> list[Path]:
    return sorted((root / "leftImg8bit" / split).rglob("*_leftImg8bit.png"))


def label_of(image: Path) -> Path:
    split, city = image.parts[-3], image.parts[-2]
    stem = image.name.replace("_leftImg8bit.png", "")
    return image.parents[3] / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def make_rgba(path: Path) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2BGRA))


def edit_json(root: Path, split: str, edit) -> None:
    path = root / "annotations" / f"instances_{split}.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def corrupt_seg(root: Path, kind: str, image: Path) -> tuple[str, list[Path]]:
    """Apply ``kind`` to one sample: (the file the error must name, the files of the sample)."""
    label = label_of(image)
    if kind == "truncated_image":
        truncate(image)
        named = image
    elif kind == "empty_image":
        image.write_bytes(b"")
        named = image
    elif kind == "label_other_size":
        cv2.imwrite(str(label), np.full((10, 10), 7, np.uint8))
        named = label
    elif kind == "invalid_label_id":
        ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
        ids[:2, :2] = 200
        cv2.imwrite(str(label), ids)
        named = label
    elif kind == "missing_image":
        image.unlink()
        named = label
    elif kind == "missing_label":
        label.unlink()
        named = image
    return named.name, [image, label]


def corrupt_det(root: Path, kind: str, image: Path, split: str) -> str:
    """Apply ``kind`` to one COCO image: the file name the error must name."""
    if kind == "truncated_image":
        truncate(image)
    elif kind == "empty_image":
        image.write_bytes(b"")
    elif kind == "missing_image":
        image.unlink()
    elif kind == "wrong_size":

        def edit(data):
            entry = next(i for i in data["images"] if image.name in i["file_name"])
            entry["width"] += 8

        edit_json(root, split, edit)
    return image.name


SEG_FAULTS = [
    "truncated_image",
    "label_other_size",
    "invalid_label_id",
    "missing_image",
    "missing_label",
    "empty_image",
]
DET_FAULTS = ["truncated_image", "missing_image", "wrong_size", "empty_image"]


# ---------------------------------------------------------------- without skip_bad: one line


@pytest.mark.parametrize("kind", SEG_FAULTS)
def test_eval_seg_stops_at_a_bad_sample(run_tool, base, tmp_path, kind):
    root = copy_of(base, tmp_path)
    named, _ = corrupt_seg(root, kind, images(root, "val")[3])
    proc = run_tool(
        "eval_seg.py",
        SEG_CONFIG,
        "--weights",
        str(base.parent / "seg.pt"),
        "--out",
        str(tmp_path / "out"),
        *seg_set(root, tmp_path / "run"),
    )
    assert_one_error_line(proc, named)
    assert "libpng" not in proc.stderr


@pytest.mark.parametrize("kind", DET_FAULTS)
def test_eval_det_stops_at_a_bad_image(run_tool, base, tmp_path, kind):
    root = copy_of(base, tmp_path)
    named = corrupt_det(root, kind, images(root, "val")[3], "val")
    proc = run_tool(
        "eval_det.py",
        DET_CONFIG,
        "--weights",
        str(base.parent / "det.pt"),
        "--out",
        str(tmp_path / "out"),
        *det_set(root, tmp_path / "run"),
    )
    assert_one_error_line(proc, named)


@pytest.mark.slow
@pytest.mark.parametrize("kind", SEG_FAULTS)
def test_train_seg_stops_at_a_bad_sample(run_tool, base, tmp_path, kind):
    root = copy_of(base, tmp_path)
    named, _ = corrupt_seg(root, kind, images(root, "train")[1])
    proc = run_tool("train_seg.py", SEG_CONFIG, *seg_set(root, tmp_path / "run"))
    assert_one_error_line(proc, named, bar=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", DET_FAULTS)
def test_train_det_stops_at_a_bad_image(run_tool, base, tmp_path, kind):
    root = copy_of(base, tmp_path)
    named = corrupt_det(root, kind, images(root, "train")[1], "train")
    proc = run_tool("train_det.py", DET_CONFIG, *det_set(root, tmp_path / "run"))
    assert_one_error_line(proc, named, bar=True)


# ---------------------------------------------------------------- with skip_bad: left out exactly


@pytest.fixture
def seg_sets(base, tmp_path):
    """A val split with every fault (one sample each) plus an RGBA image, and the same split
    with the faulty samples deleted and the RGBA image as it was."""
    corrupted, reference = (
        copy_of(base, tmp_path, "corrupted"),
        copy_of(base, tmp_path, "reference"),
    )
    bad = []
    for i, kind in enumerate(SEG_FAULTS):
        named, files = corrupt_seg(corrupted, kind, images(corrupted, "val")[i])
        bad.append(named)
        for path in files:
            (reference / path.relative_to(corrupted)).unlink()
    make_rgba(images(corrupted, "val")[-1])
    return corrupted, reference, bad


def eval_corrupted_and_reference(
    run_tool, base, tmp_path, task, corrupted, reference, *, evaluated, skipped, extra=()
):
    """An eval tool on ``corrupted`` with skip_bad and on ``reference`` without: both succeed
    and ``metrics.json`` agrees to the last digit but for ``images_skipped``. -> (proc, out,
    reference out) of the corrupted run."""
    config, overrides = (SEG_CONFIG, seg_set) if task == "seg" else (DET_CONFIG, det_set)
    runs = []
    for name, root, skip in (("corrupted", corrupted, True), ("reference", reference, False)):
        out = tmp_path / f"out_{name}"
        proc = run_tool(
            f"eval_{task}.py",
            config,
            "--weights",
            str(base.parent / f"{task}.pt"),
            "--out",
            str(out),
            *(arg.replace("OUT", str(out)) for arg in extra),
            *overrides(root, tmp_path / "run", **{"data.skip_bad": skip}),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append((proc, out, json.loads((out / "metrics.json").read_text())))
    (proc, out, metrics), (_, ref_out, ref_metrics) = runs
    assert metrics["images_evaluated"] == ref_metrics["images_evaluated"] == evaluated
    assert metrics["images_skipped"] == skipped and ref_metrics["images_skipped"] == 0
    assert metrics.pop("images_skipped") and ref_metrics.pop("images_skipped") == 0
    for m in (metrics, ref_metrics):
        m.pop("ms_per_image", None)  # a timing
    assert metrics == ref_metrics
    assert f"evaluated {evaluated} images, skipped {skipped}" in proc.stdout
    assert not (ref_out / "skipped_files.txt").exists()
    return proc, out, ref_out


def test_eval_seg_skip_bad_scores_exactly_the_good_images(run_tool, base, tmp_path, seg_sets):
    corrupted, reference, bad = seg_sets
    _, out, ref_out = eval_corrupted_and_reference(
        run_tool,
        base,
        tmp_path,
        "seg",
        corrupted,
        reference,
        evaluated=2,
        skipped=6,
        extra=["--save-predictions", "OUT/preds"],
    )
    preds = sorted((out / "preds").iterdir())
    assert [p.name for p in preds] == sorted(p.name for p in (ref_out / "preds").iterdir())
    assert len(preds) == 2  # predictions for the good images only
    for p in preds:
        assert p.read_bytes() == (ref_out / "preds" / p.name).read_bytes()
    listed = (out / "skipped_files.txt").read_text()
    assert len(listed.splitlines()) == 6 and all(name in listed for name in bad)


@pytest.fixture
def det_sets(base, tmp_path):
    """A val split with every fault, an RGBA image and bad boxes, and the same split with the
    faulty images deleted (files and json entries), the RGBA image as it was and the same boxes."""
    corrupted, reference = (
        copy_of(base, tmp_path, "corrupted"),
        copy_of(base, tmp_path, "reference"),
    )
    val = images(corrupted, "val")
    bad = [corrupt_det(corrupted, kind, val[i], "val") for i, kind in enumerate(DET_FAULTS)]
    make_rgba(val[-1])

    def bad_boxes(data):
        data["annotations"][-1]["bbox"][2] = 0  # zero width
        data["annotations"][-2]["bbox"] = [5000, 5000, 10, 10]  # outside the image

    def without_bad(data):
        gone = {i["id"] for i in data["images"] if any(name in i["file_name"] for name in bad)}
        data["images"] = [i for i in data["images"] if i["id"] not in gone]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] not in gone]

    edit_json(corrupted, "val", bad_boxes)
    edit_json(reference, "val", bad_boxes)
    edit_json(reference, "val", without_bad)
    for name in bad:
        next((reference / "leftImg8bit" / "val").rglob(name)).unlink()
    return corrupted, reference, bad


def test_eval_det_skip_bad_scores_exactly_the_good_images(run_tool, base, tmp_path, det_sets):
    corrupted, reference, bad = det_sets
    proc, out, ref_out = eval_corrupted_and_reference(
        run_tool, base, tmp_path, "det", corrupted, reference, evaluated=4, skipped=4
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["AP"] > 0  # random weights, but not a trivially equal zero
    detections = json.loads((out / "detections.json").read_text())
    assert detections == json.loads((ref_out / "detections.json").read_text())
    good = {
        i["id"]
        for i in json.loads((reference / "annotations/instances_val.json").read_text())["images"]
    }
    assert {d["image_id"] for d in detections} == good  # only the good images, each of them
    listed = (out / "skipped_files.txt").read_text()
    assert len(listed.splitlines()) == 4 and all(name in listed for name in bad)
    assert "dropped 2 boxes" in proc.stdout and (out / "dropped_boxes.txt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["seg", "det"])
def test_training_skip_bad_lists_every_bad_file(run_tool, base, tmp_path, task):
    root = copy_of(base, tmp_path)
    if task == "seg":  # two faults in train, three in val
        where = [("train", 0), ("train", 1), ("val", 0), ("val", 1), ("val", 2)]
        bad = [
            corrupt_seg(root, kind, images(root, split)[i])[0]
            for kind, (split, i) in zip(SEG_FAULTS, where)
        ]
        tool, config, overrides = "train_seg.py", SEG_CONFIG, seg_set
    else:  # one in train, two in val
        where = [("train", 0), ("val", 0), ("val", 1)]
        bad = [
            corrupt_det(root, kind, images(root, split)[i], split)
            for kind, (split, i) in zip(DET_FAULTS, where)
        ]
        tool, config, overrides = "train_det.py", DET_CONFIG, det_set
    val_bad = sum(split == "val" for split, _ in where)
    work = tmp_path / "run"
    proc = run_tool(
        tool,
        config,
        "--no-progress",
        *overrides(root, work, **{"data.skip_bad": True, "data.batch_size": 2}),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = (work / "skipped_files.txt").read_text()
    assert len(listed.splitlines()) == len(bad) and all(name in listed for name in bad), listed
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["images_evaluated"] == 8 - val_bad and metrics["images_skipped"] == val_bad


# ---------------------------------------------------------------- wrong checkpoints: one line


def write_checkpoint(kind: str, base: Path, path: Path, task: str) -> str:
    """A wrong checkpoint for a ``task`` config: the words the error must contain."""
    if kind == "other_task":
        shutil.copy(base.parent / ("det.pt" if task == "seg" else "seg.pt"), path)
        return "detection checkpoint" if task == "seg" else "segmentation checkpoint"
    if kind == "other_arch":
        from densemnv3.models import lraspp_mobilenet_v3_large, ssdlite320_mobilenet_v3_large

        model = (
            lraspp_mobilenet_v3_large()
            if task == "seg"
            else ssdlite320_mobilenet_v3_large(num_classes=9)
        )
        torch.save({"model": model.state_dict()}, path)
        return "MobileNetV3-Large"
    if kind == "torchvision_resnet":
        import torchvision

        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
        return "ResNet"
    if kind == "truncated":
        path.write_bytes((base.parent / f"{task}.pt").read_bytes()[:5000])
        return "truncated"
    if kind == "random_bytes":
        import random

        path.write_bytes(random.Random(0).randbytes(4096))
        return "not a checkpoint at all (4096 bytes of unknown binary data)"
    if kind == "python_config":
        shutil.copy(SEG_CONFIG if task == "seg" else DET_CONFIG, path)
        return "a densemnv3 config (Python that sets cfg), not a checkpoint"
    path.write_text("hello, I am not a checkpoint\n")
    return "text file"


CHECKPOINT_FAULTS = [
    "other_task",
    "other_arch",
    "torchvision_resnet",
    "truncated",
    "text",
    "random_bytes",
    "python_config",
]


def checkpoint_command(tool: str, task: str, ckpt: Path, base: Path, tmp_path: Path) -> list[str]:
    config = SEG_CONFIG if task == "seg" else DET_CONFIG
    overrides = (seg_set if task == "seg" else det_set)(base, tmp_path / "run")
    if tool == "eval":
        return [
            f"eval_{task}.py",
            config,
            "--weights",
            str(ckpt),
            "--out",
            str(tmp_path),
            *overrides,
        ]
    if tool == "export":
        return [
            "export.py",
            config,
            "--weights",
            str(ckpt),
            "--format",
            "torchscript",
            "--out",
            str(tmp_path / "m.pt"),
            *overrides,
        ]
    if tool == "demo":
        from densemnv3.data.synthetic import make_synthetic_video

        video = make_synthetic_video(tmp_path / "clip.mp4", frames=2, size=SIZE)
        return [
            "demo_video.py",
            config,
            "--weights",
            str(ckpt),
            "--source",
            str(video),
            "--no-display",
            *overrides,
        ]
    return [f"train_{task}.py", config, "--resume", str(ckpt), *overrides]


@pytest.mark.parametrize("kind", CHECKPOINT_FAULTS)
@pytest.mark.parametrize("task", ["seg", "det"])
def test_eval_names_a_wrong_checkpoint(run_tool, base, tmp_path, task, kind):
    ckpt = tmp_path / "weights.pt"
    words = write_checkpoint(kind, base, ckpt, task)
    proc = run_tool(*checkpoint_command("eval", task, ckpt, base, tmp_path))
    assert_one_error_line(proc, str(ckpt), words)
    assert "weights_only" not in proc.stderr and "invalid literal" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", CHECKPOINT_FAULTS)
@pytest.mark.parametrize("tool", ["export", "demo", "resume"])
def test_other_tools_name_a_wrong_checkpoint(run_tool, base, tmp_path, tool, kind):
    ckpt = tmp_path / "weights.pt"
    words = write_checkpoint(kind, base, ckpt, "seg")
    proc = run_tool(*checkpoint_command(tool, "seg", ckpt, base, tmp_path))
    assert_one_error_line(proc, str(ckpt), words)


@pytest.mark.parametrize("kind", CHECKPOINT_FAULTS)
def test_predictor_names_a_wrong_checkpoint(base, tmp_path, kind):
    from densemnv3.errors import CheckpointError
    from densemnv3.inference import Predictor

    ckpt = tmp_path / "weights.pt"
    words = write_checkpoint(kind, base, ckpt, "det")
    with pytest.raises(CheckpointError) as info:
        Predictor.from_config(DET_CONFIG, ckpt, device="cpu", overrides=det_set(base, tmp_path)[1:])
    message = str(info.value)
    assert message.startswith(str(ckpt)) and words in message and "\n" not in message


def test_resume_from_weights_that_are_not_a_training_checkpoint(run_tool, base, tmp_path):
    ckpt = tmp_path / "weights.pt"
    torch.save({"model": torch.load(base.parent / "seg.pt")["model"]}, ckpt)
    proc = run_tool(
        "train_seg.py", SEG_CONFIG, "--resume", str(ckpt), *seg_set(base, tmp_path / "run")
    )
    assert_one_error_line(proc, str(ckpt), "not a training checkpoint", f"model.weights={ckpt}")
