"""The multi-task model: one backbone pass, both heads' outputs and losses, and single-task
checkpoints (ours and torchvision's) loading into their parts with the single-task outputs."""

import pytest
import torch

from densemnv3.config import ModelConfig
from densemnv3.errors import CheckpointError
from densemnv3.models import (
    LRASPP,
    LRASPPSSDLite,
    build_model,
    inspect_checkpoint,
    load_weights,
    lraspp_mobilenet_v3_small,
    multitask_mobilenet_v3_small,
    ssdlite320_mobilenet_v3_small,
)

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _count_backbone_calls(model: LRASPPSSDLite) -> list:
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_eval_returns_logits_and_detections_from_one_backbone_pass(rand_init):
    model = rand_init(multitask_mobilenet_v3_small(num_classes=19, det_num_classes=9)).eval()
    calls = _count_backbone_calls(model)
    with torch.no_grad():
        logits, detections = model(X)
    assert len(calls) == 1
    assert logits.shape == (2, 19, 64, 128) and torch.isfinite(logits).all()
    assert len(detections) == 2 and all(d["boxes"].shape[1] == 4 for d in detections)
    assert all(((d["labels"] >= 1) & (d["labels"] < 9)).all() for d in detections)
    info = model.backbone.feature_info  # the default: undilated, C5 at stride 32 for both heads
    assert [info[t].stride for t in (model.low_tap, "C4_expand", "C5")] == [8, 16, 32]


def test_training_returns_the_three_losses_from_one_backbone_pass():
    torch.manual_seed(0)
    model = multitask_mobilenet_v3_small(num_classes=19, det_num_classes=9).train()
    calls = _count_backbone_calls(model)
    targets = [
        {
            "mask": torch.randint(0, 19, (64, 128)),
            "boxes": torch.tensor([[10.0, 5.0, 40.0, 50.0]]),
            "labels": torch.tensor([3]),
        }
        for _ in range(2)
    ]
    targets[1]["mask"][:10] = 255  # ignored pixels
    losses = model(X, targets)
    assert len(calls) == 1 and set(losses) == {"ce", "bbox_regression", "classification"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.seg.low_classifier.weight.grad.abs().sum() > 0
    assert model.det.head.classification[0][1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="'mask' of the input size"):
        model(X, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])


def _save(path, model):
    torch.save({"model": model.state_dict()}, path)
    return path


def test_segmentation_checkpoint_gives_the_lraspp_logits(tmp_path, rand_init):
    """A single-task LR-ASPP (dilated) in a multi-task model with the same backbone option."""
    seg = rand_init(lraspp_mobilenet_v3_small(num_classes=19), seed=1).eval()
    model = build_model(
        ModelConfig(
            name="multitask_mobilenet_v3_small",
            num_classes=19,
            weights=str(_save(tmp_path / "seg.pt", seg)),
            options={"output_stride": 16, "reduced_tail": False},
        )
    )
    view = model.single_task_view("segmentation")
    assert isinstance(view, LRASPP) and view.backbone is model.backbone and view.head is model.seg
    with torch.no_grad():
        assert torch.equal(model.eval()(X).logits, seg(X))


def test_detection_checkpoint_gives_the_detectors_detections(tmp_path, rand_init):
    det = rand_init(ssdlite320_mobilenet_v3_small(num_classes=9, reduced_tail=True), seed=2).eval()
    det.cpu_channels_last = False  # the same memory format on both sides: equal to the bit
    model = build_model(
        ModelConfig(
            name="multitask_mobilenet_v3_small",
            num_classes=19,
            weights=str(_save(tmp_path / "det.pt", det)),
            options={"reduced_tail": True},
        )
    ).eval()
    assert model.single_task_view("detection") is model.det
    with torch.no_grad():
        expected, raw = det(X), det.predict_raw(X)
        _, detections = model(X)
        got = model.network(X)[1:]
    for g, e in zip(got, raw):
        assert torch.equal(g, e)
    for g, e in zip(detections, expected, strict=True):
        assert torch.equal(g["boxes"], e["boxes"]) and torch.equal(g["scores"], e["scores"])
        assert torch.equal(g["labels"], e["labels"])


def test_model_weights_may_name_one_checkpoint_per_part(tmp_path, rand_init):
    seg = rand_init(lraspp_mobilenet_v3_small(num_classes=19, reduced_tail=True), seed=1)
    det = rand_init(ssdlite320_mobilenet_v3_small(num_classes=9, reduced_tail=True), seed=2)
    files = (str(_save(tmp_path / "seg.pt", seg)), str(_save(tmp_path / "det.pt", det)))
    model = build_model(
        ModelConfig(
            name="multitask_mobilenet_v3_small",
            num_classes=19,
            weights=files,
            options={"output_stride": 16, "reduced_tail": True},
        )
    )
    state = model.state_dict()
    assert all(torch.equal(state[f"seg.{k}"], v) for k, v in seg.head.state_dict().items())
    assert all(
        torch.equal(state[f"det.{k}"], v) for k, v in det.state_dict().items()
    )  # backbone: the last


def test_torchvision_checkpoints_load_into_their_parts(tmp_path, rand_init):
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    from densemnv3.models import multitask_mobilenet_v3_large

    tv_seg = rand_init(
        lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    ).eval()
    tv_det = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    torch.save(tv_seg.state_dict(), tmp_path / "tv_seg.pth")
    torch.save(tv_det.state_dict(), tmp_path / "tv_det.pth")
    model = multitask_mobilenet_v3_large(
        num_classes=21, output_stride=16, reduced_tail=False
    ).eval()
    load_weights(
        model, tmp_path / "tv_seg.pth", task="multitask", model_name="multitask_mobilenet_v3_large"
    )
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, tv_seg(x)["out"], rtol=0, atol=1e-4)
    model = multitask_mobilenet_v3_large(det_num_classes=91, reduced_tail=True)
    info = load_weights(
        model, tmp_path / "tv_det.pth", task="multitask", model_name="multitask_mobilenet_v3_large"
    )
    assert info.description == "a detection checkpoint (torchvision)"
    assert torch.equal(
        model.det.head.regression[0][1].weight, tv_det.head.regression_head.module_list[0][1].weight
    )


def test_wrong_checkpoints_are_named_errors(tmp_path):
    from densemnv3.models import lraspp_mobilenet_v3_large

    model = multitask_mobilenet_v3_small()
    large_seg = _save(tmp_path / "large_seg.pt", lraspp_mobilenet_v3_large())
    with pytest.raises(
        CheckpointError,
        match=r"large_seg.pt: a segmentation checkpoint of MobileNetV3-Large .*"
        r"multitask model, multitask_mobilenet_v3_small \(loading its "
        r"segmentation part\) on MobileNetV3-Small",
    ):
        load_weights(model, large_seg, task="multitask", model_name="multitask_mobilenet_v3_small")
    other = _save(tmp_path / "det4.pt", ssdlite320_mobilenet_v3_small(num_classes=4))
    with pytest.raises(
        CheckpointError,
        match=r"det4.pt: .* into the detection part of the multi-task model; "
        r"checkpoint does not match SSDLite: .*shape mismatches",
    ):
        load_weights(model, other, task="multitask", model_name="multitask_mobilenet_v3_small")


def test_a_multitask_checkpoint_is_recognised(tmp_path):
    path = tmp_path / "mt.pt"
    torch.save(
        {
            "model": multitask_mobilenet_v3_small().state_dict(),
            "arch": "multitask_mobilenet_v3_small",
        },
        path,
    )
    info = inspect_checkpoint(path)
    assert (info.task, info.backbone) == ("multitask", "MobileNetV3-Small")
    assert (
        info.description
        == "a multitask checkpoint of multitask_mobilenet_v3_small (densemnv3 training)"
    )
    with pytest.raises(
        CheckpointError,
        match=r"but the config builds a segmentation model, .*; use it with "
        r"tools/train.py and tools/eval.py",
    ):
        load_weights(
            lraspp_mobilenet_v3_small(),
            info,
            task="segmentation",
            model_name="lraspp_mobilenet_v3_small",
        )
    load_weights(
        multitask_mobilenet_v3_small(),
        info,
        task="multitask",
        model_name="multitask_mobilenet_v3_small",
    )
