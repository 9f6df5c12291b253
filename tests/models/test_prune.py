"""Channel surgery (NetAdapt's proposals): exact on every kind of unit, and a recorded architecture
rebuilt by build_model."""

import copy

import pytest
import torch

from densemnv3.config import ModelConfig
from densemnv3.errors import ConfigError
from densemnv3.models import build_model
from densemnv3.models.backbones.base import make_divisible
from densemnv3.models.prune import channel_importance, set_widths_, shrink_, width_units, widths_of

MODELS = {
    "lraspp-large": (
        ModelConfig(
            name="lraspp_mobilenet_v3_large", options={"reduced_tail": True, "output_stride": 32}
        ),
        (64, 128),
    ),
    "lraspp-small": (ModelConfig(name="lraspp_mobilenet_v3_small"), (64, 128)),
    "ssdlite-large": (ModelConfig(name="ssdlite320_mobilenet_v3_large", num_classes=5), (128, 128)),
    "ssdlite-small": (
        ModelConfig(
            name="ssdlite320_mobilenet_v3_small", num_classes=5, options={"reduced_tail": True}
        ),
        (128, 128),
    ),
    "multitask-small": (
        ModelConfig(name="multitask_mobilenet_v3_small", options={"det_num_classes": 5}),
        (128, 128),
    ),
}


def _model(key):
    torch.manual_seed(0)
    cfg, size = MODELS[key]
    model = build_model(cfg).eval()
    with torch.no_grad():  # BatchNorm that does something, so surgery must carry it over
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model, size


def _outputs(model, x):
    with torch.no_grad():
        if hasattr(
            model, "network"
        ):  # the multi-task model's tensors; an LR-ASPP's stride-8 logits
            out = model.network(x)
            return out[:3] if isinstance(out, tuple) else (out,)
        if hasattr(model, "predict_raw"):
            return model.predict_raw(x)[:2]
        return (model(x),)


def _zero_channels(model, unit, channels):
    """Every weight producing ``channels`` of ``unit`` zeroed (BatchNorm scale and shift too)."""
    with torch.no_grad():
        for path, role in unit.members:
            module = model.get_submodule(path)
            if role in ("out", "depthwise", "norm"):
                module.weight[channels] = 0
                if module.bias is not None:
                    module.bias[channels] = 0


@pytest.mark.parametrize("key", MODELS)
def test_removing_zero_channels_changes_no_output(key):
    model, size = _model(key)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    units = width_units(model)
    kinds = {u.kind for u in units.values()}
    assert {"expansion", "chain", "head"} <= kinds
    checked = 0
    for unit in units.values():
        if unit.kind == "squeeze" or unit.width <= 8:
            continue
        shrunk = copy.deepcopy(model)
        drop = torch.randperm(unit.width, generator=torch.Generator().manual_seed(checked))[:8]
        _zero_channels(shrunk, unit, drop)
        if unit.squeeze:  # the squeeze-excitation follows: its weakest channels are zero too
            squeeze = units[unit.squeeze]
            kept = min(squeeze.width, make_divisible((unit.width - 8) // 4, 8))
            _zero_channels(shrunk, squeeze, torch.arange(kept, squeeze.width))
        before = _outputs(shrunk, x)
        shrink_(
            shrunk, unit.name, unit.width - 8
        )  # the 8 channels of zero weight are the least important
        assert widths_of(shrunk)[unit.name] == unit.width - 8
        for a, b in zip(before, _outputs(shrunk, x)):
            assert a.shape == b.shape
            assert (a - b).abs().max().item() <= 1e-5, unit.name
        checked += 1
    assert checked >= 10


def test_units_of_mobilenet_v3_large_lraspp():
    model, _ = _model("lraspp-large")
    units = width_units(model)
    # the 40-channel chain of stride 8 runs through blocks 4-6 and feeds LR-ASPP's low classifier
    chain = units["backbone.features.4"]
    assert chain.kind == "chain" and chain.width == 40
    assert ("head.low_classifier", "in") in chain.members
    assert (
        "backbone.features.6.block.3.0",
        "out",
    ) in chain.members  # the residual block's projection
    assert units["backbone.features.13.expand"].width == 672
    assert units["backbone.features.13.expand"].squeeze == "backbone.features.13.expand.se"
    assert units["head.cbr"].width == 128
    assert units["backbone.features.16"].width == 480  # the reduced tail's last conv (C5)
    assert sum(u.kind == "expansion" for u in units.values()) == 14


def test_ssdlite_expansion_tap_reaches_the_first_prediction_blocks():
    model, size = _model("ssdlite-large")
    unit = width_units(model)["backbone.features.13.expand"]
    assert ("head.classification.0.1", "in") in unit.members
    shrink_(model, unit.name, 480)
    assert model.backbone.feature_info["C4_expand"].channels == 480
    cls, reg = _outputs(model, torch.randn(1, 3, *size))
    assert cls.shape[-1] == 5 and reg.shape[-1] == 4


def test_importance_orders_channels():
    model, _ = _model("lraspp-small")
    unit = width_units(model)["head.cbr"]
    _zero_channels(model, unit, torch.tensor([3, 7]))
    for method in ("l2", "bn"):
        score = channel_importance(model, unit, method)
        assert score.shape == (128,)
        assert set(score.argsort()[:2].tolist()) == {3, 7}


def test_recorded_widths_rebuild_the_architecture():
    model, size = _model("lraspp-small")
    shrink_(model, "backbone.features.5.expand", 160)
    shrink_(model, "backbone.features.1", 16 - 8)
    shrink_(model, "head.cbr", 96)
    widths = {
        k: v for k, v in widths_of(model).items() if v != widths_of(_model("lraspp-small")[0])[k]
    }
    assert widths["backbone.features.5.expand.se"] == 40  # followed: make_divisible(160 / 4)
    rebuilt = build_model(ModelConfig(name="lraspp_mobilenet_v3_small", widths=widths)).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_bad_widths_are_one_clear_error():
    with pytest.raises(ConfigError, match="no such channel width.*did you mean"):
        build_model(ModelConfig(name="lraspp_mobilenet_v3_small", widths={"head.cbrr": 64}))
    with pytest.raises(ConfigError, match="a width from 1 to 128"):
        build_model(ModelConfig(name="lraspp_mobilenet_v3_small", widths={"head.cbr": 256}))
    with pytest.raises(ConfigError, match="MobileNetV3 backbone only"):
        set_widths_(
            build_model(ModelConfig(name="lraspp", backbone="mobilenet_v2")), {"head.cbr": 64}
        )
