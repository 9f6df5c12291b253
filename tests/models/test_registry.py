"""The registries: every registered model builds from a config, runs, and reads taps its
backbone publishes; the Registry class itself."""

import pytest
import torch

from densemnv3.config import Config, ModelConfig
from densemnv3.errors import ConfigError
from densemnv3.models import LRASPP, MODELS, LRASPPSSDLite, SSDLite, build_model, list_models
from densemnv3.tasks import TASKS, build_task, list_tasks
from densemnv3.utils.registry import Registry


def test_shipped_models_and_tasks_are_registered():
    assert list_models() == [
        "lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_small",
        "multitask_mobilenet_v3_large", "multitask_mobilenet_v3_small",
        "ssdlite320_mobilenet_v3_large", "ssdlite320_mobilenet_v3_small",
    ]
    assert list_tasks() == ["detection", "multitask", "segmentation"]


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_runs_and_reads_published_taps(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, num_classes=5)).eval()
    info = model.backbone.feature_info
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        out = model(x)
    if isinstance(model, LRASPPSSDLite):  # both heads, on one backbone's taps
        assert out.logits.shape == (2, 5, 96, 128) and len(out.detections) == 2
        taps = (model.low_tap, "C4_expand", "C5")
        reads = (model.seg.low_classifier.in_channels, model.det.head.classification[0][0][0].in_channels,
                 model.seg.cbr[0].in_channels)
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
        reads = tuple(block[0][0].in_channels for block in model.head.classification[:2])
        assert (info["C4_expand"].stride, info["C5"].stride) == (16, 32)
    assert tuple(model.backbone.out_features) == taps
    assert tuple(info[t].channels for t in taps) == reads


def test_model_options_are_checked_through_forwarded_kwargs():
    assert {"nms_thresh", "anchor_scale_range", "reduced_tail"} <= MODELS.options("ssdlite320_mobilenet_v3_small")
    with pytest.raises(ConfigError, match=r"no option 'nms_tresh' \(did you mean 'nms_thresh'\?\)"):
        build_model(ModelConfig(name="ssdlite320_mobilenet_v3_small", options={"nms_tresh": 0.5}))
    with pytest.raises(ConfigError, match=r"is not a model \(did you mean 'lraspp_mobilenet_v3_large'\?\)"):
        build_model(ModelConfig(name="lraspp_mobilenet_v3_lrge"))


def test_unknown_task_suggests_the_closest():
    cfg = Config(task="segmentaton")
    with pytest.raises(ConfigError, match=r"unknown task 'segmentaton' \(did you mean 'segmentation'\?\)"):
        build_task(cfg)
    assert TASKS.get("segmentation").__name__ == "SegmentationTask"


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
    with pytest.raises(ConfigError, match=r"unknown widget 'smal' \(did you mean 'small'\?\); available: small, small_alias"):
        reg.get("smal")
    reg.unregister("small_alias")
    assert reg.names() == ["small"]
