"""Segmentation layouts (folder, Pascal VOC, ADE20K) and class lists, on hand-made files."""

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from densemnv3.config import DataConfig, load_config
from densemnv3.data.classes import default_palette, read_classes
from densemnv3.data.formats import segmentation_classes, segmentation_dataset
from densemnv3.data.summary import summarize
from densemnv3.errors import ConfigError, DataError
from densemnv3.models import build_model
from densemnv3.tasks import build_task

H, W = 6, 8


def image(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((H, W, 3), value, np.uint8))


def mask(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array, np.uint8)
    cv2.imwrite(str(path), array if array.ndim == 2 else np.ascontiguousarray(array[..., ::-1]))


def labels(*values):
    """An H x W mask of vertical bands with ``values``."""
    bands = np.array_split(np.arange(W), len(values))
    row = np.concatenate([np.full(len(b), v, np.uint8) for b, v in zip(bands, values)])
    return np.repeat(row[None], H, 0)


def folder_set(root, masks: dict, split="train", classes="a\nb\nc\n"):
    for name, m in masks.items():
        image(root / "images" / split / f"{name}.jpg")
        mask(root / "masks" / split / f"{name}.png", m)
    (root / "classes.txt").write_text(classes)
    return DataConfig(root=str(root), format="folder")


def test_folder_index_masks_paired_by_relative_name(tmp_path):
    data = folder_set(tmp_path, {"x/one": labels(0, 1, 2, 255), "two": labels(2)})
    dataset = segmentation_dataset(data, "train", None)
    assert dataset.classes.names == ("a", "b", "c") and len(dataset) == 2
    assert [dataset.sample_id(i) for i in range(2)] == ["two", "one"]  # sorted by "two" < "x/one"
    _, target = dataset[1]
    assert target.tolist() == labels(0, 1, 2, 255).tolist() and target.dtype == np.uint8


def test_folder_split_list_and_value_outside_the_classes(tmp_path):
    for name, m in {"p": labels(0, 1), "q": labels(1, 7)}.items():
        image(tmp_path / "images" / f"{name}.png")
        mask(tmp_path / "masks" / f"{name}.png", m)
    (tmp_path / "val.txt").write_text("# the val names\nq.png\np\n")
    data = DataConfig(root=str(tmp_path), format="folder", classes=("bg", "thing"))
    dataset = segmentation_dataset(data, "val", None)
    assert len(dataset) == 2 and dataset.classes.source == "data.classes"
    assert dataset[0][1].tolist() == labels(0, 1).tolist()
    with pytest.raises(DataError, match=r"q\.png: mask values \[7\] are neither classes \(0-1"):
        dataset[1]
    assert [reason for _, reason in dataset.validate(progress=False)][0].count("[7]") == 1
    assert len(dataset) == 1


def test_folder_colour_masks_through_the_palette(tmp_path):
    classes = "road 128 64 128\ncar 0 0 142\n"
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, :3] = (128, 64, 128)
    rgb[:, 3:6] = (0, 0, 142)  # the rest black: ignored
    data = folder_set(tmp_path, {"c": rgb}, classes=classes)
    _, target = segmentation_dataset(data, "train", None)[0]
    assert target[0].tolist() == [0, 0, 0, 1, 1, 1, 255, 255]
    rgb[0, 7] = (9, 9, 9)
    mask(tmp_path / "masks" / "train" / "c.png", rgb)
    with pytest.raises(DataError, match=r"colour \(9, 9, 9\) \(1 pixels\) is not in the palette"):
        segmentation_dataset(data, "train", None)[0]
    (tmp_path / "classes.txt").write_text("road\ncar\n")  # no colours for an RGB mask
    with pytest.raises(DataError, match="RGB colour mask, but the class list"):
        segmentation_dataset(data, "train", None)[0]


def test_mask_of_another_size_and_unpaired_files(tmp_path):
    data = folder_set(tmp_path, {"a": labels(0), "b": labels(1)})
    mask(tmp_path / "masks" / "train" / "b.png", np.zeros((H, W + 1), np.uint8))
    image(tmp_path / "images" / "train" / "lonely.png")
    with pytest.raises(DataError, match="lonely.png: image without a mask"):
        segmentation_dataset(data, "train", None)
    skipping = DataConfig(root=data.root, format="folder", skip_bad=True)
    dataset = segmentation_dataset(skipping, "train", None)
    summary = summarize(dataset, "train", progress=False)
    reasons = " ".join(reason for _, reason in summary.problems)
    assert "image without a mask" in reasons and "mask is 9x6 (WxH) but its image" in reasons
    assert summary.images == 2 and summary.good == [0]
    assert summary.pixels.tolist() == [H * W, 0, 0] and summary.sizes == {(W, H): 1}


def test_voc_palette_masks_and_the_aug_folder(tmp_path):
    root = tmp_path / "VOC2012"
    for name in ("2007_000032", "2008_000002"):
        image(root / "JPEGImages" / f"{name}.jpg")
    p = Image.fromarray(labels(0, 15, 255), "P")
    p.putpalette(default_palette(256).tobytes())
    (root / "SegmentationClass").mkdir()
    p.save(root / "SegmentationClass" / "2007_000032.png")
    mask(root / "SegmentationClassAug" / "2008_000002.png", labels(20))  # SBD: plain indices
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("2007_000032\n2008_000002\n")
    dataset = segmentation_dataset(DataConfig(root=str(root), format="voc"), "train_aug", None)
    assert len(dataset.classes) == 21 and dataset.classes.names[15] == "person"
    assert dataset[0][1].tolist() == labels(0, 15, 255).tolist()  # indices, not colours
    assert dataset[1][1].tolist() == labels(20).tolist()
    assert dataset.classes.colours()[15].tolist() == [192, 128, 128]  # VOC's person colour


def test_ade20k_zero_is_ignored_and_k_is_class_k_minus_1(tmp_path):
    image(tmp_path / "images" / "validation" / "ADE_val_00000001.jpg")
    mask(tmp_path / "annotations" / "validation" / "ADE_val_00000001.png", labels(0, 1, 150))
    dataset = segmentation_dataset(DataConfig(root=str(tmp_path), format="ade20k"), "val", None)
    assert len(dataset.classes) == 150 and dataset.classes.names[0] == "wall"
    assert dataset[0][1].tolist() == labels(255, 0, 149).tolist()
    mask(tmp_path / "annotations" / "validation" / "ADE_val_00000001.png", labels(151))
    with pytest.raises(DataError, match=r"mask values \[151\] are above ADE20K's 150 classes"):
        dataset[0]


def test_class_list_sources_and_their_errors(tmp_path):
    (tmp_path / "classes.json").write_text(
        json.dumps({"classes": ["x", "y"], "palette": [[1, 2, 3], [4, 5, 6]]})
    )
    found = read_classes(tmp_path)
    assert found.names == ("x", "y") and found.palette.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert read_classes(tmp_path, classes=["k"]).names == ("k",)  # the config wins
    (tmp_path / "classes.json").unlink()
    with pytest.raises(DataError, match="no class list .*give data.classes"):
        read_classes(tmp_path)
    (tmp_path / "classes.txt").write_text("a\na\n")
    with pytest.raises(DataError, match="class 'a' is listed twice"):
        read_classes(tmp_path)
    (tmp_path / "classes.txt").write_text("a 1 2 3\nb\n")
    with pytest.raises(DataError, match="class 'b' has no colour"):
        read_classes(tmp_path)
    with pytest.raises(DataError, match="ignore value 1 is one of the 2 class labels"):
        read_classes(tmp_path, classes=["a", "b"], ignore_index=1)
    with pytest.raises(DataError, match="two classes share a colour"):
        read_classes(tmp_path, classes=["a", "b"], palette=[[0, 0, 0], [0, 0, 0]])


def test_cityscapes_refuses_other_classes_and_the_model_must_match(tmp_path):
    with pytest.raises(DataError, match="the Cityscapes layout has its own 19 classes"):
        segmentation_classes(DataConfig(classes=("a", "b")))
    folder_set(tmp_path, {"a": labels(0, 2)})
    cfg = load_config("lraspp_synthetic", [f"data.root={tmp_path}", "data.format=folder"])
    task = build_task(cfg)
    with pytest.raises(
        ConfigError, match=r"has 3 classes \(.*classes.txt\); set cfg.model.num_classes = 3"
    ):
        task.dataset("train", train=True)
    cfg.model.num_classes = 3
    assert len(task.dataset("train", train=False)) == 1
    assert cfg.data.classes == ("a", "b", "c")  # recorded for the checkpoint
    assert task.class_names == ("a", "b", "c")


def test_num_classes_none_is_the_datasets(tmp_path):
    folder_set(tmp_path, {"a": labels(0, 2)}, classes="a\nb\nc\nd\n")
    cfg = load_config(
        "lraspp_folder", [f"data.root={tmp_path}", "model.name=lraspp_mobilenet_v3_small"]
    )
    assert cfg.model.num_classes is None
    with pytest.raises(ConfigError, match="model.num_classes is None .* give the number"):
        build_model(cfg.model)  # alone, nothing says how many
    model = build_task(cfg).build_model()
    assert cfg.model.num_classes == 4 and model(torch.zeros(1, 3, 64, 64)).shape[1] == 4
