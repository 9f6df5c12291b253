import json

import numpy as np
import pytest
import torch
import torch.distributed as dist

from densemnv3.evaluation import (
    ConfusionMatrix,
    SegMetrics,
    format_iou_table,
    label_ids_from_train_ids,
)

# 3 classes; the pixel at (0, 3) is ignored. Valid (gt, pred) pairs:
# (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (0,0)
TARGET = torch.tensor([[0, 0, 1, 255], [1, 2, 2, 0]], dtype=torch.uint8)
PRED = torch.tensor([[0, 1, 1, 2], [1, 2, 0, 0]])
EXPECTED_MAT = [
    [2, 1, 0],  # gt 0
    [0, 2, 0],  # gt 1
    [1, 0, 1],  # gt 2
]
# tp = [2, 2, 1], gt = [3, 2, 2], pred = [3, 3, 1], union = [4, 3, 2]
EXPECTED_IOU = [2 / 4, 2 / 3, 1 / 2]
EXPECTED_MIOU = (2 / 4 + 2 / 3 + 1 / 2) / 3  # 5/9
EXPECTED_PIXEL_ACC = 5 / 7
EXPECTED_MEAN_ACC = (2 / 3 + 2 / 2 + 1 / 2) / 3  # 13/18


def _metrics(num_classes: int, pred=PRED, target=TARGET) -> tuple[ConfusionMatrix, SegMetrics]:
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, target)
    return cm, cm.compute()


def test_hand_built_confusion_matrix_and_metrics():
    cm, m = _metrics(3)
    assert cm.mat.dtype == torch.int64
    assert cm.mat.tolist() == EXPECTED_MAT
    assert m.iou == pytest.approx(EXPECTED_IOU, abs=1e-9)
    assert m.miou == pytest.approx(5 / 9, abs=1e-9)
    assert m.miou == pytest.approx(EXPECTED_MIOU, abs=1e-9)
    assert m.pixel_accuracy == pytest.approx(EXPECTED_PIXEL_ACC, abs=1e-9)
    assert m.mean_accuracy == pytest.approx(13 / 18, abs=1e-9)
    assert m.class_accuracy == pytest.approx([2 / 3, 1.0, 1 / 2], abs=1e-9)


def test_class_absent_from_gt_and_prediction_is_none_and_excluded():
    _, m = _metrics(4)
    assert m.iou[3] is None
    assert m.class_accuracy[3] is None
    assert m.iou[:3] == pytest.approx(EXPECTED_IOU, abs=1e-9)
    assert m.miou == pytest.approx(5 / 9, abs=1e-9)
    assert m.mean_accuracy == pytest.approx(13 / 18, abs=1e-9)


def test_class_predicted_but_absent_from_gt_counts_as_zero():
    # gt: 0 0, pred: 0 1 -> iou0 = 1/2, iou1 = 0/1, class 2 absent
    _, m = _metrics(3, pred=torch.tensor([0, 1]), target=torch.tensor([0, 0]))
    assert m.iou == [pytest.approx(0.5, abs=1e-9), 0.0, None]
    assert m.miou == pytest.approx(0.25, abs=1e-9)
    assert m.pixel_accuracy == pytest.approx(0.5, abs=1e-9)
    assert m.mean_accuracy == pytest.approx(0.5, abs=1e-9)  # only class 0 is in GT
    assert m.class_accuracy == [pytest.approx(0.5), None, None]


def test_all_ignore_target_adds_nothing():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 7], [2, -1]]), torch.full((2, 2), 255))
    assert int(cm.mat.sum()) == 0
    m = cm.compute()
    assert m.iou == [None, None, None]
    assert np.isnan(m.miou) and np.isnan(m.pixel_accuracy)
    assert m.to_dict(["a", "b", "c"])["mIoU"] is None


def test_update_accumulates_and_reset_clears():
    cm = ConfusionMatrix(3)
    cm.update(PRED, TARGET)
    cm.update(PRED.reshape(-1), TARGET.reshape(-1))
    assert cm.mat.tolist() == (2 * torch.tensor(EXPECTED_MAT)).tolist()
    assert cm.compute().miou == pytest.approx(5 / 9, abs=1e-9)  # ratios unchanged
    cm.reset()
    assert int(cm.mat.sum()) == 0


def test_custom_ignore_index():
    cm = ConfusionMatrix(3, ignore_index=2)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 2, 1]))
    assert cm.mat.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("bad", [3, -1])
def test_out_of_range_prediction_raises(bad):
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="prediction"):
        cm.update(torch.tensor([0, bad]), torch.tensor([0, 1]))


def test_invalid_inputs_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="target"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="integer"):
        cm.update(torch.zeros(2), torch.tensor([0, 1]))


def test_to_dict_is_json_ready():
    _, m = _metrics(4)
    d = json.loads(json.dumps(m.to_dict(["road", "car", "sky", "bus"]), allow_nan=False))
    assert d["mIoU"] == pytest.approx(5 / 9)
    assert d["pixel_accuracy"] == pytest.approx(5 / 7)
    assert d["mean_accuracy"] == pytest.approx(13 / 18)
    assert d["per_class_iou"] == {"road": 0.5, "car": pytest.approx(2 / 3), "sky": 0.5, "bus": None}
    with pytest.raises(ValueError):
        m.to_dict(["road"])


def test_format_iou_table():
    _, m = _metrics(4)
    table = format_iou_table(m, ["road", "car", "sky", "bus"])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "|", "IoU", "|", "Acc", "(fraction", "0-1)"]
    assert "0.6667" in next(line for line in lines if line.startswith("car "))
    assert "—" in next(line for line in lines if line.startswith("bus "))
    assert "0.5556" in next(line for line in lines if line.startswith("mIoU"))
    assert "0.7143" in next(line for line in lines if line.startswith("pixel accuracy"))
    assert len({line.index("|") for line in lines if "|" in line}) == 1  # aligned


def test_reduce_without_distributed_is_noop():
    cm, _ = _metrics(3)
    cm.reduce_from_all_processes()
    assert cm.mat.tolist() == EXPECTED_MAT


def test_reduce_in_single_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        cm, _ = _metrics(3)
        cm.reduce_from_all_processes()
        assert cm.mat.tolist() == EXPECTED_MAT
    finally:
        dist.destroy_process_group()


def test_label_ids_from_train_ids():
    train_ids = np.array([[0, 13], [255, 18]], dtype=np.uint8)
    out = label_ids_from_train_ids(train_ids)
    assert out.dtype == np.uint8
    assert out.tolist() == [[7, 26], [0, 33]]
    assert label_ids_from_train_ids(np.array([0, 13, 255], dtype=np.int64)).tolist() == [7, 26, 0]
    with pytest.raises(ValueError):
        label_ids_from_train_ids(np.array([-1]))
