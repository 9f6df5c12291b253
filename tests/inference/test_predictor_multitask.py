"""The Predictor with a multi-task model: label map and boxes of a frame from one network pass."""

import numpy as np
import pytest
import torch

from densemnv3.config import Config, ModelConfig
from densemnv3.data.labels import THING_NAMES
from densemnv3.inference import Predictor
from densemnv3.models import multitask_mobilenet_v3_small

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_pass_gives_the_label_map_and_the_boxes(rand_init):
    model = rand_init(
        multitask_mobilenet_v3_small(num_classes=19, det_num_classes=9), seed=3
    ).eval()
    cfg = Config(task="multitask", model=ModelConfig(name="multitask_mobilenet_v3_small"))
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    frame = np.random.default_rng(0).integers(0, 256, (48, 100, 3), dtype=np.uint8)
    predictor = Predictor(model, cfg, device="cpu", score_threshold=0.1)
    out = predictor(frame)
    assert len(calls) == 1 and set(out) == {"segmentation", "detections"}
    assert out["segmentation"].shape == (48, 100) and out["segmentation"].dtype == np.uint8
    det = out["detections"]
    assert len(det["boxes"]) > 0 and (det["scores"] >= 0.1).all()
    assert (det["boxes"][:, 2:] <= [100, 48]).all() and (det["boxes"] >= 0).all()
    assert det["class_names"] == [
        ["__background__", *THING_NAMES][label] for label in det["labels"]
    ]
    # the label map is the LR-ASPP view's (the same modules, already prepared)
    seg_cfg = Config(task="segmentation")
    seg = Predictor(model.single_task_view("segmentation"), seg_cfg, device="cpu")
    assert np.array_equal(seg(frame), out["segmentation"])
    # a lower threshold keeps a superset; batches equal single calls
    more = predictor(frame, score_threshold=0.02)["detections"]
    assert len(more["scores"]) >= len(det["scores"])
    both = predictor([frame, frame[:32]])
    assert np.array_equal(both[0]["segmentation"], out["segmentation"])
    assert torch.equal(
        torch.as_tensor(both[0]["detections"]["boxes"]), torch.as_tensor(det["boxes"])
    )
