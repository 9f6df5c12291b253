import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import ssdlite320_mobilenet_v3_large as tv_ssdlite

from densemnv3.errors import CheckpointError, ConfigError
from densemnv3.models import load_state_dict_checked
from densemnv3.models.detection import (
    SSDLite,
    ssdlite,
    ssdlite320_mobilenet_v3_large,
    ssdlite320_mobilenet_v3_small,
)


def randomize_detector_(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-scaled random convs, random BN affine, BN statistics of real activations (one batch of
    noise, then perturbed): input-dependent outputs with peaked scores, activations O(10).

    (Small uniform weights make every score ~1/91 and the detections a matter of tie-breaking;
    random BN statistics let activations grow to ~1e3 through the backbone.)
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                std = math.sqrt(2 / m.weight[0].numel())
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        momenta = [bn.momentum for bn in bns]
        for bn in bns:
            bn.momentum = 1.0
        model.train()
        noise = torch.rand(2, 3, 320, 320, generator=g) * 2 - 1
        if isinstance(model, SSDLite):
            model.predict_raw(noise)
        else:  # torchvision's SSD
            model.head(list(model.backbone(noise).values()))
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
            bn.running_mean.add_(torch.randn(bn.num_features, generator=g) * 0.1)
            bn.running_var.mul_(torch.rand(bn.num_features, generator=g) * 0.5 + 0.75)
    return model.eval()


@pytest.fixture(scope="module")
def pair():
    """torchvision's SSDLite with random weights and ours loaded from its state_dict."""
    torch.manual_seed(0)
    tv = randomize_detector_(tv_ssdlite(weights=None, weights_backbone=None, num_classes=91))
    ours = ssdlite320_mobilenet_v3_large(num_classes=91).eval()
    load_state_dict_checked(ours, tv.state_dict())
    ours.cpu_channels_last = False  # torchvision's kernels (NCHW): parity is exact
    images = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    return tv, ours, images


def test_parameter_count():
    model = ssdlite320_mobilenet_v3_large(num_classes=91)
    assert sum(p.numel() for p in model.parameters()) == 3_440_060


def test_head_outputs_match_torchvision(pair):
    tv, ours, images = pair
    with torch.no_grad():
        image_list, _ = tv.transform(list(images))
        features = list(tv.backbone(image_list.tensors).values())
        expected = tv.head(features)
        tv_anchors = tv.anchor_generator(image_list, features)[0]
        cls_logits, bbox_regression, anchors = ours.predict_raw((images - 0.5) / 0.5)
    assert cls_logits.shape == (2, 3234, 91) and bbox_regression.shape == (2, 3234, 4)
    assert expected["cls_logits"].abs().max() > 1  # not a degenerate, input-independent network
    assert (cls_logits[0] - cls_logits[1]).abs().max() > 1
    assert (cls_logits - expected["cls_logits"]).abs().max() <= 1e-4
    assert (bbox_regression - expected["bbox_regression"]).abs().max() <= 1e-4
    assert torch.equal(anchors, tv_anchors)


def test_cpu_channels_last_fast_path(pair):
    """The default CPU eval path (NHWC activations) differs from torchvision's only by rounding."""
    _, ours, images = pair
    x = (images - 0.5) / 0.5
    with torch.no_grad():
        plain = ours.predict_raw(x)
        ours.cpu_channels_last = True
        try:
            fast = ours.predict_raw(x)
        finally:
            ours.cpu_channels_last = False
    for a, b in zip(fast, plain):
        assert a.is_contiguous()
        assert (a - b).abs().max() <= 1e-5 * b.abs().max().clamp(min=1) * 10


def _sorted(det):
    order = torch.argsort(det["scores"], descending=True, stable=True)
    return {k: v[order] for k, v in det.items()}


def _assert_same_detections(expected, found):
    assert len(found) == len(expected)
    for a, b in zip(expected, found):
        a, b = _sorted(a), _sorted(b)
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        assert b["labels"].dtype == torch.int64
        torch.testing.assert_close(b["scores"], a["scores"], atol=1e-5, rtol=0)
        assert torch.equal(b["labels"], a["labels"])
        assert (b["boxes"] - a["boxes"]).abs().max() <= 1e-2
        assert b["boxes"].min() >= 0 and b["boxes"].max() <= 320


def test_detections_match_torchvision(pair):
    tv, ours, images = pair
    with torch.no_grad():
        expected = tv(list(images))
        found = ours((images - 0.5) / 0.5)
    _assert_same_detections(expected, found)


@pytest.mark.parametrize("nms_impl", ["per_image", "batched"])
@pytest.mark.parametrize("score_thresh,nms_prefix", [(0.3, 512), (0.001, 16), (0.5, 8)])
def test_postprocess_matches_torchvision(pair, score_thresh, nms_prefix, nms_impl):
    """Other thresholds, an NMS prefix far too short (it must grow to stay exact), both paths."""
    tv, ours, images = pair
    with torch.no_grad():
        image_list, _ = tv.transform(list(images))
        features = list(tv.backbone(image_list.tensors).values())
        head = tv.head(features)
        tv_anchors = tv.anchor_generator(image_list, features)
        cls_logits, bbox_regression, anchors = ours.predict_raw((images - 0.5) / 0.5)
    tv.score_thresh = ours.score_thresh = score_thresh
    ours.nms_prefix = nms_prefix
    try:
        expected = tv.postprocess_detections(head, tv_anchors, image_list.image_sizes)
        found = ours.postprocess(
            cls_logits, bbox_regression, anchors, (320, 320), nms_impl=nms_impl
        )
    finally:
        tv.score_thresh, ours.score_thresh, ours.nms_prefix = 0.001, 0.001, 512
    _assert_same_detections(expected, found)


def _targets():
    return [
        {
            "boxes": torch.tensor([[20.0, 30.0, 120.0, 200.0], [150.0, 150.0, 300.0, 260.0]]),
            "labels": torch.tensor([3, 17]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]


def test_losses_match_torchvision(pair):
    tv, ours, images = pair
    targets = _targets()
    tv.train()
    ours.train()
    try:
        expected = tv(list(images), [dict(t) for t in targets])
        losses = ours((images - 0.5) / 0.5, targets)
    finally:
        tv.eval()
        ours.eval()
    assert set(losses) == {"bbox_regression", "classification"}
    for name in losses:
        torch.testing.assert_close(losses[name], expected[name], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def small():
    return ssdlite320_mobilenet_v3_small(num_classes=5, width_mult=0.5)


def test_matching_hand_made(small):
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # a0: IoU 1 with g0
            [0.0, 0.0, 10.0, 20.0],  # a1: IoU 0.5 with g0, 0.45 with g2 (g2's best)
            [5.0, 0.0, 15.0, 10.0],  # a2: IoU 1/3 with g0 -> background
            [100.0, 100.0, 110.0, 110.0],  # a3: nothing
            [20.0, 20.0, 40.0, 40.0],  # a4: IoU 1/7 with g1, but g1's best anchor
        ]
    )
    gt = torch.tensor(
        [
            [[0.0, 0.0, 10.0, 10.0], [30.0, 30.0, 50.0, 50.0], [0.0, 10.0, 10.0, 22.0]],
            [[30.0, 30.0, 50.0, 50.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],  # padded
        ]
    )
    valid = torch.tensor([[True, True, True], [True, False, False]])
    matches = small.match(anchors, gt, valid)
    # a1 passes 0.5 with g0 but is g2's best anchor: the low-quality rule gives it to g2
    assert matches.tolist() == [[0, 2, -1, -1, 1], [-1, -1, -1, -1, 0]]
    assert small.match(anchors, gt[:, :0], valid[:, :0]).eq(-1).all()


def test_hard_negative_mining_hand_made(small):
    anchors = torch.tensor([[10.0 * i, 0.0, 10.0 * i + 10, 10.0] for i in range(10)])
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 12.0]]), "labels": torch.tensor([2])}]
    # background logit per anchor: lower -> higher CE for "background"
    background = torch.tensor([0.0, 3.0, -2.0, 1.0, -1.0, 2.0, 0.5, -3.0, 4.0, 1.5])
    cls_logits = torch.zeros(1, 10, 5)
    cls_logits[0, :, 0] = background
    cls_logits.requires_grad_(True)
    bbox_regression = torch.zeros(1, 10, 4, requires_grad=True)
    losses = small.compute_loss(cls_logits, bbox_regression, anchors, targets)

    ce = F.cross_entropy(cls_logits[0].detach(), torch.tensor([2] + [0] * 9), reduction="none")
    # 1 positive (anchor 0) -> 3 negatives: the highest CE = lowest background logits: 7, 2, 4
    expected_cls = ce[0] + ce[7] + ce[2] + ce[4]
    torch.testing.assert_close(losses["classification"], expected_cls)
    deltas = small.box_coder.encode(targets[0]["boxes"], anchors[:1])
    torch.testing.assert_close(
        losses["bbox_regression"], F.smooth_l1_loss(torch.zeros(1, 4), deltas, reduction="sum")
    )
    losses["classification"].backward()
    used = cls_logits.grad[0].abs().sum(1) > 0
    assert used.nonzero().flatten().tolist() == [0, 2, 4, 7]
    assert bbox_regression.grad is None


def test_empty_targets_give_zero_loss(small):
    small.train()
    images = torch.randn(2, 3, 128, 128)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = small(images, [empty, empty])
    assert losses["bbox_regression"].item() == 0 and losses["classification"].item() == 0
    small.eval()


def test_invalid_inputs(small):
    small.train()
    bad = {"boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]]), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match="x2 > x1"):
        small(torch.randn(1, 3, 64, 64), [bad])
    with pytest.raises(ValueError, match="needs targets"):
        small(torch.randn(1, 3, 64, 64))
    small.eval()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        small(torch.randn(3, 64, 64))


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = ssdlite320_mobilenet_v3_small(num_classes=4, width_mult=0.5).train()
    images = torch.randn(2, 3, 128, 128)
    targets = [
        {
            "boxes": torch.tensor([[5.0, 10.0, 70.0, 80.0], [80.0, 50.0, 120.0, 120.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.tensor([[30.0, 30.0, 100.0, 110.0]]), "labels": torch.tensor([2])},
    ]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        losses = model(images, targets)
        loss = losses["bbox_regression"] + losses["classification"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < 0.5 * history[0]


def test_generic_builder_and_eval_output():
    model = ssdlite("mobilenet_v2", num_classes=7, detections_per_img=20).eval()
    assert model.head.classification[0][0][0].in_channels == 576  # MobileNetV2's C4 expansion
    assert all(m.momentum == 0.03 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 192, 256))
    assert len(out) == 2
    for det in out:
        assert set(det) == {"boxes", "scores", "labels"}
        assert 0 < len(det["boxes"]) <= 20 and det["boxes"].shape[1] == 4
        assert det["labels"].min() >= 1 and det["labels"].max() <= 6
        assert det["boxes"][:, 2].max() <= 256 and det["boxes"][:, 3].max() <= 192
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])
    assert model.taps == ("C4_expand", "C5")
    # no expansion output: the stage tap at stride 16 (C4) instead
    v1 = ssdlite("mobilenet_v1", num_classes=3)
    assert v1.taps == ("C4", "C5")
    assert v1.head.classification[0][0][0].in_channels == 512
    with pytest.raises(
        ConfigError,
        match=r"stride-32 tap .* backbone 'mobilenet_v1' has none; it "
        r"offers C1 \(stride 2\).*C5 \(stride 16\)",
    ):
        ssdlite({"name": "mobilenet_v1", "output_stride": 16}, num_classes=3)


def test_backbone_weights_and_wrong_checkpoint():
    import torchvision

    backbone = torchvision.models.mobilenet_v3_large(reduced_tail=True)
    model = ssdlite320_mobilenet_v3_large(num_classes=3, backbone_weights=backbone.state_dict())
    torch.testing.assert_close(
        model.backbone.features[3].block[0][0].weight, backbone.features[3].block[0][0].weight
    )
    with pytest.raises(CheckpointError, match="reduced_tail"):
        ssdlite320_mobilenet_v3_large(
            num_classes=3, backbone_weights=torchvision.models.mobilenet_v3_large().state_dict()
        )
    with pytest.raises(CheckpointError):  # a 91-class checkpoint into a 3-class detector
        load_state_dict_checked(
            model, tv_ssdlite(weights=None, weights_backbone=None, num_classes=91).state_dict()
        )


def test_is_a_module_with_expected_parts():
    model = ssdlite320_mobilenet_v3_large(num_classes=91)
    assert isinstance(model, SSDLite)
    assert model.backbone.out_features == ("C4_expand", "C5")
    assert [block[-1].out_channels for block in model.extra] == [512, 256, 256, 128]
    assert model.torchvision_ignored_prefixes == ()


def test_anchor_scale_range_and_bn_momentum_options():
    default = ssdlite320_mobilenet_v3_small(num_classes=3)
    model = ssdlite320_mobilenet_v3_small(
        num_classes=3, anchor_scale_range=(0.1, 0.9), bn_momentum=0.1
    )
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    sizes = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    boxes = model.anchors(sizes, (320, 320), device=torch.device("cpu"), dtype=torch.float32)
    first = default.anchors(sizes, (320, 320), device=torch.device("cpu"), dtype=torch.float32)
    assert boxes.shape == first.shape == (3234, 4)
    # the first map's first default box is the square of the smallest scale, centred on cell (0, 0)
    torch.testing.assert_close(boxes[0], torch.tensor([8 - 16.0, 8 - 16.0, 8 + 16.0, 8 + 16.0]))
    torch.testing.assert_close(first[0], torch.tensor([8 - 32.0, 8 - 32.0, 8 + 32.0, 8 + 32.0]))
    with pytest.raises(ConfigError, match="anchor_scale_range"):
        ssdlite320_mobilenet_v3_small(num_classes=3, anchor_scale_range=(0.5, 0.2))
    with pytest.raises(ConfigError, match="bn_momentum"):
        ssdlite320_mobilenet_v3_small(num_classes=3, bn_momentum=0)


def test_config_options_are_checked_through_the_builders_kwargs():
    from densemnv3.config import ModelConfig
    from densemnv3.models import build_model

    model = build_model(
        ModelConfig(
            name="ssdlite320_mobilenet_v3_small",
            num_classes=3,
            options={"anchor_scale_range": (0.1, 0.9), "score_thresh": 0.2},
        )
    )
    assert model.score_thresh == 0.2
    with pytest.raises(ConfigError, match="did you mean 'anchor_scale_range'"):
        build_model(
            ModelConfig(
                name="ssdlite320_mobilenet_v3_small",
                num_classes=3,
                options={"anchor_scale_rnage": (0.1, 0.9)},
            )
        )
