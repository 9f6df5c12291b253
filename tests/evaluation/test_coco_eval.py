import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
from pycocotools.coco import COCO

from densemnv3.evaluation import STATS_NAMES, CocoEvaluator, DetMetrics, format_ap_table
from densemnv3.evaluation.coco import _merge_by_image

PERSON, CAR = 24, 26  # non-contiguous, as in real COCO files

# (ann id, image id, category, [x, y, w, h], iscrowd); ann ids start at 1 (COCOeval treats 0 as
# "unmatched").
ANNS = [
    (1, 1, PERSON, [10, 10, 20, 40], 0),
    (2, 1, CAR, [50, 50, 30, 20], 0),
    (3, 2, CAR, [5, 5, 40, 30], 0),
    (4, 2, PERSON, [60, 0, 30, 30], 1),  # crowd: detections on it are ignored, never required
    (5, 3, PERSON, [100, 20, 30, 60], 0),
]


@pytest.fixture
def coco_gt() -> COCO:
    coco = COCO()
    coco.dataset = {
        "images": [
            {"id": 1, "width": 100, "height": 100, "file_name": "1.jpg"},
            {"id": 2, "width": 100, "height": 100, "file_name": "2.jpg"},
            {"id": 3, "width": 200, "height": 100, "file_name": "3.jpg"},
        ],
        "categories": [{"id": PERSON, "name": "person"}, {"id": CAR, "name": "car"}],
        "annotations": [
            {
                "id": i,
                "image_id": img,
                "category_id": c,
                "bbox": b,
                "area": b[2] * b[3],
                "iscrowd": cr,
            }
            for i, img, c, b, cr in ANNS
        ],
    }
    coco.createIndex()
    return coco


def _xyxy(b):
    return [b[0], b[1], b[0] + b[2], b[1] + b[3]]


def _add_gt_as_detections(ev: CocoEvaluator, shift_x: dict[int, float] | None = None) -> None:
    """Feed every annotation (crowd included) back with score 1, optionally shifted per ann id."""
    shift_x = shift_x or {}
    for img in (1, 2, 3):
        anns = [a for a in ANNS if a[1] == img]
        boxes = np.array([_xyxy(a[3]) for a in anns], dtype=np.float64)
        boxes[:, [0, 2]] += np.array([shift_x.get(a[0], 0.0) for a in anns])[:, None]
        ev.add(img, boxes, np.ones(len(anns)), [a[2] for a in anns])


def test_ground_truth_as_detections_gives_perfect_ap(coco_gt):
    ev = CocoEvaluator(coco_gt)
    _add_gt_as_detections(ev)
    m = ev.evaluate()
    assert m.AP == 1.0 and m.AP50 == 1.0 and m.AP75 == 1.0
    assert m.APs == pytest.approx(1.0) and m.APm == pytest.approx(
        1.0
    )  # areas 800, 600 (small) and 1200, 1800 (medium)
    assert m.APl == -1.0  # no large objects: pycocotools' "undefined"
    assert m.per_class_ap == {"person": 1.0, "car": 1.0}
    assert m.per_class_ap50 == {"person": 1.0, "car": 1.0}
    assert len(m.stats) == len(STATS_NAMES) == 12
    assert "Average Precision" in m.summary_text
    assert "Running per image" not in m.summary_text


def test_torch_inputs(coco_gt):
    ev = CocoEvaluator(coco_gt)
    for img in (1, 2, 3):
        anns = [a for a in ANNS if a[1] == img and not a[4]]
        ev.add(
            torch.tensor(img),
            torch.tensor([_xyxy(a[3]) for a in anns], dtype=torch.float32),
            torch.ones(len(anns)),
            torch.tensor([a[2] for a in anns]),
        )
    assert ev.evaluate().AP == 1.0


def test_shifted_box_lowers_ap(coco_gt):
    # Shift the image-3 person right by 15 px: IoU = 900 / 2700 = 1/3, a false positive at every
    # threshold. Person then has 2 GT, ranked dets [TP, FP]: precision 1 up to recall 0.5, so
    # AP = 51/101 (recall thresholds 0.00..0.50); car stays 1.
    ev = CocoEvaluator(coco_gt)
    _add_gt_as_detections(ev, shift_x={5: 15.0})
    m = ev.evaluate()
    assert m.per_class_ap["person"] == pytest.approx(51 / 101, abs=1e-9)
    assert m.per_class_ap["car"] == 1.0
    assert m.AP == pytest.approx((51 / 101 + 1) / 2, abs=1e-9)
    assert m.AP50 == pytest.approx((51 / 101 + 1) / 2, abs=1e-9)
    # the bad image left out of the evaluation -> perfect again
    assert ev.evaluate(img_ids=[1, 2]).AP == 1.0


def test_no_detections_gives_zero_ap(coco_gt):
    ev = CocoEvaluator(coco_gt)
    for img in (1, 2, 3):
        ev.add(img, np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
    assert ev.results == []
    m = ev.evaluate()
    assert m.AP == 0.0 and m.AP50 == 0.0
    assert m.per_class_ap == {"person": 0.0, "car": 0.0}
    # never calling add evaluates every ground-truth image
    assert CocoEvaluator(coco_gt).evaluate().AP == 0.0


def test_results_and_write_results(coco_gt, tmp_path):
    ev = CocoEvaluator(coco_gt)
    ev.add(1, [[10.0, 10.0, 30.0, 50.0]], [0.123456789], [PERSON])
    ev.add(3, np.array([[100.004, 20.0, 130.0, 80.0]]), np.array([0.5]), np.array([PERSON]))
    path = ev.write_results(tmp_path / "out" / "detections.json")
    data = json.loads(path.read_text())
    names = [coco_gt.imgs[i]["file_name"] for i in (1, 3)]
    assert data == [  # with each image's file name: the ids of a YOLO or VOC set are made here
        {"image_id": 1, "category_id": PERSON, "bbox": [10.0, 10.0, 20.0, 40.0], "score": 0.12346}
        | {"file_name": names[0]},
        {"image_id": 3, "category_id": PERSON, "bbox": [100.0, 20.0, 30.0, 60.0], "score": 0.5}
        | {"file_name": names[1]},
    ]
    assert all(type(v) is float for v in data[0]["bbox"])
    assert coco_gt.loadRes(str(path)).getAnnIds() == [1, 2]  # pycocotools reads it back
    assert ev.img_ids == [1, 3]


def test_add_validates_inputs(coco_gt):
    ev = CocoEvaluator(coco_gt)
    with pytest.raises(ValueError, match="image id"):
        ev.add(99, np.zeros((0, 4)), [], [])
    with pytest.raises(ValueError, match="category ids"):
        ev.add(1, [[0, 0, 1, 1]], [1.0], [1])
    with pytest.raises(ValueError, match="boxes"):
        ev.add(1, [[0, 0, 1, 1]], [1.0, 0.5], [PERSON])
    with pytest.raises(ValueError, match="iou_type"):
        CocoEvaluator(coco_gt, iou_type="segm")


def test_to_dict_and_table(coco_gt):
    ev = CocoEvaluator(coco_gt)
    _add_gt_as_detections(ev, shift_x={5: 15.0})
    m = ev.evaluate()
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert set(d) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class_ap", "stats"}
    assert d["stats"] == pytest.approx(m.stats)
    table = format_ap_table(m)
    assert "(fraction 0-1)" in table.splitlines()[0]  # the same unit as pycocotools' summary
    assert "0.5050" in next(line for line in table.splitlines() if line.startswith("person"))
    assert "—" in next(line for line in table.splitlines() if line.startswith("APl"))
    assert DetMetrics(stats=[0.0] * 12, per_class_ap={}).AP == 0.0


def test_merge_by_image_keeps_first_copy():
    a = {"image_id": 1, "score": 0.9}
    b = {"image_id": 2, "score": 0.8}
    dup = {"image_id": 1, "score": 0.1}
    merged = _merge_by_image([[(1, [a]), (2, [b])], [(1, [dup]), (3, [])]])
    assert list(merged) == [1, 2, 3]
    assert merged[1] == [a]


def test_gather_in_single_process_group(coco_gt, tmp_path):
    ev = CocoEvaluator(coco_gt)
    _add_gt_as_detections(ev)
    before = ev.results
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ev.gather()
    finally:
        dist.destroy_process_group()
    assert ev.results == before
    assert not math.isnan(ev.evaluate().AP)
