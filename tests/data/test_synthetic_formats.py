"""write_format: the synthetic Cityscapes + COCO set converted to folder, VOC, ADE20K and YOLO
layouts, with the same image bytes and the same pixels; make_synthetic(format=...) and the CLI."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from densemnv3.cli.make_synthetic import main as make_synthetic_main
from densemnv3.data.classes import default_palette
from densemnv3.data.labels import CLASS_NAMES, ID_TO_TRAIN_ID, TRAIN_ID_PALETTE
from densemnv3.data.synthetic import FORMATS, make_synthetic, synthetic_exists, write_format
from densemnv3.errors import ConfigError, UserError

ARGS = {"train": 3, "val": 2, "size": (64, 128), "seed": 0}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("cityscapes"), progress=False, **ARGS)


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    return {fmt: write_format(source, root / fmt, fmt) for fmt in FORMATS}


def _records(source: Path) -> list[dict]:
    """One dict per source image: split, stem, image/label paths, COCO entry and annotations."""
    records = []
    for split in ("train", "val"):
        data = json.loads((source / "annotations" / f"instances_{split}.json").read_text())
        names = {cat["id"]: cat["name"] for cat in data["categories"]}
        order = sorted(names)
        for info in data["images"]:
            image = source / info["file_name"]
            stem = image.name.removesuffix("_leftImg8bit.png")
            city = stem.split("_")[0]
            anns = [a for a in data["annotations"] if a["image_id"] == info["id"]]
            records.append(
                {
                    "split": split,
                    "stem": stem,
                    "image": image,
                    "labels": source / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
                    "info": info,
                    "anns": anns,
                    "names": names,
                    "order": order,
                }
            )
    assert len(records) == ARGS["train"] + ARGS["val"]
    assert sum(len(r["anns"]) for r in records) > 5  # boxes to check
    return records


def _train_ids(record: dict) -> np.ndarray:
    return ID_TO_TRAIN_ID[cv2.imread(str(record["labels"]), cv2.IMREAD_UNCHANGED)]


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _stems(records: list[dict], split: str) -> list[str]:
    return sorted(r["stem"] for r in records if r["split"] == split)


def test_cityscapes_and_coco_are_the_source_tree(source, converted):
    assert write_format(source, source, "cityscapes") == source
    assert write_format(source, source, "coco") == source
    for fmt in ("cityscapes", "coco"):
        copy = converted[fmt]
        assert _files(copy) == _files(source)
        assert all((copy / f).read_bytes() == (source / f).read_bytes() for f in _files(source))


def test_folder_layout(source, converted):
    out, records = converted["folder"], _records(source)
    expected = {"classes.json"}
    for r in records:
        image, mask = f"images/{r['split']}/{r['stem']}.png", f"masks/{r['split']}/{r['stem']}.png"
        expected |= {image, mask}
        assert (out / image).read_bytes() == r["image"].read_bytes()
        stored = cv2.imread(str(out / mask), cv2.IMREAD_UNCHANGED)
        assert stored.dtype == np.uint8 and stored.ndim == 2
        np.testing.assert_array_equal(stored, _train_ids(r))
    assert _files(out) == expected
    classes = json.loads((out / "classes.json").read_text())
    assert classes["classes"] == list(CLASS_NAMES) and len(CLASS_NAMES) == 19
    assert classes["palette"] == TRAIN_ID_PALETTE[:19].tolist()
    assert classes["palette"][0] == [128, 64, 128]  # road, RGB


def test_voc_layout(source, converted):
    out, records = converted["voc"], _records(source)
    assert any((_train_ids(r) == 255).any() for r in records)  # the ignore value is exercised
    for r in records:
        assert (out / "JPEGImages" / f"{r['stem']}.png").read_bytes() == r["image"].read_bytes()
        mask = Image.open(out / "SegmentationClass" / f"{r['stem']}.png")
        assert mask.mode == "P"
        np.testing.assert_array_equal(np.array(mask), _train_ids(r))
        palette = np.array(mask.getpalette(), dtype=np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(palette[:256], default_palette(256))
        assert palette[1].tolist() == [128, 0, 0]  # VOC's colour map

        root = ET.parse(out / "Annotations" / f"{r['stem']}.xml").getroot()
        assert root.findtext("filename") == f"{r['stem']}.png" and root.findtext("folder")
        size = [int(root.findtext(f"size/{key}")) for key in ("width", "height", "depth")]
        assert size == [r["info"]["width"], r["info"]["height"], 3]
        objects = root.findall("object")
        assert len(objects) == len(r["anns"])
        for obj, ann in zip(objects, r["anns"]):
            assert obj.findtext("name") == r["names"][ann["category_id"]]
            assert obj.findtext("difficult") == str(ann["iscrowd"]) == "0"
            assert obj.findtext("truncated") == "0"
            x0, y0, x1, y1 = (
                float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")
            )
            assert [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1] == ann["bbox"]
    for split in ("train", "val"):
        for kind in ("Segmentation", "Main"):
            listed = (out / "ImageSets" / kind / f"{split}.txt").read_text().splitlines()
            assert listed == _stems(records, split)
    assert (out / "classes.txt").read_text().splitlines() == list(CLASS_NAMES)
    stems = [r["stem"] for r in records]
    expected = {"classes.txt"}
    expected |= {
        f"ImageSets/{k}/{s}.txt" for k in ("Segmentation", "Main") for s in ("train", "val")
    }
    expected |= {f"{d}/{s}.png" for d in ("JPEGImages", "SegmentationClass") for s in stems}
    assert _files(out) == expected | {f"Annotations/{s}.xml" for s in stems}


def test_ade20k_layout(source, converted):
    out, records = converted["ade20k"], _records(source)
    expected = {"classes.txt"}
    for r in records:
        part = {"train": "training", "val": "validation"}[r["split"]]
        image, mask = f"images/{part}/{r['stem']}.png", f"annotations/{part}/{r['stem']}.png"
        expected |= {image, mask}
        assert (out / image).read_bytes() == r["image"].read_bytes()
        stored = cv2.imread(str(out / mask), cv2.IMREAD_UNCHANGED)
        assert stored.dtype == np.uint8 and stored.ndim == 2
        train = _train_ids(r).astype(np.int64)
        np.testing.assert_array_equal(stored, np.where(train == 255, 0, train + 1))
        assert stored.max() <= 19
    assert _files(out) == expected
    assert (out / "classes.txt").read_text().splitlines() == list(CLASS_NAMES)


def test_yolo_layout(source, converted):
    out, records = converted["yolo"], _records(source)
    order = records[0]["order"]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {
        "path": ".",
        "train": "images/train",
        "val": "images/val",
        "names": {k: records[0]["names"][cat] for k, cat in enumerate(order)},
    }
    assert data["names"][0] == "person" and len(data["names"]) == 8
    expected = {"data.yaml"}
    for r in records:
        image, labels = (
            f"images/{r['split']}/{r['stem']}.png",
            f"labels/{r['split']}/{r['stem']}.txt",
        )
        expected |= {image, labels}
        assert (out / image).read_bytes() == r["image"].read_bytes()
        lines = (out / labels).read_text().splitlines()
        anns = [a for a in r["anns"] if not a["iscrowd"]]
        assert len(lines) == len(anns)
        width, height = r["info"]["width"], r["info"]["height"]
        for line, ann in zip(lines, anns):
            cls, cx, cy, w, h = line.split()
            assert order[int(cls)] == ann["category_id"]
            cx, cy, w, h = (
                float(cx) * width,
                float(cy) * height,
                float(w) * width,
                float(h) * height,
            )
            box = [cx - w / 2, cy - h / 2, w, h]
            np.testing.assert_allclose(box, ann["bbox"], rtol=0, atol=1e-6)
    assert _files(out) == expected


def test_unknown_format_is_a_config_error(source, tmp_path):
    with pytest.raises(ConfigError, match="cityscapes, folder, voc, ade20k, coco, yolo"):
        write_format(source, tmp_path / "x", "kitti")
    with pytest.raises(ConfigError, match="did you mean 'yolo'"):
        make_synthetic(tmp_path / "y", progress=False, format="yoloo", **ARGS)
    assert not (tmp_path / "y").exists()
    with pytest.raises(UserError, match="another folder"):
        write_format(source, source, "voc")


def test_make_synthetic_in_a_format(tmp_path):
    args = {"train": 2, "val": 1, "size": (64, 128), "seed": 3}
    out = make_synthetic(tmp_path / "y", progress=False, format="yolo", **args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y"]  # no temporary folder left
    assert not (out / ".in_progress").exists()
    assert synthetic_exists(out, format="yolo", **args)
    assert not synthetic_exists(out, **args)
    assert not synthetic_exists(out, format="voc", **args)
    assert not synthetic_exists(out, format="yolo", **{**args, "seed": 4})

    # the same files as converting the Cityscapes set these arguments make
    city = make_synthetic(tmp_path / "city", progress=False, **args)
    assert synthetic_exists(city, **args) and synthetic_exists(city, format="coco", **args)
    assert not synthetic_exists(city, format="yolo", **args)
    again = write_format(city, tmp_path / "converted", "yolo")
    assert _files(out) == _files(again) | {".complete"}
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in _files(again))

    # a rebuild in another layout replaces the old one; a foreign file stops it
    make_synthetic(out, progress=False, format="voc", **{**args, "train": 1})
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".complete", "Annotations", "ImageSets", "JPEGImages", "SegmentationClass", "classes.txt"]
    )
    assert synthetic_exists(out, format="voc", **{**args, "train": 1})
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="did not write"):
        make_synthetic(out, progress=False, format="yolo", **args)
    assert (out / "mine.txt").read_text() == "keep me"


def test_cli_writes_a_format(tmp_path, capsys):
    out = tmp_path / "voc"
    argv = ["--out", str(out), "--train", "2", "--val", "1", "--size", "64", "128"]
    assert make_synthetic_main([*argv, "--format", "voc"]) == 0
    printed = capsys.readouterr().out
    assert "train: 2 images" in printed and "val: 1 images" in printed and "voc layout" in printed
    assert len(list((out / "JPEGImages").glob("*.png"))) == 3
    assert len(list((out / "SegmentationClass").glob("*.png"))) == 3
    assert len(list((out / "Annotations").glob("*.xml"))) == 3
    assert len((out / "ImageSets" / "Main" / "train.txt").read_text().splitlines()) == 2
    assert synthetic_exists(out, train=2, val=1, size=(64, 128), format="voc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voc"]
