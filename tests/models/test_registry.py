"""The registries: every registered model builds from a config, runs, and reads taps its
backbone publishes; the Registry class itself."""

import importlib
import inspect
import pickle

import pytest
import torch

from densemnv3.config import Config, ModelConfig
from densemnv3.errors import ConfigError
from densemnv3.models import LRASPP, MODELS, LRASPPSSDLite, SSDLite, build_model, list_models
from densemnv3.models.backbones.registry import BACKBONES
from densemnv3.tasks import TASKS, build_task, list_tasks
from densemnv3.utils.registry import Registry

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shipped_models_and_tasks_are_registered():
    assert list_models() == [
        "lraspp",
        "lraspp_mobilenet_v3_large",
        "lraspp_mobilenet_v3_small",
        "multitask_mobilenet_v3_large",
        "multitask_mobilenet_v3_small",
        "ssdlite",
        "ssdlite320_mobilenet_v3_large",
        "ssdlite320_mobilenet_v3_small",
    ]
    assert list_tasks() == ["detection", "multitask", "segmentation"]


#: The generic builders need a backbone; the named ones build their own.
DEFAULT_BACKBONE = {"lraspp": "mobilenet_v3_small", "ssdlite": "mobilenet_v2"}


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_runs_and_reads_published_taps(name):
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, num_classes=5, backbone=DEFAULT_BACKBONE.get(name))
    model = build_model(cfg).eval()
    info = model.backbone.feature_info
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        out = model(x)
    if isinstance(model, LRASPPSSDLite):  # both heads, on one backbone's taps
        assert out.logits.shape == (2, 5, 96, 128) and len(out.detections) == 2
        taps = (model.low_tap, "C4_expand", "C5")
        reads = (
            model.seg.low_classifier.in_channels,
            model.det.head.classification[0][0][0].in_channels,
            model.seg.cbr[0].in_channels,
        )
        assert [info[t].stride for t in taps] == [8, 16, 32]
    elif isinstance(model, LRASPP):
        assert out.shape == (2, 5, 96, 128) and torch.isfinite(out).all()
        taps = (model.low_tap, model.high_tap)
        reads = (model.head.low_classifier.in_channels, model.head.cbr[0].in_channels)
        assert info[model.low_tap].stride == 8 and info[model.high_tap].stride == 16
    else:
        assert isinstance(model, SSDLite) and len(out) == 2
        assert all(d["boxes"].shape[1] == 4 and (d["labels"] >= 1).all() for d in out)
        taps = ("C4_expand", "C5")
        assert model.taps == taps
        reads = tuple(block[0][0].in_channels for block in model.head.classification[:2])
        assert (info["C4_expand"].stride, info["C5"].stride) == (16, 32)
    assert tuple(model.backbone.out_features) == taps
    assert tuple(info[t].channels for t in taps) == reads


def test_model_options_are_checked_through_forwarded_kwargs():
    assert {"nms_thresh", "anchor_scale_range", "reduced_tail"} <= MODELS.options(
        "ssdlite320_mobilenet_v3_small"
    )
    with pytest.raises(ConfigError, match=r"no option 'nms_tresh' \(did you mean 'nms_thresh'\?\)"):
        build_model(ModelConfig(name="ssdlite320_mobilenet_v3_small", options={"nms_tresh": 0.5}))
    with pytest.raises(
        ConfigError,
        match=r"model.name: unknown model 'lraspp_mobilenet_v3_lrge' \(did you mean "
        r"'lraspp_mobilenet_v3_large'\?\)",
    ):
        build_model(ModelConfig(name="lraspp_mobilenet_v3_lrge"))


def test_unknown_task_suggests_the_closest():
    cfg = Config(task="segmentaton")
    with pytest.raises(
        ConfigError, match=r"unknown task 'segmentaton' \(did you mean 'segmentation'\?\)"
    ):
        build_task(cfg)
    assert TASKS.get("segmentation").__name__ == "SegmentationTask"


#: Builders made by one factory per variant: (registry, name, module, options it must list).
PER_VARIANT = [
    (MODELS, "lraspp_mobilenet_v3_large", "segmentation", {"pool", "width_mult", "reduced_tail"}),
    (MODELS, "lraspp_mobilenet_v3_small", "segmentation", {"pool", "width_mult", "reduced_tail"}),
    (MODELS, "ssdlite320_mobilenet_v3_large", "detection", {"width_mult", "reduced_tail"}),
    (MODELS, "ssdlite320_mobilenet_v3_small", "detection", {"width_mult", "reduced_tail"}),
    (BACKBONES, "mobilenet_v3_large", "backbones.mobilenet_v3", {"width_mult", "reduced_tail"}),
    (BACKBONES, "mobilenet_v3_small", "backbones.mobilenet_v3", {"width_mult", "reduced_tail"}),
]


@pytest.mark.parametrize(
    "registry, name, module, options", PER_VARIANT, ids=[v[1] for v in PER_VARIANT]
)
def test_builders_made_per_variant_read_as_if_written_out(registry, name, module, options):
    builder = registry.get(name)
    module = importlib.import_module(f"densemnv3.models.{module}")
    assert getattr(module, name) is builder and builder.__module__ == module.__name__
    assert builder.__name__ == builder.__qualname__ == name and inspect.getdoc(builder)
    params = inspect.signature(builder).parameters.values()
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params)
    assert options | {"frozen_bn"} <= {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    assert pickle.loads(pickle.dumps(builder)) is builder


def test_registry_register_get_unregister():
    reg = Registry("widget")

    @reg.register()
    def small(*, size: int = 1, **kwargs):
        return inner(**kwargs)

    def inner(*, colour: str = "red"):
        return colour

    reg.register("small_alias", forwards_kwargs_to=(inner,))(small)
    assert reg.names() == ["small", "small_alias"] and "small" in reg
    assert reg.options("small") == {"size"}  # **kwargs not followed without forwards_kwargs_to
    assert reg.options("small_alias") == {"size", "colour"}
    with pytest.raises(ValueError, match="already registered"):
        reg.register("small")(small)
    reg.register("small", overwrite=True)(small)
    with pytest.raises(
        ConfigError,
        match=r"unknown widget 'smal' \(did you mean 'small'\?\); available: small, small_alias",
    ):
        reg.get("smal")
    reg.unregister("small_alias")
    assert reg.names() == ["small"]


#: (model.name, model.backbone, model.options) -> the head's taps, their (channels, stride)
SWAPS = [
    ("lraspp", "mobilenet_v2", {}, ("features.4", "C5"), [(32, 8), (1280, 16)]),
    ("lraspp", "shufflenet_v2", {}, ("features.2", "C5"), [(116, 8), (1024, 16)]),
    ("lraspp", {"name": "tv:resnet18"}, {"output_stride": 8}, ("C3", "C5"), [(128, 8), (512, 8)]),
    (
        "lraspp_mobilenet_v3_large",
        "tv:convnext_tiny",
        {"output_stride": 32},
        ("C3", "C5"),
        [(192, 8), (768, 32)],
    ),
    ("ssdlite", "mobilenet_v1", {}, ("C4", "C5"), [(512, 16), (1024, 32)]),
    ("ssdlite", "shufflenet_v2", {"bn_momentum": 0.1}, ("C4", "C5"), [(232, 16), (1024, 32)]),
    (
        "ssdlite320_mobilenet_v3_small",
        "tv:efficientnet_b0",
        {},
        ("C4", "C5"),
        [(112, 16), (1280, 32)],
    ),
    (
        "ssdlite320_mobilenet_v3_small",
        "mobilenet_v3_large",
        {},
        ("C4_expand", "C5"),
        [(672, 16), (960, 32)],
    ),
]


@pytest.mark.parametrize("name,backbone,options,taps,published", SWAPS)
def test_model_backbone_swaps_the_backbone_of_any_head(name, backbone, options, taps, published):
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(name=name, num_classes=4, backbone=backbone, options=options)
    ).eval()
    info = model.backbone.feature_info
    if isinstance(model, LRASPP):
        assert (model.low_tap, model.high_tap) == taps
        reads = [model.head.low_classifier.in_channels, model.head.cbr[0].in_channels]
    else:
        assert model.taps == taps
        reads = [block[0][0].in_channels for block in model.head.classification[:2]]
    assert [(info[t].channels, info[t].stride) for t in taps] == published
    assert reads == [c for c, _ in published]
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 4, 64, 96) if isinstance(model, LRASPP) else len(out) == 1


def test_a_named_models_own_backbone_options_are_left_out_with_a_warning(capsys):
    """lraspp_synthetic sets reduced_tail for its MobileNetV3; --set model.backbone=mobilenet_v2
    replaces that backbone, and with it that option (said once, on stderr)."""
    model = build_model(
        ModelConfig(
            name="lraspp_mobilenet_v3_large",
            backbone="mobilenet_v2",
            options={"output_stride": 16, "reduced_tail": True, "width_mult": 0.75},
        )
    )
    assert model.backbone.feature_info["C5"].channels == 1280  # MobileNetV2 at width 1.0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "reduced_tail=True, width_mult=0.75" in err
    assert (
        "left out (options of the new backbone go in model.backbone, e.g. {'name': 'mobilenet_v2'"
        in err
    )


def test_backbone_options_and_missing_backbones_get_one_line():
    def error(**model) -> str:
        with pytest.raises(ConfigError) as info:
            build_model(ModelConfig(**model))
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "--set model.backbone=mobilenet_v3_large" in error(name="lraspp")
    assert "model.backbone names, and none is set" in error(name="ssdlite", num_classes=3)
    assert error(name="lraspp_mobilenet_v3_large", options={"backbone": "mobilenet_v2"}) == (
        "model.options.backbone: the backbone is model.backbone, e.g. --set "
        "model.backbone=mobilenet_v2"
    )
    assert "a backbone option? give it in model.backbone" in error(
        name="lraspp", backbone="mobilenet_v2", options={"width_mult": 0.5}
    )
    assert "expected a backbone name or a dict with 'name'" in error(
        name="lraspp", backbone={"os": 8}
    )
    assert error(name="lraspp", backbone="mobilenet_v3_lrge").startswith(
        "unknown backbone 'mobilenet_v3_lrge' (did you mean 'mobilenet_v3_large'?)"
    )
    assert (
        "LR-ASPP needs a stride-8 tap (its low-level branch), and backbone 'tv:swin_t' has none; "
        "it offers C2 (stride 4), C5 (stride 32)"
        == error(name="lraspp", backbone="tv:swin_t", options={"output_stride": 32})
    )
    assert error(name="lraspp", backbone="tv:convnext_tiny").endswith(
        "use output_stride=32 (for LR-ASPP: model.options.output_stride)"
    )
    # options of the swapped backbone go with it
    model = build_model(
        ModelConfig(name="lraspp", backbone={"name": "mobilenet_v2", "width_mult": 0.5})
    )
    assert model.backbone.feature_info["C5"].channels == 1280
    assert model.backbone.feature_info["C4"].channels == 48  # 96 * 0.5


def test_heads_need_only_the_documented_backbone_contract():
    """forward -> dict of taps and feature_info[tap].channels/.stride: no set_out_features (the
    heads rebuild with out_features), no first_block_at_stride (LR-ASPP takes C3), no C4_expand
    (SSDLite takes C4)."""
    from collections import namedtuple

    from torch import nn

    from densemnv3.models import register_backbone
    from densemnv3.models.backbones.registry import BACKBONES

    Info = namedtuple("Info", "channels stride")
    built = []

    class Plain(nn.Module):
        def __init__(self, out_features):
            super().__init__()
            self.stages = nn.ModuleList(
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
                for c_in, c_out in [(3, 8), (8, 16), (16, 24), (24, 32), (32, 40)]
            )
            self.feature_info = {f"C{i + 1}": Info(8 * (i + 1), 2 ** (i + 1)) for i in range(5)}
            self.out_features = tuple(out_features)

        def forward(self, x):
            out = {}
            for i, stage in enumerate(self.stages):
                x = out[f"C{i + 1}"] = stage(x)
            return {t: out[t] for t in self.out_features}

    @register_backbone("plain_test_backbone")
    def plain(*, output_stride=32, out_features=("C5",), frozen_bn=False):
        built.append(tuple(out_features))
        return Plain(out_features)

    try:
        seg = build_model(
            ModelConfig(
                name="lraspp",
                num_classes=3,
                backbone="plain_test_backbone",
                options={"output_stride": 32},
            )
        )
        assert (seg.low_tap, seg.high_tap) == ("C3", "C5") and built[-1] == ("C3", "C5")
        det = build_model(
            ModelConfig(name="ssdlite", num_classes=3, backbone="plain_test_backbone")
        )
        assert det.taps == ("C4", "C5") and built[-1] == ("C4", "C5")
        with torch.no_grad():
            assert seg.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)
            assert len(det.eval()(torch.rand(1, 3, 64, 64))) == 1
    finally:
        BACKBONES.unregister("plain_test_backbone")
