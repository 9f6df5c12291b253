"""Fault injection for COCO annotation files that parse but are wrong.

Duplicate image ids, a missing ``annotations`` key, an annotation of an unlisted image or
category, a split with no boxes: ``eval_det.py`` and ``train_det.py`` stop with exit 2 and one
``error:`` line naming the json file and what is wrong, nothing else on stderr, with or
without ``data.skip_bad`` (which is about image files, not the annotation file). The multi-task
data reads its boxes from the ``_instanceIds`` PNGs, never from the json.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from densemnv3.models import ssdlite320_mobilenet_v3_small

ROOT = Path(__file__).resolve().parents[2]
DET_CONFIG = str(ROOT / "configs" / "ssdlite_synthetic.py")
SIZE = (64, 128)


def det_set(root: Path, work: Path, **extra) -> list[str]:
    values = {
        "model.name": "ssdlite320_mobilenet_v3_small",
        "data.root": root,
        "data.synthetic": None,
        "data.image_size": list(SIZE),
        "data.batch_size": 2,
        "data.eval_batch_size": 2,
        "data.workers": 0,
        "schedule.iters": 1,
        "schedule.warmup_iters": 0,
        "train.eval_interval": 1,
        "work_dir": work,
    } | extra
    return ["--set", *(f"{k}={v}" for k, v in values.items())]


def edit_json(root: Path, split: str, edit) -> Path:
    path = root / "annotations" / f"instances_{split}.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """2 train and 3 val images of 64x128, and a random-weight detector beside them (det.pt)."""
    from densemnv3.data.synthetic import make_synthetic

    root = make_synthetic(
        tmp_path_factory.mktemp("faults_coco") / "data",
        train=2,
        val=3,
        size=SIZE,
        seed=3,
        progress=False,
    )
    torch.manual_seed(0)
    torch.save(
        {"model": ssdlite320_mobilenet_v3_small(num_classes=9).state_dict()}, root.parent / "det.pt"
    )
    return root


# ---------------------------------------------------------------- the faults


def duplicate_image_id(data) -> str:
    first, second = data["images"][:2]
    second["id"] = first["id"]
    return (
        f"image id {first['id']} is listed twice (file_name {first['file_name']} and "
        f"{second['file_name']})"
    )


def missing_annotations_key(data) -> str:
    del data["annotations"]
    return "the 'annotations' key is missing"


def unknown_image(data) -> str:
    ann = data["annotations"][0]
    ann["image_id"] = 999
    return f"annotation id {ann['id']} refers to image id 999, which 'images' does not list"


def unknown_category(data) -> str:
    ann = data["annotations"][0]
    ann["category_id"] = 99
    return f"annotation id {ann['id']} has category id 99, which 'categories' does not list"


def no_boxes(data) -> str:
    data["annotations"] = []
    return "no annotations: nothing to train on"


FAULTS = [duplicate_image_id, missing_annotations_key, unknown_image, unknown_category, no_boxes]


def faulty_copy(base: Path, tmp_path: Path, split: str, fault) -> tuple[Path, Path, str]:
    """A copy of ``base`` with ``fault`` in ``split``'s json: (root, json file, the reason)."""
    root = shutil.copytree(base, tmp_path / "data")
    reason = []
    ann_file = edit_json(root, split, lambda data: reason.append(fault(data)))
    return root, ann_file, reason[0]


@pytest.mark.parametrize("skip_bad", [False, True])
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__)
def test_eval_det_names_the_annotation_file(
    run_tool, assert_one_error_line, base, tmp_path, fault, skip_bad
):
    root, ann_file, reason = faulty_copy(base, tmp_path, "val", fault)
    out = tmp_path / "out"
    proc = run_tool(
        "eval_det.py",
        DET_CONFIG,
        "--weights",
        str(base.parent / "det.pt"),
        "--out",
        str(out),
        *det_set(root, tmp_path / "run", **{"data.skip_bad": skip_bad}),
    )
    assert_one_error_line(proc, str(ann_file), reason)
    assert not (out / "metrics.json").exists()  # never a -1 (or any) metric


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__)
def test_train_det_names_the_annotation_file(
    run_tool, assert_one_error_line, base, tmp_path, fault
):
    root, ann_file, reason = faulty_copy(base, tmp_path, "train", fault)
    work = tmp_path / "run"
    proc = run_tool("train_det.py", DET_CONFIG, *det_set(root, work))
    assert_one_error_line(proc, str(ann_file), reason)
    assert not (work / "last.pt").exists()


@pytest.mark.slow
def test_train_det_checks_the_val_file_before_training(
    run_tool, assert_one_error_line, base, tmp_path
):
    root, ann_file, reason = faulty_copy(base, tmp_path, "val", duplicate_image_id)
    work = tmp_path / "run"
    proc = run_tool("train_det.py", DET_CONFIG, *det_set(root, work))
    assert_one_error_line(proc, str(ann_file), reason)
    assert not (work / "last.pt").exists()


def test_multitask_data_does_not_read_the_json(base, tmp_path):
    """The multi-task dataset builds its ground truth from the instance PNGs; a broken json (the
    detection tools' input) is no concern of it: nothing there to validate."""
    from densemnv3.data.multitask import CityscapesMultiTask

    root, _, _ = faulty_copy(base, tmp_path, "val", duplicate_image_id)
    shutil.rmtree(root / "annotations")
    dataset = CityscapesMultiTask(root, "val")
    assert len(dataset) == 3 and sorted(dataset.coco.imgs) == dataset.ids == [1, 2, 3]
