"""The multi-task data: boxes from Cityscapes instance ids, one pipeline for mask and boxes."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densemnv3.data.multitask import THING_LABEL_IDS, CityscapesMultiTask, instance_boxes
from densemnv3.data.transforms import seg_eval_transform, seg_train_transform
from densemnv3.errors import ConfigError, DataError

CAR, PERSON, BICYCLE = 26, 24, 33


def hand_made_ids() -> np.ndarray:
    """Two cars, a person, a bicycle, a car group region in two pieces, a caravan and stuff."""
    ids = np.full((40, 60), 7, np.uint16)  # road
    ids[:5] = 23  # sky
    ids[10:20, 5:15] = CAR * 1000  # car 0: x 5..14, y 10..19
    ids[12:30, 40:44] = (
        CAR * 1000 + 1
    )  # car 1: x 40..43, y 12..29, its bottom right hidden by the person
    ids[25:35, 42:50] = PERSON * 1000  # person: x 42..49, y 25..34
    ids[30, 20] = BICYCLE * 1000 + 3  # a one-pixel bicycle
    ids[0:3, 50:55] = CAR  # car group: crowd, two pieces
    ids[38:40, 0:2] = CAR
    ids[36:39, 20:30] = 29 * 1000  # caravan: not among the 19 classes, no box
    return ids


def test_boxes_from_instance_ids_equal_the_hand_computed_ones():
    boxes, labels, areas, crowd = instance_boxes(hand_made_ids())
    label = {lid: k + 1 for k, lid in enumerate(THING_LABEL_IDS)}
    # instances first, by id (person 24000, car 26000, car 26001, bicycle 33003), then crowd regions
    assert boxes.tolist() == [
        [42, 25, 50, 35],
        [5, 10, 15, 20],
        [40, 12, 44, 30],
        [20, 30, 21, 31],
        [50, 0, 55, 3],
        [0, 38, 2, 40],
    ]
    assert labels.tolist() == [
        label[PERSON],
        label[CAR],
        label[CAR],
        label[BICYCLE],
        label[CAR],
        label[CAR],
    ]
    assert labels.tolist()[:4] == [1, 3, 3, 8]
    assert areas.tolist() == [80, 100, 13 * 4 + 5 * 2, 1, 15, 4]
    assert crowd.tolist() == [False] * 4 + [True] * 2
    assert boxes.dtype == np.float32 and labels.dtype == np.int64


def test_no_things_gives_empty_arrays():
    boxes, labels, areas, crowd = instance_boxes(np.full((8, 8), 7, np.uint16))
    assert boxes.shape == (0, 4) and labels.shape == areas.shape == crowd.shape == (0,)


def test_synthetic_boxes_equal_its_coco_json(tiny_synthetic):
    """The synthetic set's COCO annotations are made from the same instance ids: same boxes,
    categories and areas, image by image; the instances it folded into bare ids are crowd."""
    for split in ("train", "val"):
        ds = CityscapesMultiTask(tiny_synthetic, split)
        data = json.loads((tiny_synthetic / f"annotations/instances_{split}.json").read_text())
        names = {im["id"]: im["file_name"] for im in data["images"]}
        theirs = sorted(
            (names[a["image_id"]], a["category_id"], tuple(a["bbox"]), a["area"])
            for a in data["annotations"]
        )
        ours_names = {
            im["id"]: Path(im["file_name"]).relative_to(tiny_synthetic).as_posix()
            for im in ds.coco.dataset["images"]
        }
        anns = ds.coco.dataset["annotations"]
        ours = sorted(
            (
                ours_names[a["image_id"]],
                a["category_id"],
                tuple(int(v) for v in a["bbox"]),
                a["area"],
            )
            for a in anns
            if not a["iscrowd"]
        )
        assert ours == theirs and len(ours) > 0
        assert sorted(ds.ids) == sorted(ours_names)


def test_items_hold_mask_and_boxes_without_crowd(tiny_synthetic):
    ds = CityscapesMultiTask(tiny_synthetic, "val", seg_eval_transform(resize=(32, 64)))
    for index in range(len(ds)):
        image, target = ds[index]
        assert image.shape == (3, 32, 64) and target["mask"].shape == (
            64,
            128,
        )  # labels at full size
        gt = [a for a in ds.coco.imgToAnns[target["image_id"]] if not a["iscrowd"]]
        assert (
            len(target["boxes"]) == len(gt) == len(target["labels"])
        )  # original pixels: not resized
        assert target["orig_size"] == (64, 128)


def test_joint_pipeline_moves_boxes_with_the_mask():
    """A car's box and its mask pixels, through scale x2 + crop + flip: the box is still the
    mask's bounding box, to the pixel; random scales keep it within a pixel."""
    image = np.zeros((40, 80, 3), np.uint8)
    mask = np.zeros((40, 80), np.uint8)
    mask[10:22, 30:55] = 13  # car train id
    box = np.array([[30, 10, 55, 22]], np.float32)

    def mask_box(m):
        ys, xs = np.nonzero(m.numpy() == 13)
        return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]

    exact = seg_train_transform(
        (40, 80), scale_range=(2.0, 2.0), hflip=1.0, color_jitter=False, boxes=True
    )
    for seed in range(4):
        exact.set_random_seed(seed)
        out = exact(image=image, mask=mask, bboxes=box, labels=np.array([3]))
        if len(out["bboxes"]):
            np.testing.assert_allclose(
                out["bboxes"][0], mask_box(out["mask"]), atol=1e-4
            )  # float32 round-off
    loose = seg_train_transform((32, 64), scale_range=(0.6, 1.7), color_jitter=False, boxes=True)
    checked = 0
    for seed in range(30):
        loose.set_random_seed(seed)
        out = loose(image=image, mask=mask, bboxes=box, labels=np.array([3]))
        visible = (out["mask"] == 13).sum() > 0
        assert len(out["bboxes"]) == int(visible)
        if visible:
            np.testing.assert_allclose(out["bboxes"][0], mask_box(out["mask"]), atol=1.0)
            checked += 1
    assert checked > 10


def test_missing_instance_file_and_decoded_cache_are_named(tiny_synthetic, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_synthetic, root)
    gone = next(root.glob("gtFine/val/*/*_instanceIds.png"))
    gone.unlink()
    ds = CityscapesMultiTask(root, "val")
    with pytest.raises(DataError, match=f"{gone}: missing; instance ids are read from"):
        for index in range(len(ds)):
            ds[index]
    assert len(CityscapesMultiTask(root, "val", skip_bad=True).validate(progress=False)) == 1
    with pytest.raises(
        ConfigError, match="data.decoded_cache: the multi-task dataset reads the PNGs"
    ):
        CityscapesMultiTask(root, "train", decoded_cache=tmp_path / "cache")


def test_instance_ids_of_another_size_are_named(tiny_synthetic, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_synthetic, root)
    path = next(root.glob("gtFine/val/*/*_instanceIds.png"))
    cv2.imwrite(str(path), np.zeros((10, 10), np.uint16))
    ds = CityscapesMultiTask(root, "val")
    with pytest.raises(DataError, match="instance ids are 10x10 .* regenerate them"):
        [ds[i] for i in range(len(ds))]
    assert torch.is_tensor(CityscapesMultiTask(tiny_synthetic, "val")[0][1]["boxes"])
