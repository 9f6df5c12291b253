import pytest
import torch
import torchvision

from densemnv3.errors import CheckpointError, ConfigError
from densemnv3.models import (
    FeatureBackbone,
    create_backbone,
    list_backbones,
    load_state_dict_checked,
    register_backbone,
)
from densemnv3.models.backbones import make_divisible

V3_CASES = [
    (arch, dilated, reduced_tail, width)
    for arch in ("large", "small")
    for dilated in (False, True)
    for reduced_tail in (False, True)
    for width in (0.75, 1.0)
]


@pytest.mark.parametrize("arch,dilated,reduced_tail,width", V3_CASES)
def test_mobilenet_v3_parity_with_torchvision(arch, dilated, reduced_tail, width, rand_init):
    tv = getattr(torchvision.models, f"mobilenet_v3_{arch}")(
        dilated=dilated, reduced_tail=reduced_tail, width_mult=width
    )
    rand_init(tv).eval()
    ours = create_backbone(
        f"mobilenet_v3_{arch}",
        dilated=dilated,
        reduced_tail=reduced_tail,
        width_mult=width,
        out_features=("C5",),
    ).eval()
    result = load_state_dict_checked(ours, tv.state_dict())
    assert result.ignored_keys and all(k.startswith("classifier.") for k in result.ignored_keys)
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        diff = (ours(x)["C5"] - tv.features(x)).abs().max().item()
    assert diff <= 1e-5
    c5 = ours.feature_info["C5"]
    last = tv.features[-1].out_channels
    assert c5.channels == last
    assert c5.stride == (16 if dilated else 32)


def test_mobilenet_v2_parity_with_torchvision(rand_init):
    for width in (0.75, 1.0):
        tv = rand_init(torchvision.models.mobilenet_v2(width_mult=width)).eval()
        ours = create_backbone("mobilenet_v2", width_mult=width, out_features=("C5",)).eval()
        load_state_dict_checked(ours, tv.state_dict())
        x = torch.randn(1, 3, 96, 80)
        with torch.no_grad():
            assert (ours(x)["C5"] - tv.features(x)).abs().max().item() <= 1e-5


def test_published_channels():
    large = create_backbone("mobilenet_v3_large")
    info = large.feature_info
    assert [info[f"C{i}"].channels for i in range(1, 6)] == [16, 24, 40, 112, 960]
    assert [info[f"C{i}"].stride for i in range(1, 6)] == [2, 4, 8, 16, 32]
    assert (info["C4_expand"].channels, info["C4_expand"].stride) == (672, 16)
    assert (
        create_backbone("mobilenet_v3_large", reduced_tail=True).feature_info["C5"].channels == 480
    )
    small = create_backbone("mobilenet_v3_small").feature_info
    assert (small["C5"].channels, small["C4_expand"].channels) == (576, 288)
    # torchvision's LR-ASPP low tap: the block that opens the stride-8 stage
    assert large.first_block_at_stride(8) == "features.4"
    assert info["features.4"].channels == 40
    assert create_backbone("mobilenet_v3_small").first_block_at_stride(8) == "features.2"


@pytest.mark.parametrize(
    "name", ["mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2", "mobilenet_v1"]
)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("size", [(224, 224), (513, 1025)])
def test_feature_info_matches_real_sizes(name, output_stride, size):
    backbone = create_backbone(name, output_stride=output_stride)
    taps = [t for t in backbone.feature_info if not t.startswith("features.")]
    backbone.set_out_features(taps)
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(1, 3, *size))
    for tap, tensor in out.items():
        info = backbone.feature_info[tap]
        assert tensor.shape[1] == info.channels, tap
        expected = tuple(-(-s // info.stride) for s in size)  # ceil: padding keeps the border
        assert tuple(tensor.shape[-2:]) == expected, (tap, tensor.shape, info)
        assert info.stride <= output_stride


def test_output_stride_8_dilates_c3_stage_and_loads_torchvision_weights(rand_init):
    tv = rand_init(torchvision.models.mobilenet_v3_large()).eval()
    backbone = create_backbone(
        "mobilenet_v3_large", output_stride=8, out_features=("C3", "C4", "C5")
    )
    load_state_dict_checked(backbone, tv.state_dict())
    assert backbone.strides == {"C3": 8, "C4": 8, "C5": 8}
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 96))
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {k: (16, 12) for k in out}
    # the stride-8 -> 16 block's depthwise conv now has stride 1 and dilation 2
    dw = backbone.features[7].block[1][0]
    assert dw.stride == (1, 1) and dw.dilation == (2, 2)
    assert backbone.features[13].block[1][0].dilation == (4, 4)


def test_dilated_equals_output_stride_16():
    a = create_backbone("mobilenet_v3_large", dilated=True)
    b = create_backbone("mobilenet_v3_large", output_stride=16)
    assert a.feature_info == b.feature_info
    with pytest.raises(ConfigError, match="contradicts"):
        create_backbone("mobilenet_v3_large", dilated=True, output_stride=32)


def test_c4_expand_is_the_expansion_output():
    backbone = create_backbone("mobilenet_v3_large", out_features=("C4_expand", "C5")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = backbone(x)
        h = backbone.features[:13](x)
        expected = backbone.features[13].block[0](h)
        c5 = backbone.features(x)
    torch.testing.assert_close(out["C4_expand"], expected)
    torch.testing.assert_close(out["C5"], c5)


def test_forward_stops_after_last_tap():
    backbone = create_backbone("mobilenet_v3_large", out_features=("C3",))
    calls = []
    backbone.features[7].register_forward_hook(lambda *a: calls.append(1))
    backbone(torch.zeros(1, 3, 32, 32))
    assert not calls


def test_frozen_bn_keeps_outputs(rand_init):
    tv = rand_init(torchvision.models.mobilenet_v3_small()).eval()
    frozen = create_backbone("mobilenet_v3_small", frozen_bn=True, out_features=("C5",))
    load_state_dict_checked(frozen, tv.state_dict())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    x = torch.randn(1, 3, 64, 64)
    frozen.train()  # frozen statistics ignore the mode
    with torch.no_grad():
        torch.testing.assert_close(frozen(x)["C5"], tv.features(x), atol=1e-5, rtol=1e-5)


def test_mismatched_architecture_names_keys(rand_init):
    small = torchvision.models.mobilenet_v3_small().state_dict()
    backbone = create_backbone("mobilenet_v3_large")
    with pytest.raises(
        CheckpointError,
        match=r"features\.2\.block\.0\.0\.weight: checkpoint \(72, 16, 1, 1\) "
        r"vs model \(64, 16, 1, 1\)",
    ):
        load_state_dict_checked(backbone, small)


def test_load_from_path_and_missing_path(tmp_path):
    tv = torchvision.models.mobilenet_v3_large()
    path = tmp_path / "mnv3.pth"
    torch.save(tv.state_dict(), path)
    backbone = create_backbone("mobilenet_v3_large")
    load_state_dict_checked(backbone, path)
    torch.testing.assert_close(
        backbone.features[5].block[0][0].weight, tv.features[5].block[0][0].weight
    )
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict_checked(backbone, tmp_path / "nope.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict_checked(backbone, truncated)


def test_registry():
    names = list_backbones()
    assert {"mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2", "mobilenet_v1"} <= set(
        names
    )
    with pytest.raises(ConfigError, match="did you mean 'mobilenet_v3_large'"):
        create_backbone("mobilenet_v3_lrge")

    @register_backbone("tiny_test_backbone")
    def tiny(**kwargs):
        return create_backbone("mobilenet_v1", width_mult=0.25, **kwargs)

    try:
        backbone = create_backbone("tiny_test_backbone", out_features=("C5",))
        assert isinstance(backbone, FeatureBackbone)
        assert backbone.feature_info["C5"].channels == 256
        with pytest.raises(ValueError, match="already registered"):
            register_backbone("tiny_test_backbone", tiny)
    finally:
        from densemnv3.models.backbones.registry import BACKBONES

        BACKBONES.unregister("tiny_test_backbone")


def test_unknown_tap():
    with pytest.raises(ConfigError, match="did you mean 'C4_expand'"):
        create_backbone("mobilenet_v3_large", out_features=("C4_expnd",))
    with pytest.raises(ConfigError, match="unknown feature tap"):
        create_backbone("mobilenet_v1", out_features=("C4_expand",))


def test_make_divisible():
    assert [make_divisible(v) for v in (16 * 0.75, 960 * 0.75, 3, 90)] == [16, 720, 8, 88]
    assert make_divisible(72 * 0.75) == 56  # 54 -> 56


@pytest.mark.parametrize("width", [0.5, 1.0])
def test_shufflenet_v2_parity_with_torchvision(width, rand_init, one_thread):
    suffix = {0.5: "x0_5", 1.0: "x1_0"}[width]
    tv = rand_init(getattr(torchvision.models, f"shufflenet_v2_{suffix}")()).eval()
    ours = create_backbone("shufflenet_v2", width_mult=width, out_features=("C3", "C5")).eval()
    result = load_state_dict_checked(ours, tv.state_dict())
    assert result.ignored_keys == ["fc.weight", "fc.bias"]
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        c3 = tv.stage2(tv.maxpool(tv.conv1(x)))
        c5 = tv.conv5(tv.stage4(tv.stage3(c3)))
        out = ours(x)
    assert (out["C5"] - c5).abs().max().item() == 0  # the same layers in the same order
    assert (out["C3"] - c3).abs().max().item() == 0
    info = ours.feature_info
    assert info.channels() == {0.5: [24, 24, 48, 96, 1024], 1.0: [24, 24, 116, 232, 1024]}[width]
    assert info.reduction() == [2, 4, 8, 16, 32]
    assert ours.first_block_at_stride(8) == "features.2"  # stage2's first block, as the MobileNets
    with pytest.raises(ConfigError, match=r"width_mult must be one of \[0\.5, 1\.0, 1\.5, 2\.0\]"):
        create_backbone("shufflenet_v2", width_mult=0.75)


def test_shufflenet_v2_published_channels():
    expected = {
        0.5: [24, 24, 48, 96, 192, 1024],
        1.0: [24, 24, 116, 232, 464, 1024],
        1.5: [24, 24, 176, 352, 704, 1024],
        2.0: [24, 24, 244, 488, 976, 2048],
    }
    for width, (c1, c2, c3, c4, stage4, c5) in expected.items():
        info = create_backbone("shufflenet_v2", width_mult=width).feature_info
        assert info.channels() == [c1, c2, c3, c4, c5]
        assert info["features.17"].channels == stage4  # the last block, before conv5 (features.18)


def test_features_only_returns_a_list_in_out_indices_order():
    features = create_backbone(
        "mobilenet_v3_large", features_only=True, out_indices=(4, 2, 3)
    ).eval()
    assert features.feature_info.channels() == [960, 40, 112]
    assert features.feature_info.reduction() == [32, 8, 16]
    with torch.no_grad():
        out = features(torch.zeros(1, 3, 64, 96))
    assert isinstance(out, list) and [tuple(o.shape[1:]) for o in out] == [
        (960, 2, 3),
        (40, 8, 12),
        (112, 4, 6),
    ]
    every = create_backbone("tv:resnet18", features_only=True)
    assert every.feature_info.channels() == [64, 64, 128, 256, 512]
    with pytest.raises(
        ConfigError,
        match=r"out_indices \(5,\): backbone 'mobilenet_v1' offers "
        r"0=C1, 1=C2, 2=C3, 3=C4, 4=C5",
    ):
        create_backbone("mobilenet_v1", features_only=True, out_indices=(5,))
    with pytest.raises(ConfigError, match="out_indices needs features_only=True"):
        create_backbone("mobilenet_v1", out_indices=(1,))


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "shufflenet_v2", "tv:resnet18"])
def test_integer_and_unknown_taps_list_the_valid_ones(name):
    with pytest.raises(
        ConfigError,
        match=rf"out_features takes tap names, got 2; backbone '{name}' "
        r"offers C1, C2, C3, C4, C5.*features_only=True, out_indices",
    ):
        create_backbone(name, out_features=(2, 3, 4))
    with pytest.raises(
        ConfigError,
        match=rf"unknown feature tap 'C6' \(did you mean 'C5'\?\); "
        rf"backbone '{name}' offers C1, C2, C3, C4, C5",
    ):
        create_backbone(name, out_features=("C6",))
