"""BatchNorm folding and the inference path leave LR-ASPP and SSDLite outputs unchanged."""

import copy

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from densemnv3.inference.optimize import fuse_conv_bn_, prepare_for_inference
from densemnv3.models import lraspp_mobilenet_v3_small, ssdlite320_mobilenet_v3_small

pytestmark = pytest.mark.usefixtures("one_thread")


def count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def assert_close(got: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    scale = expected.abs().max().item()
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= rel * scale, (
        (got - expected).abs().max().item(),
        scale,
    )


def assert_same_detections(got: dict, expected: dict, rel: float) -> None:
    """Same detections up to ``rel`` (of the largest box coordinate), in any order among ties."""
    assert len(got["scores"]) == len(expected["scores"]) > 0
    assert_close(got["scores"].sort().values, expected["scores"].sort().values, rel)
    tol = rel * expected["boxes"].abs().max().item()
    for box, label in zip(got["boxes"], got["labels"]):
        near = ((expected["boxes"] - box).abs().amax(1) <= tol) & (expected["labels"] == label)
        assert near.any(), (box, label)


@pytest.fixture
def lraspp(rand_init):
    return rand_init(lraspp_mobilenet_v3_small(num_classes=5)).eval()


@pytest.fixture
def ssdlite(rand_init):
    # No top-k cut-off: near-tied scores at the 300th place would make the kept set arbitrary.
    model = ssdlite320_mobilenet_v3_small(
        num_classes=4, score_thresh=0.29, topk_candidates=10**4, detections_per_img=10**4
    )
    return rand_init(model, seed=1).eval()


def test_fusing_lraspp_removes_every_batchnorm_and_keeps_the_logits(lraspp):
    x = torch.randn(2, 3, 64, 96)
    before = count(lraspp, nn.BatchNorm2d)
    convs = count(lraspp, nn.Conv2d)
    with torch.no_grad():
        expected = lraspp(x)
        fused = fuse_conv_bn_(copy.deepcopy(lraspp))
        got = fused(x)
    assert before > 30 and count(fused, nn.BatchNorm2d) == 0
    assert count(fused, nn.Identity) >= before and count(fused, nn.Conv2d) == convs
    assert_close(got, expected, 1e-5)


def test_fusing_ssdlite_keeps_logits_and_box_deltas(ssdlite):
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected = ssdlite.predict_raw(x)
        fused = fuse_conv_bn_(copy.deepcopy(ssdlite))
        got = fused.predict_raw(x)
    assert count(ssdlite, nn.BatchNorm2d) > 0 and count(fused, nn.BatchNorm2d) == 0
    for g, e in zip(got, expected):
        assert_close(g, e, 1e-5)


def test_training_mode_pairs_are_left_alone(lraspp):
    before = count(lraspp, nn.BatchNorm2d)
    lraspp.train()
    fuse_conv_bn_(lraspp)
    assert count(lraspp, nn.BatchNorm2d) == before


def test_frozen_batchnorm_is_folded_too(rand_init):
    model = rand_init(lraspp_mobilenet_v3_small(num_classes=3, frozen_bn=True)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        fuse_conv_bn_(model)
        got = model(x)
    assert count(model, FrozenBatchNorm2d) == 0
    assert_close(got, expected, 1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_prepare_for_inference_keeps_lraspp_logits(lraspp, channels_last):
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        expected = lraspp(x)
        model = prepare_for_inference(copy.deepcopy(lraspp).train(), channels_last=channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert count(model, nn.BatchNorm2d) == 0
    assert_close(got, expected, 1e-4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_prepare_for_inference_keeps_ssdlite_detections(ssdlite, channels_last):
    x = torch.randn(2, 3, 160, 160)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.no_grad():
        raw, detections = ssdlite.predict_raw(x), ssdlite(x)
        model = prepare_for_inference(copy.deepcopy(ssdlite), channels_last=channels_last)
        got_raw, got = (
            model.predict_raw(x.contiguous(memory_format=fmt)),
            model(x.contiguous(memory_format=fmt)),
        )
    for g, e in zip(got_raw, raw):
        assert_close(g, e, 1e-4)
    for g, e in zip(got, detections):
        assert_same_detections(g, e, 1e-4)


def test_prepare_for_inference_casts_to_bfloat16(lraspp):
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        expected = lraspp(x)
        got = prepare_for_inference(copy.deepcopy(lraspp), dtype=torch.bfloat16)(x.bfloat16())
    assert got.dtype == torch.bfloat16
    assert_close(got.float(), expected, 0.1)
