"""Every backbone by name — the registry's, torchvision's (``tv:``) and timm's (``timm:``): it
builds, and ``feature_info`` states the real channels and strides at every output stride it
supports (two input sizes); one it does not support is refused in one line."""

import importlib.util

import pytest
import torch
import torchvision

from densemnv3.errors import ConfigError
from densemnv3.models import create_backbone, list_backbones, load_state_dict_checked

pytestmark = pytest.mark.usefixtures("one_thread")

HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_timm = pytest.mark.skipif(
    not HAS_TIMM, reason="timm is not installed (pip install 'densemnv3[timm]')"
)

#: Output strides a backbone cannot reach (all others of 8, 16, 32 must work).
UNSUPPORTED = {"tv:convnext_tiny": (8, 16)}
SIZES = [(64, 64), (96, 128)]

NAMES = [
    *list_backbones(),
    "tv:resnet18",
    "tv:shufflenet_v2_x1_0",
    "tv:efficientnet_b0",
    "tv:convnext_tiny",
    pytest.param("timm:resnet18", marks=needs_timm),
    pytest.param("timm:efficientnet_b0", marks=needs_timm),
]


def expected_size(size, stride):
    return tuple(-(-s // stride) for s in size)  # ceil: padding keeps the border


@pytest.mark.parametrize("name", NAMES)
def test_feature_info_matches_outputs_at_every_output_stride(name):
    for output_stride in (32, 16, 8):
        if output_stride in UNSUPPORTED.get(name, ()):
            with pytest.raises(
                ConfigError,
                match=rf"{name}.* cannot run at output_stride "
                rf"{output_stride}: .*use output_stride=32",
            ):
                create_backbone(name, output_stride=output_stride)
            continue
        backbone = create_backbone(name, output_stride=output_stride).eval()
        info = backbone.feature_info
        levels = info.levels()
        assert levels == [t for t in ("C1", "C2", "C3", "C4", "C5") if t in info]
        assert levels[-3:] == ["C3", "C4", "C5"]
        assert info.reduction() == [min(2 ** int(t[1]), output_stride) for t in levels]
        backbone.set_out_features(levels)
        for size in SIZES:
            with torch.no_grad():
                out = backbone(torch.zeros(1, 3, *size))
            assert list(out) == levels
            for tap, tensor in out.items():
                assert tensor.shape[1] == info[tap].channels, (tap, output_stride)
                assert tuple(tensor.shape[-2:]) == expected_size(size, info[tap].stride), (
                    tap,
                    size,
                )


def test_stage_taps_are_found_by_stride_not_tabulated():
    """The taps land on the stage outputs each library's own code names."""
    resnet = create_backbone("tv:resnet18").feature_info
    assert [resnet[t].module for t in resnet] == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert resnet.channels() == [64, 64, 128, 256, 512]
    shuffle = create_backbone("tv:shufflenet_v2_x1_0").feature_info
    assert shuffle.module_name() == ["conv1", "maxpool", "stage2", "stage3", "conv5"]
    assert shuffle.channels() == create_backbone("shufflenet_v2").feature_info.channels()
    convnext = create_backbone("tv:convnext_tiny").feature_info
    assert convnext.levels() == ["C2", "C3", "C4", "C5"] and convnext.channels() == [
        96,
        192,
        384,
        768,
    ]


@pytest.mark.parametrize(
    "output_stride,dilate", [(16, [False, False, True]), (8, [False, True, True])]
)
def test_tv_dilation_equals_torchvision_replace_stride_with_dilation(
    output_stride, dilate, rand_init
):
    tv = rand_init(torchvision.models.resnet50(replace_stride_with_dilation=dilate)).eval()
    ours = create_backbone("tv:resnet50", output_stride=output_stride, out_features=("C5",)).eval()
    result = load_state_dict_checked(ours, tv.state_dict())
    assert result.ignored_keys == ["body.fc.weight", "body.fc.bias"]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(tv.children())[:-2])(x)
        assert (ours(x)["C5"] - expected).abs().max().item() == 0


def test_tv_weights_load_from_a_local_file_and_never_download(tmp_path, rand_init):
    tv = rand_init(torchvision.models.efficientnet_b0()).eval()
    path = tmp_path / "efficientnet_b0.pth"
    torch.save(tv.state_dict(), path)
    ours = create_backbone("tv:efficientnet_b0", out_features=("C5",)).eval()
    load_state_dict_checked(ours, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x)["C5"], tv.features(x))
    with pytest.raises(
        ConfigError,
        match="tv:resnet18': weights are never downloaded; give a local "
        "file of the classification model as model.backbone_weights",
    ):
        create_backbone({"name": "tv:resnet18", "weights": "IMAGENET1K_V1"})


def test_tv_names_and_models_it_cannot_tap():
    with pytest.raises(
        ConfigError,
        match=r"unknown torchvision classification model 'resnet81'.*"
        r"did you mean 'resnet18'",
    ):
        create_backbone("tv:resnet81")
    with pytest.raises(ConfigError, match=r"tv:vit_b_16' fails on a 64x96 input"):
        create_backbone("tv:vit_b_16")


@needs_timm
def test_timm_weights_load_with_identical_features(rand_init):
    import timm

    full = rand_init(timm.create_model("efficientnet_b0", pretrained=False)).eval()
    ours = create_backbone("timm:efficientnet_b0", out_features=("C5",)).eval()
    result = load_state_dict_checked(ours, full.state_dict())
    assert "classifier.weight" in result.ignored_keys
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(
            ours(x)["C5"], full.forward_intermediates(x, intermediates_only=True)[-1]
        )
    with pytest.raises(ConfigError, match="never downloaded"):
        create_backbone({"name": "timm:resnet18", "pretrained": True})


def test_timm_missing_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(ConfigError, match=r"pip install 'densemnv3\[timm\]'"):
        create_backbone("timm:resnet18")
