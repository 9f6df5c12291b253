import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_small
from torchvision.models.segmentation import lraspp_mobilenet_v3_large as tv_lraspp_large
from torchvision.models.segmentation.lraspp import _lraspp_mobilenetv3

from densemnv3.errors import CheckpointError, ConfigError
from densemnv3.models import load_state_dict_checked
from densemnv3.models.heads.lraspp import LRASPPHead, clamped_avg_pool2d
from densemnv3.models.segmentation import (
    LRASPP,
    lraspp,
    lraspp_mobilenet_v3_large,
    lraspp_mobilenet_v3_small,
)


def _randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random convs and BatchNorm (affine and running stats), so parity is not trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / fan_in**0.5)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
            elif isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model.eval()


def _tv_lraspp_small(num_classes: int) -> nn.Module:
    # torchvision builds no public Small LR-ASPP; this is the wiring its Large builder uses.
    return _lraspp_mobilenetv3(mobilenet_v3_small(dilated=True), num_classes)


@pytest.mark.parametrize(
    "reference, ours",
    [
        (
            lambda: tv_lraspp_large(weights=None, weights_backbone=None, num_classes=21),
            lambda: lraspp_mobilenet_v3_large(num_classes=21),
        ),
        (lambda: _tv_lraspp_small(21), lambda: lraspp_mobilenet_v3_small(num_classes=21)),
    ],
    ids=["large", "small"],
)
def test_matches_torchvision_lraspp(reference, ours):
    torch.manual_seed(0)
    tv = _randomize_(reference())
    model = ours().eval()
    result = load_state_dict_checked(model, tv.state_dict())
    assert result.ignored_keys == []
    x = torch.randn(1, 3, 520, 520)
    with torch.no_grad():
        expected = tv(x)["out"]
        got = model(x)
    assert isinstance(got, torch.Tensor)
    assert got.shape == expected.shape == (1, 21, 520, 520)
    assert expected.std() > 0.1  # the random weights produce non-trivial logits
    assert (got - expected).abs().max() <= 1e-4


def test_param_count_matches_torchvision():
    model = lraspp_mobilenet_v3_large(num_classes=21)
    assert sum(p.numel() for p in model.parameters()) == 3_221_538


def test_torchvision_keys_are_converted_and_own_keys_pass():
    model = lraspp_mobilenet_v3_large(num_classes=21)
    tv_keys = tv_lraspp_large(weights=None, weights_backbone=None, num_classes=21).state_dict()
    converted = model.convert_torchvision_state_dict(tv_keys)
    assert set(converted) == set(model.state_dict())
    # a checkpoint saved from this model loads through the same path
    assert (
        model.convert_torchvision_state_dict(model.state_dict()).keys() == model.state_dict().keys()
    )
    load_state_dict_checked(model, model.state_dict())


@pytest.mark.parametrize("pool", ["global", "paper"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_matches_odd_input_size(pool, output_stride):
    model = lraspp_mobilenet_v3_large(num_classes=5, pool=pool, output_stride=output_stride).eval()
    assert model.backbone.strides == {"features.4": 8, "C5": output_stride}
    with torch.no_grad():
        out = model(torch.randn(1, 3, 97, 131))
    assert out.shape == (1, 5, 97, 131)
    assert torch.isfinite(out).all()


def test_output_stride_32_works():
    model = lraspp_mobilenet_v3_small(num_classes=3, output_stride=32).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 70, 90)).shape == (1, 3, 70, 90)


def test_bad_output_stride_and_pool_are_config_errors():
    with pytest.raises(ConfigError, match="output_stride"):
        lraspp_mobilenet_v3_large(output_stride=4)
    with pytest.raises(ConfigError, match="pool"):
        lraspp_mobilenet_v3_large(pool="pyramid")


def test_paper_pool_gate_grid():
    # 1024×2048 input at stride 16 → 64×128 high map → 49×49 windows every (16, 20) → 1×4 gates
    high = torch.randn(1, 2, 64, 128)
    pooled = clamped_avg_pool2d(high)
    assert pooled.shape == (1, 2, 1, 4)
    for j in range(4):
        window = high[:, :, 0:49, 20 * j : 20 * j + 49]
        torch.testing.assert_close(pooled[..., 0, j], window.mean(dim=(-2, -1)))
    # stride 8 (mmseg's D8) → 128×256 map → 5×11 gates
    assert clamped_avg_pool2d(torch.randn(1, 2, 128, 256)).shape == (1, 2, 5, 11)
    # a map smaller than the kernel: the kernel is clamped, the gate is the global mean
    small = torch.randn(1, 3, 3, 3)
    torch.testing.assert_close(clamped_avg_pool2d(small), small.mean(dim=(-2, -1), keepdim=True))
    # one side clamped only: 32×128 → kernel 32×49 → 1×4
    assert clamped_avg_pool2d(torch.randn(1, 2, 32, 128)).shape == (1, 2, 1, 4)


def test_paper_gate_is_upsampled_to_high_size():
    head = LRASPPHead(4, 6, 3, inter_channels=8, pool="paper").eval()
    high = torch.randn(1, 6, 64, 128)
    gate = head.gate(high)
    assert gate.shape == (1, 8, 64, 128)
    coarse = head.scale(high)
    assert coarse.shape == (1, 8, 1, 4)
    expected = nn.functional.interpolate(
        coarse, size=(64, 128), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(gate, expected)
    # the global gate stays 1×1 and broadcasts
    assert LRASPPHead(4, 6, 3, inter_channels=8).gate(high).shape == (1, 8, 1, 1)


def test_head_matches_resize_then_classify():
    """The head classifies before resizing; that must equal the textbook order."""
    torch.manual_seed(0)
    head = _randomize_(LRASPPHead(5, 7, 4, inter_channels=16, pool="paper"))
    low, high = torch.randn(2, 5, 33, 47), torch.randn(2, 7, 17, 24)
    with torch.no_grad():
        x = head.cbr(high) * head.gate(high)
        x = nn.functional.interpolate(x, size=(33, 47), mode="bilinear", align_corners=False)
        expected = head.low_classifier(low) + head.high_classifier(x)
        torch.testing.assert_close(head(low, high), expected, atol=1e-5, rtol=1e-5)


def test_small_checkpoint_into_large_names_key_and_shapes():
    model = lraspp_mobilenet_v3_large(num_classes=21)
    with pytest.raises(
        CheckpointError, match=r"backbone\.features\.\S+: checkpoint \(\d+.*\) vs model \("
    ):
        load_state_dict_checked(model, _tv_lraspp_small(21).state_dict())


def test_backbone_weights_from_classification_checkpoint():
    from torchvision.models import mobilenet_v3_large

    classifier = _randomize_(mobilenet_v3_large())
    model = lraspp_mobilenet_v3_large(backbone_weights=classifier.state_dict())
    torch.testing.assert_close(
        model.backbone.features[4].block[1][1].running_var,
        classifier.features[4].block[1][1].running_var,
    )
    result = model.load_backbone_weights(classifier.state_dict())
    assert result.ignored_keys and all(k.startswith("classifier.") for k in result.ignored_keys)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v1"])
def test_other_backbones(name):
    model = lraspp(name, num_classes=7).eval()
    assert isinstance(model, LRASPP)
    assert model.backbone.strides[model.low_tap] == 8
    with torch.no_grad():
        assert model(torch.randn(1, 3, 65, 81)).shape == (1, 7, 65, 81)


def test_training_step_reaches_backbone():
    torch.manual_seed(0)
    model = lraspp_mobilenet_v3_large(num_classes=4).train()
    target = torch.randint(0, 4, (2, 64, 64))
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 4, 64, 64)
    nn.functional.cross_entropy(logits, target).backward()
    stem = model.backbone.features[0][0].weight.grad
    assert stem is not None and stem.abs().sum() > 0
    assert model.head.scale[1].weight.grad.abs().sum() > 0


def test_frozen_bn_backbone_keeps_head_bn_trainable():
    model = lraspp_mobilenet_v3_small(num_classes=3, frozen_bn=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    assert isinstance(model.head.cbr[1], nn.BatchNorm2d)
