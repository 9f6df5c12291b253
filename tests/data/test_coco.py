import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densemnv3.data.coco import CocoDetection, detection_collate
from densemnv3.data.transforms import det_eval_transform
from densemnv3.errors import ConfigError, DataError

H, W = 32, 64
CATEGORIES = [
    {"id": 24, "name": "person"},
    {"id": 26, "name": "car"},
    {"id": 33, "name": "bicycle"},
]


def ann(ann_id, image_id, bbox, category_id=26, iscrowd=0):
    return {
        "id": ann_id,
        "image_id": image_id,
        "bbox": bbox,
        "category_id": category_id,
        "iscrowd": iscrowd,
        "area": bbox[2] * bbox[3],
    }


def make_coco(root: Path, annotations=None, images=(1, 2), write=(1, 2)) -> Path:
    """Images ``img{id}.png`` under root/leftImg8bit/train/x/ and
    root/annotations/instances_train.json."""
    folder = root / "leftImg8bit" / "train" / "x"
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in write:
        cv2.imwrite(str(folder / f"img{image_id}.png"), np.full((H, W, 3), 10 * image_id, np.uint8))
    if annotations is None:
        annotations = [
            ann(1, 1, [4, 2, 10, 6], 26),
            ann(2, 1, [50, 20, 30, 30], 24),  # runs past the right and bottom edges: clipped
            ann(3, 1, [0, 0, 64, 32], 33, iscrowd=1),  # crowd: excluded
            ann(4, 1, [5, 5, 0, 8], 26),  # zero width: dropped and counted
            ann(5, 1, [70, 5, 4, 4], 33),  # entirely right of the image: dropped and counted
        ]
    data = {
        "images": [
            {"id": i, "file_name": f"leftImg8bit/train/x/img{i}.png", "height": H, "width": W}
            for i in images
        ],
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    ann_file = root / "annotations" / "instances_train.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(data))
    return ann_file


def test_targets_exclude_crowd_clip_and_name_dropped(tmp_path):
    ann_file = make_coco(tmp_path)
    dataset = CocoDetection(tmp_path, ann_file)
    image = str(tmp_path / "leftImg8bit/train/x/img1.png")
    assert dataset.dropped_boxes == [(4, image, [5, 5, 0, 8]), (5, image, [70, 5, 4, 4])]
    assert len(dataset) == 2

    image, target = dataset[0]
    assert image.shape == (H, W, 3) and image.dtype == np.uint8 and (image == 10).all()
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    torch.testing.assert_close(target["boxes"], torch.tensor([[4.0, 2, 14, 8], [50, 20, 64, 32]]))
    assert target["labels"].tolist() == [26, 24]
    assert target["image_id"] == 1 and target["orig_size"] == (H, W)


def test_image_without_annotations_is_a_negative(tmp_path):
    dataset = CocoDetection(tmp_path, make_coco(tmp_path))
    _, target = dataset[1]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["image_id"] == 2


def test_category_id_mapping_keeps_ids_with_gaps(tmp_path):
    dataset = CocoDetection(tmp_path, make_coco(tmp_path), label_mapping="category_id")
    assert dataset.num_classes == 34
    assert dataset.class_names[0] == "__background__" and dataset.class_names[1] == "N/A"
    assert dataset.class_names[24] == "person" and dataset.class_names[33] == "bicycle"
    assert dataset.label_to_category_id == {24: 24, 26: 26, 33: 33}


def test_contiguous_mapping_round_trips(tmp_path):
    dataset = CocoDetection(tmp_path, make_coco(tmp_path), label_mapping="contiguous")
    assert dataset.category_id_to_label == {24: 1, 26: 2, 33: 3}
    assert dataset.class_names == ["__background__", "person", "car", "bicycle"]
    _, target = dataset[0]
    assert target["labels"].tolist() == [2, 1]
    categories = [dataset.label_to_category_id[label] for label in target["labels"].tolist()]
    assert categories == [26, 24]
    assert all(
        dataset.category_id_to_label[dataset.label_to_category_id[k]] == k for k in (1, 2, 3)
    )


def test_unknown_label_mapping_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="label_mapping"):
        CocoDetection(tmp_path, make_coco(tmp_path), label_mapping="dense")


def test_transform_and_collate(tmp_path):
    dataset = CocoDetection(tmp_path, make_coco(tmp_path), det_eval_transform(size=16))
    image, target = dataset[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    # x * 16 / 64, y * 16 / 32
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[1.0, 1, 3.5, 4], [12.5, 10, 16, 16]])
    )
    assert target["orig_size"] == (H, W)
    images, targets = detection_collate([dataset[0], dataset[1]])
    assert images.shape == (2, 3, 16, 16)
    assert [t["image_id"] for t in targets] == [1, 2] and targets[1]["boxes"].shape == (0, 4)


def test_missing_image_names_image_and_annotation_file(tmp_path):
    ann_file = make_coco(tmp_path, write=(1,))
    with pytest.raises(DataError) as info:
        CocoDetection(tmp_path, ann_file)
    assert "img2.png" in str(info.value) and str(ann_file) in str(info.value)

    dataset = CocoDetection(tmp_path, ann_file, skip_bad=True)
    assert len(dataset) == 1 and dataset[0][1]["image_id"] == 1
    assert len(dataset.bad_files) == 1 and dataset.bad_files[0][0].endswith("img2.png")


def test_skip_bad_skips_an_undecodable_image(tmp_path):
    ann_file = make_coco(tmp_path)
    bad = tmp_path / "leftImg8bit" / "train" / "x" / "img1.png"
    bad.write_bytes(bad.read_bytes()[:30])
    with pytest.raises(DataError, match="cannot decode image"):
        CocoDetection(tmp_path, ann_file)[0]
    dataset = CocoDetection(tmp_path, ann_file, skip_bad=True)
    with pytest.raises(DataError, match="truncated PNG"):
        dataset[0]  # never another image in its place
    assert dataset.validate(progress=False) == dataset.bad_files
    assert dataset.ids == [2] and dataset[0][1]["image_id"] == 2
    assert dataset.bad_files[0][0] == str(bad)


def test_missing_files_and_empty_split(tmp_path):
    with pytest.raises(DataError, match="annotation file not found.*make_synthetic"):
        CocoDetection(tmp_path, tmp_path / "annotations" / "instances_val.json")
    ann_file = make_coco(tmp_path)
    with pytest.raises(DataError, match="images folder not found"):
        CocoDetection(tmp_path / "nowhere", ann_file)
    empty = make_coco(tmp_path / "empty", annotations=[], images=(), write=())
    with pytest.raises(DataError, match="no images listed"):
        CocoDetection(tmp_path / "empty", empty)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not a COCO instances file"):
        CocoDetection(tmp_path, tmp_path / "bad.json")


def test_image_size_disagreeing_with_annotations(tmp_path):
    ann_file = make_coco(tmp_path)
    cv2.imwrite(
        str(tmp_path / "leftImg8bit" / "train" / "x" / "img1.png"), np.zeros((8, 8, 3), np.uint8)
    )
    with pytest.raises(DataError, match="8x8.*64x32"):
        CocoDetection(tmp_path, ann_file)[0]


def test_category_id_zero_needs_contiguous_mapping(tmp_path):
    ann_file = make_coco(tmp_path, annotations=[ann(1, 1, [4, 2, 10, 6], 0)])
    data = json.loads(ann_file.read_text())
    data["categories"] = [{"id": 0, "name": "thing"}]
    ann_file.write_text(json.dumps(data))
    with pytest.raises(DataError, match="collides with the background"):
        CocoDetection(tmp_path, ann_file)
    dataset = CocoDetection(tmp_path, ann_file, label_mapping="contiguous")
    assert dataset[0][1]["labels"].tolist() == [1] and dataset.label_to_category_id == {1: 0}


def test_cache_serves_decoded_images_after_the_first_read(tiny_synthetic, tmp_path):
    import shutil

    root = shutil.copytree(tiny_synthetic, tmp_path / "s")
    ann = root / "annotations" / "instances_train.json"
    cached, plain = CocoDetection(root, ann, cache=True), CocoDetection(root, ann)
    expected = plain[0][0]
    cached[0][0][:] = 0  # the caller owns what it gets: the cache keeps its own copy
    cached.image_path(cached.ids[0]).unlink()  # from now on only the cache has the image
    for _ in range(2):
        np.testing.assert_array_equal(cached[0][0], expected)
    with pytest.raises(DataError):
        plain[0]


# -------------------------------------------------------- annotation files that parse but are wrong


def edited_coco(root: Path, edit) -> Path:
    """``make_coco(root)`` with its json changed by ``edit(data)``."""
    ann_file = make_coco(root)
    data = json.loads(ann_file.read_text())
    edit(data)
    ann_file.write_text(json.dumps(data))
    return ann_file


def file_error(root: Path, edit, *needles: str) -> str:
    """The one DataError of the dataset over an edited file: it names the file and ``needles``."""
    ann_file = edited_coco(root, edit)
    with pytest.raises(DataError) as info:
        CocoDetection(root, ann_file, skip_bad=True)  # skip_bad is about images, not this file
    message = str(info.value)
    assert message.startswith(f"{ann_file}: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_duplicate_image_id(tmp_path):
    def edit(data):
        data["images"][1]["id"] = 1

    file_error(
        tmp_path,
        edit,
        "image id 1 is listed twice (file_name leftImg8bit/train/x/img1.png "
        "and leftImg8bit/train/x/img2.png)",
        "its own id",
    )


def test_duplicate_annotation_id(tmp_path):
    def edit(data):
        data["annotations"][2]["id"] = 1

    file_error(
        tmp_path,
        edit,
        "annotation id 1 is listed twice (annotations[0] on image id 1 and "
        "annotations[2] on image id 1)",
        "its own id",
    )


def test_duplicate_category_id(tmp_path):
    def edit(data):
        data["categories"][1]["id"] = 24

    file_error(tmp_path, edit, "category id 24 is listed twice (name person and car)")


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(tmp_path, key):
    file_error(tmp_path, lambda data: data.pop(key), f"the '{key}' key is missing")


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("images", "id"),
        ("images", "file_name"),
        ("images", "width"),
        ("images", "height"),
        ("annotations", "id"),
        ("annotations", "image_id"),
        ("annotations", "category_id"),
        ("annotations", "bbox"),
        ("categories", "id"),
    ],
)
def test_missing_entry_field(tmp_path, key, field):
    file_error(tmp_path, lambda data: data[key][1].pop(field), f"{key}[1] has no '{field}'")


def test_annotation_of_an_unlisted_image(tmp_path):
    def edit(data):
        data["annotations"][1]["image_id"] = 42

    file_error(tmp_path, edit, "annotation id 2 refers to image id 42", "'images' does not list")


def test_annotation_of_an_unlisted_category(tmp_path):
    def edit(data):
        data["annotations"][0]["category_id"] = 99

    file_error(
        tmp_path,
        edit,
        "annotation id 1 has category id 99",
        "'categories' does not list",
        "[24, 26, 33]",
    )


@pytest.mark.parametrize("bbox", [[1, 2, 3], "1 2 3 4", [1, 2, "3", 4], None])
def test_malformed_bbox(tmp_path, bbox):
    def edit(data):
        data["annotations"][0]["bbox"] = bbox

    file_error(tmp_path, edit, "annotation id 1 has bbox", "4 numbers")


def test_non_integer_id_and_bad_size(tmp_path):
    def edit(data):
        data["images"][0]["id"] = "1"

    file_error(tmp_path, edit, "image id '1'", "not an integer")

    def size(data):
        data["images"][1]["width"] = 0

    file_error(tmp_path / "size", size, "image id 2 (leftImg8bit/train/x/img2.png) has width 0")

    def name(data):
        data["images"][1]["file_name"] = 7

    file_error(tmp_path / "name", name, "image id 2 has file_name 7")


def test_top_level_not_an_object(tmp_path):
    ann_file = make_coco(tmp_path)
    ann_file.write_text("[]")
    with pytest.raises(DataError, match="not a COCO instances file .*top level is a list"):
        CocoDetection(tmp_path, ann_file)


@pytest.mark.parametrize("annotations", [[], [ann(1, 1, [0, 0, 64, 32], 33, iscrowd=1)]])
def test_no_boxes_at_all(tmp_path, annotations):
    def edit(data):
        data["annotations"] = annotations

    file_error(tmp_path, edit, "no annotations: nothing to train on", "AP is undefined")


def test_every_box_dropped_is_no_usable_box(tmp_path):
    def edit(data):
        data["annotations"] = [ann(4, 1, [5, 5, 0, 8], 26), ann(5, 1, [70, 5, 4, 4], 33)]

    file_error(tmp_path, edit, "no usable boxes", "nothing to train on")


def test_bad_boxes_are_dropped_not_a_file_error(tmp_path):
    """Zero-width and outside-the-image boxes stay per-box problems (dropped_boxes.txt)."""
    dataset = CocoDetection(tmp_path, make_coco(tmp_path))
    assert [a for a, _, _ in dataset.dropped_boxes] == [4, 5]


def test_the_checked_data_is_what_pycocotools_indexes(tmp_path):
    from densemnv3.data.coco import load_coco

    ann_file = make_coco(tmp_path)
    coco = load_coco(ann_file)
    assert coco.dataset == json.loads(ann_file.read_text())
    assert sorted(coco.imgs) == [1, 2] and sorted(coco.anns) == [1, 2, 3, 4, 5]
