import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densemnv3.data.coco import CocoDetection
from densemnv3.data.io import image_size
from densemnv3.data.voc_detection import VOC_DETECTION_CLASSES, VocDetection
from densemnv3.data.yolo import YoloDetection
from densemnv3.errors import DataError
from densemnv3.evaluation.coco import CocoEvaluator

W, H = 60, 40
NAMES = ["cat", "dog", "car"]


def png(path: Path, width: int = W, height: int = H) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 100, np.uint8))
    return path


def make_yolo(root: Path, labels: dict[str, str], yaml_text: str | None = None) -> Path:
    """Images ``root/images/train/{stem}.png`` (W x H), labels ``root/labels/train/{stem}.txt``
    (a label of None: no file) and ``root/data.yaml``."""
    for stem, text in labels.items():
        png(root / "images" / "train" / f"{stem}.png")
        if text is not None:
            label = root / "labels" / "train" / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(text)
    if yaml_text is None:
        yaml_text = f"train: images/train\nval: images/train\nnames: {NAMES}\n"
    (root / "data.yaml").write_text(yaml_text)
    return root


# --- YOLO ------------------------------------------------------------------------------------


def test_yolo_boxes_in_pixels_and_background_image(tmp_path):
    root = make_yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.25\n\n2 0.25 0.75 0.1 0.5\n", "b": None})
    png(root / "images" / "train" / "b.png", 30, 20)  # another size, read from the header
    dataset = YoloDetection(root, "train")

    assert dataset.ids == [1, 2] and dataset.images_root == root
    assert dataset.ann_file == root / "data.yaml"
    assert dataset.coco.imgs[1] == {
        "id": 1,
        "file_name": "images/train/a.png",
        "width": W,
        "height": H,
    }
    assert (dataset.coco.imgs[2]["width"], dataset.coco.imgs[2]["height"]) == (30, 20)
    anns = sorted(dataset.coco.anns.values(), key=lambda a: a["id"])
    assert [a["category_id"] for a in anns] == [0, 2]
    assert anns[0]["bbox"] == pytest.approx([15, 15, 30, 10])
    assert anns[1]["bbox"] == pytest.approx([12, 20, 6, 20])
    assert anns[0]["area"] == pytest.approx(300) and anns[0]["iscrowd"] == 0
    assert dataset.class_names == ["__background__", *NAMES] and dataset.num_classes == 4
    assert dataset.label_to_category_id == {1: 0, 2: 1, 3: 2}

    image, target = dataset[0]
    assert image.shape == (H, W, 3)
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[15.0, 15, 45, 25], [12, 20, 18, 40]])
    )
    assert target["labels"].tolist() == [1, 3]
    _, target = dataset[1]  # background: kept, no boxes
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert dataset.bad_files == []


def test_yolo_names_dict_yaml_file_path_and_txt_list(tmp_path):
    data = tmp_path / "ds"
    make_yolo(data, {"a": "1 0.5 0.5 0.5 0.5\n", "b": "0 0.5 0.5 0.2 0.2\n", "c": None})
    (data / "val.txt").write_text("./images/train/b.png\nimages/train/a.png\n\n")
    yaml_file = tmp_path / "conf" / "mine.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text("path: ../ds\ntrain: images/train\nval: val.txt\nnames: {0: x, 1: y}\n")
    dataset = YoloDetection(yaml_file, "val")
    assert [dataset.coco.imgs[i]["file_name"] for i in dataset.ids] == [
        "images/train/a.png",
        "images/train/b.png",
    ]
    assert dataset.class_names == ["__background__", "x", "y"]
    assert sorted(dataset.coco.cats) == [0, 1]
    assert len(YoloDetection(yaml_file, "train")) == 3


def test_yolo_split_as_list_of_folders_and_dataset_yaml(tmp_path):
    make_yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"})
    png(tmp_path / "more" / "images" / "z.png")
    label = tmp_path / "more" / "labels" / "z.txt"
    label.parent.mkdir(parents=True)
    label.write_text("2 0.5 0.5 1 1\n")
    (tmp_path / "data.yaml").unlink()
    (tmp_path / "dataset.yaml").write_text(
        "train: [images/train, more/images]\nnames: [cat, dog, car]\n"
    )
    dataset = YoloDetection(tmp_path, "train", classes=["A", "B", "C"])
    assert [dataset.coco.imgs[i]["file_name"] for i in dataset.ids] == [
        "images/train/a.png",
        "more/images/z.png",
    ]
    assert dataset.class_names == ["__background__", "A", "B", "C"]
    assert dataset[1][1]["labels"].tolist() == [3]
    assert dataset[1][1]["boxes"].tolist() == [[0, 0, W, H]]


@pytest.mark.parametrize(
    "line, words",
    [
        ("7 0.5 0.5 0.2 0.2", "class 7 is not one of the 3 classes"),
        ("0 1.2 0.5 0.2 0.2", "is not in [0, 1]"),
        ("0 0.5 0.5 0.2", "is not 5 numbers"),
        ("0 0.5 0.5 0 0.2", "positive size"),
        ("0 0.95 0.5 0.2 0.2", "box outside the image"),
        ("1.5 0.5 0.5 0.2 0.2", "class 1.5"),
    ],
)
def test_yolo_label_faults_name_file_and_line(tmp_path, line, words):
    root = make_yolo(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n", "b": f"1 0.5 0.5 0.1 0.1\n{line}\n"})
    label = root / "labels" / "train" / "b.txt"
    with pytest.raises(DataError) as error:
        YoloDetection(root, "train")
    assert f"{label}, line 2" in str(error.value) and words in str(error.value)
    assert "skip_bad" in str(error.value)

    dataset = YoloDetection(root, "train", skip_bad=True)
    assert dataset.ids == [1] and len(dataset.coco.anns) == 1
    [(image, reason)] = dataset.bad_files
    assert image == str(root / "images" / "train" / "b.png") and words in reason


def test_yolo_layout_errors(tmp_path):
    with pytest.raises(DataError, match="no YOLO dataset YAML"):
        YoloDetection(tmp_path, "train")
    root = make_yolo(tmp_path, {"a": None}, "train: images/train\nval: x\nnames: [a]\n")
    with pytest.raises(DataError, match=r"no 'vall' key \(did you mean 'val'\?\)"):
        YoloDetection(root, "vall")
    (root / "data.yaml").write_text("train: images/train\n")
    with pytest.raises(DataError, match="no 'names' key"):
        YoloDetection(root, "train")
    (root / "empty").mkdir()
    (root / "data.yaml").write_text("train: empty\nval: gone\nnames: {0: a, 2: b}\n")
    with pytest.raises(DataError, match="number the classes 0, 1"):
        YoloDetection(root, "train")
    (root / "data.yaml").write_text("train: empty\nval: gone\nnames: [a]\n")
    with pytest.raises(DataError, match=r"empty: no images in 'train'"):
        YoloDetection(root, "train")
    with pytest.raises(DataError, match=r"gone does not exist"):
        YoloDetection(root, "val")
    with pytest.raises(DataError, match="data.classes gives 2 names but .* has 1 classes"):
        YoloDetection(root, "train", classes=["a", "b"])


def test_yolo_unreadable_image_header(tmp_path):
    root = make_yolo(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n", "b": None})
    bad = root / "images" / "train" / "b.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=f"{bad}: not an image, or its header gives no size"):
        YoloDetection(root, "train")
    dataset = YoloDetection(root, "train", skip_bad=True)
    assert dataset.ids == [1] and dataset.bad_files[0][0] == str(bad)


def test_image_size_reads_headers(tmp_path):
    assert image_size(png(tmp_path / "a.png", 61, 23)) == (61, 23)
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((17, 29, 3), np.uint8))
    assert image_size(tmp_path / "a.jpg") == (29, 17)
    cv2.imwrite(str(tmp_path / "a.bmp"), np.zeros((5, 7, 3), np.uint8))
    assert image_size(tmp_path / "a.bmp") == (7, 5)
    with pytest.raises(DataError, match="cannot read the image"):
        image_size(tmp_path / "missing.png")


# --- Pascal VOC ------------------------------------------------------------------------------


def voc_xml(objects, size=(W, H)) -> str:
    """``objects``: (name, (xmin, ymin, xmax, ymax), difficult or None)."""
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if size else ""
    parts = []
    for name, box, difficult in objects:
        flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
        coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        parts.append(f"<object><name>{name}</name>{flag}<bndbox>{coords}</bndbox></object>")
    return f"<annotation><filename>x</filename>{size_xml}{''.join(parts)}</annotation>"


def make_voc(root: Path, annotations: dict[str, str], split: dict[str, list[str]] = ()) -> Path:
    (root / "Annotations").mkdir(parents=True)
    for stem, xml in annotations.items():
        png(root / "JPEGImages" / f"{stem}.png")
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
    for name, stems in dict(split).items():
        listing = root / "ImageSets" / "Main" / f"{name}.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{s}\n" for s in stems))
    return root


def test_voc_boxes_difficult_and_layout(tmp_path):
    root = make_voc(
        tmp_path,
        {
            "a": voc_xml([("dog", (10, 5, 29, 14), 0), ("person", (1, 1, 60, 40), 1)]),
            "b": voc_xml([("car", (2.5, 3, 12.5, 8), None)]),
        },
    )
    dataset = VocDetection(root, "train")  # no ImageSets: every xml, sorted
    assert dataset.ann_file == root / "Annotations" and dataset.images_root == root
    assert dataset.coco.imgs[1]["file_name"] == "JPEGImages/a.png"
    assert dataset.class_names == ["__background__", *VOC_DETECTION_CLASSES]
    dog, person, car = (dataset.coco.anns[i] for i in (1, 2, 3))
    assert dog["bbox"] == [9, 4, 20, 10] and dog["iscrowd"] == 0 and dog["area"] == 200
    assert dog["category_id"] == VOC_DETECTION_CLASSES.index("dog") + 1 == 12
    assert person["iscrowd"] == 1 and person["bbox"] == [0, 0, 60, 40]
    assert car["bbox"] == pytest.approx([1.5, 2, 11, 6]) and car["iscrowd"] == 0
    _, target = dataset[0]  # the difficult person is not a training target
    assert target["boxes"].tolist() == [[9, 4, 29, 14]] and target["labels"].tolist() == [12]
    assert dataset[1][1]["labels"].tolist() == [7]


def test_voc_split_list_and_classes_file(tmp_path):
    xml = voc_xml([("horse", (1, 1, 10, 10), 0)])
    root = make_voc(tmp_path, {"a": xml, "b": xml, "c": xml}, {"val": ["c", "a"]})
    (root / "classes.txt").write_text("background\nzebra\nhorse\n")
    dataset = VocDetection(root, "val")
    assert dataset.ids == [1, 2]
    assert [dataset.coco.imgs[i]["file_name"] for i in dataset.ids] == [
        "JPEGImages/c.png",
        "JPEGImages/a.png",
    ]
    assert dataset.class_names == ["__background__", "zebra", "horse"]
    assert {a["category_id"] for a in dataset.coco.anns.values()} == {2}
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n")
    with pytest.raises(DataError, match=r"train.txt: no images listed for split 'train'"):
        VocDetection(root, "train")


def test_voc_unknown_class_names_it_and_the_file(tmp_path):
    root = make_voc(
        tmp_path,
        {
            "a": voc_xml([("dog", (1, 1, 5, 5), 0)]),
            "b": voc_xml([("cat", (1, 1, 5, 5), 0), ("dgo", (1, 1, 5, 5), 0)]),
        },
    )
    xml = root / "Annotations" / "b.xml"
    with pytest.raises(DataError) as error:
        VocDetection(root, "train")
    message = str(error.value)
    assert f"{xml}: object 2 ('dgo'): not in the class list" in message
    assert "did you mean 'dog'?" in message
    dataset = VocDetection(root, "train", skip_bad=True)
    assert dataset.ids == [1]
    assert dataset.bad_files[0][0] == str(root / "JPEGImages" / "b.png")


@pytest.mark.parametrize(
    "xml, words",
    [
        (voc_xml([("dog", (1, 1, 5, 5), 0)], size=None), "XML without size"),
        (voc_xml([("dog", (1, 1, 5, 5), 0)], size=(0, 40)), "XML without size"),
        ("<annotation><size>", "malformed XML"),
        (voc_xml([("dog", (1, 1, 5), 0)]), "bndbox lacks a number"),
        (voc_xml([("dog", (1, 1, 5, 5), 2)]), "'difficult' is not 0 or 1"),
    ],
)
def test_voc_xml_faults(tmp_path, xml, words):
    root = make_voc(tmp_path, {"a": voc_xml([("dog", (1, 1, 5, 5), 0)]), "b": xml})
    with pytest.raises(DataError, match=f"{root / 'Annotations' / 'b.xml'}: .*{words}"):
        VocDetection(root, "train")
    assert VocDetection(root, "train", skip_bad=True).ids == [1]


# --- the same boxes as COCO json and as YOLO: the same COCOeval stats --------------------------


def test_yolo_and_coco_json_evaluate_the_same(tmp_path):
    rng = np.random.default_rng(0)
    width, height, n_images = 160, 120, 6
    coco_ids = [3, 5, 9]  # the COCO file's own (sorted) ids for YOLO classes 0, 1, 2
    images, annotations, labels = [], [], {}
    for image_id in range(1, n_images + 1):
        stem = f"img{image_id}"
        png(tmp_path / "images" / "train" / f"{stem}.png", width, height)
        images.append(
            {
                "id": image_id,
                "file_name": f"images/train/{stem}.png",
                "width": width,
                "height": height,
            }
        )
        lines = []
        for _ in range(rng.integers(1, 5)):
            cls = int(rng.integers(0, 3))
            w, h = (int(v) for v in rng.integers(8, 60, 2))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": coco_ids[cls],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            lines.append(
                f"{cls} {(x + w / 2) / width} {(y + h / 2) / height} {w / width} {h / height}"
            )
        labels[stem] = "\n".join(lines) + "\n"
    for stem, text in labels.items():
        (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / "train" / f"{stem}.txt").write_text(text)
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a, b, c]\n")
    ann_file = tmp_path / "instances.json"
    categories = [{"id": cid, "name": n} for cid, n in zip(coco_ids, "abc")]
    ann_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    coco = CocoDetection(tmp_path, ann_file, label_mapping="contiguous")
    yolo = YoloDetection(tmp_path, "train")
    assert coco.ids == yolo.ids and coco.class_names == yolo.class_names

    # detections, as labels: ground truth jittered (some missed), plus false positives
    detections = {}
    for image_id in coco.ids:
        boxes, labels_ = (
            t.numpy() for t in (coco[image_id - 1][1]["boxes"], coco[image_id - 1][1]["labels"])
        )
        keep = rng.random(len(boxes)) > 0.2
        found = boxes[keep] + rng.normal(0, 3, (int(keep.sum()), 4))
        extra = rng.uniform(0, 100, (2, 2))
        false = np.concatenate([extra, extra + rng.uniform(10, 50, (2, 2))], 1)
        detections[image_id] = (
            np.concatenate([found, false]),
            rng.random(len(found) + 2),
            np.concatenate([labels_[keep], rng.integers(1, 4, 2)]),
        )
    stats = []
    for dataset in (coco, yolo):
        evaluator = CocoEvaluator(dataset.coco)
        for image_id, (boxes, scores, labels_) in detections.items():
            cats = [dataset.label_to_category_id[int(label)] for label in labels_]
            evaluator.add(image_id, boxes, scores, cats)
        stats.append(evaluator.evaluate(dataset.ids).stats)
    assert len(stats[0]) == 12 and stats[0] == pytest.approx(stats[1], abs=1e-3)
    assert 0.2 < stats[0][0] < 0.95 and stats[0][3] > 0 and stats[0][4] > 0  # small, medium
