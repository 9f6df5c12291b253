"""Channel widths a model can be shrunk along, and the surgery that shrinks them (NetAdapt).

A *unit* is one channel space: every tensor dimension that must keep the same channels for the
model to compute. On a MobileNetV3 backbone and its heads there are four kinds: ``expansion``, a
block's expanded width up to its projection (``backbone.features.<i>.expand``); ``chain``, the
width shared through a residual chain and the taps that carry it into the heads
(``backbone.features.<i>``, named after the layer that opens it; ``C5`` is a chain of one);
``head``, LR-ASPP's ``head.cbr`` and SSDLite's ``extra.<k>.mid`` and ``extra.<k>``; ``squeeze``, a
squeeze-excitation's bottleneck (``<unit>.se``), never shrunk on its own but kept at
``make_divisible(width / 4)`` of the unit it squeezes.

:func:`shrink_` keeps the channels it is given (NetAdapt keeps the most important, see
:func:`channel_importance`) in every member of a unit, so a channel whose producing weights are all
zero is removed without changing any output. :func:`set_widths_` gives a model the widths a config
records (``model.widths``), which is how :func:`~densemnv3.models.build_model` rebuilds a shrunk
model before its checkpoint loads into it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d, SqueezeExcitation

from densemnv3.config.schema import IMPORTANCE
from densemnv3.errors import ConfigError, did_you_mean

from .backbones.base import FeatureBackbone, make_divisible
from .backbones.mobilenet_v3 import InvertedResidual

__all__ = [
    "Unit",
    "channel_importance",
    "set_widths_",
    "shrink_",
    "widths_of",
    "width_units",
]


@dataclass
class Unit:
    """One channel space: its ``members`` are ``(module path, role)`` with role ``out`` (a conv's
    output channels), ``in`` (a conv's input channels), ``depthwise`` (a conv with one group per
    channel) or ``norm`` (a BatchNorm)."""

    name: str
    kind: str
    width: int = 0
    members: list[tuple[str, str]] = field(default_factory=list)
    squeeze: str | None = None  # the squeeze-excitation bottleneck that follows this unit


def _space(units: dict[str, Unit], name: str, kind: str, *members: tuple[str, str]) -> Unit:
    units[name] = Unit(name, kind, members=list(members))
    return units[name]


def _conv_block(path: str) -> list[tuple[str, str]]:
    """The output members of a ``Conv2dNormActivation`` at ``path``."""
    return [(f"{path}.0", "out"), (f"{path}.1", "norm")]


def _backbone_units(backbone: nn.Module, prefix: str, units: dict[str, Unit]) -> dict[str, Unit]:
    """The units of a MobileNetV3 ``FeatureBackbone``; returns tap name -> the unit it carries."""
    features = getattr(backbone, "features", None)
    if not (
        isinstance(backbone, FeatureBackbone)
        and features is not None
        and all(isinstance(b, InvertedResidual) for b in list(features)[1:-1])
    ):
        raise ConfigError(
            f"channel widths can be changed on a MobileNetV3 backbone only; this "
            f"model's is a {type(backbone).__name__}"
        )
    p = f"{prefix}features"
    current = _space(units, f"{p}.0", "chain", *_conv_block(f"{p}.0"))
    out_of: dict[str, Unit] = {"0": current}
    for i, block in enumerate(list(features)[1:-1], start=1):
        path, j = f"{p}.{i}.block", 0
        inner = current
        if block.has_expansion:
            current.members.append((f"{path}.0.0", "in"))
            inner = _space(units, f"{p}.{i}.expand", "expansion", *_conv_block(f"{path}.0"))
            out_of[f"{i}.expand"] = inner
            j = 1
        inner.members += [(f"{path}.{j}.0", "depthwise"), (f"{path}.{j}.1", "norm")]
        j += 1
        if isinstance(block.block[j], SqueezeExcitation):
            inner.members += [(f"{path}.{j}.fc1", "in"), (f"{path}.{j}.fc2", "out")]
            inner.squeeze = f"{inner.name}.se"
            _space(
                units,
                inner.squeeze,
                "squeeze",
                (f"{path}.{j}.fc1", "out"),
                (f"{path}.{j}.fc2", "in"),
            )
            j += 1
        inner.members.append((f"{path}.{j}.0", "in"))
        if block.use_res_connect:
            current.members += _conv_block(f"{path}.{j}")
        else:
            current = _space(units, f"{p}.{i}", "chain", *_conv_block(f"{path}.{j}"))
        out_of[str(i)] = current
    last = len(features) - 1
    current.members.append((f"{p}.{last}.0", "in"))
    out_of[str(last)] = _space(units, f"{p}.{last}", "chain", *_conv_block(f"{p}.{last}"))
    return {
        tap: out_of[info.module.removeprefix("features.")]
        for tap, info in backbone.feature_info.items()
    }


def _lraspp_units(prefix: str, low: Unit, high: Unit, units: dict[str, Unit]) -> None:
    low.members.append((f"{prefix}low_classifier", "in"))
    high.members += [(f"{prefix}cbr.0", "in"), (f"{prefix}scale.1", "in")]
    _space(
        units,
        f"{prefix}cbr",
        "head",
        (f"{prefix}cbr.0", "out"),
        (f"{prefix}cbr.1", "norm"),
        (f"{prefix}scale.1", "out"),
        (f"{prefix}high_classifier", "in"),
    )


def _prediction_members(prefix: str, index: int) -> list[tuple[str, str]]:
    return [
        member
        for head in ("classification", "regression")
        for member in (
            (f"{prefix}head.{head}.{index}.0.0", "depthwise"),
            (f"{prefix}head.{head}.{index}.0.1", "norm"),
            (f"{prefix}head.{head}.{index}.1", "in"),
        )
    ]


def _ssdlite_units(
    model: nn.Module, prefix: str, taps: Mapping[str, Unit], units: dict[str, Unit]
) -> None:
    for index, tap in enumerate(model.taps):
        taps[tap].members += _prediction_members(prefix, index)
    previous = taps[model.taps[-1]]
    for k in range(len(model.extra)):
        e = f"{prefix}extra.{k}"
        previous.members.append((f"{e}.0.0", "in"))
        _space(
            units,
            f"{e}.mid",
            "head",
            *_conv_block(f"{e}.0"),
            (f"{e}.1.0", "depthwise"),
            (f"{e}.1.1", "norm"),
            (f"{e}.2.0", "in"),
        )
        previous = _space(
            units, e, "head", *_conv_block(f"{e}.2"), *_prediction_members(prefix, k + 2)
        )


def width_units(model: nn.Module) -> dict[str, Unit]:
    """Every unit of ``model`` (LR-ASPP, SSDLite or the multi-task model on a MobileNetV3), in
    model order, with its current width; a :class:`ConfigError` for any other model."""
    units: dict[str, Unit] = {}
    task = getattr(model, "task", None)
    if task == "segmentation":
        taps = _backbone_units(model.backbone, "backbone.", units)
        _lraspp_units("head.", taps[model.low_tap], taps[model.high_tap], units)
    elif task == "detection":
        _ssdlite_units(model, "", _backbone_units(model.backbone, "backbone.", units), units)
    elif task == "multitask":
        taps = _backbone_units(model.det.backbone, "det.backbone.", units)
        _ssdlite_units(model.det, "det.", taps, units)
        _lraspp_units("seg.", taps[model.low_tap], taps[model.high_tap], units)
    else:
        raise ConfigError(
            f"channel widths can be changed on LR-ASPP, SSDLite and multi-task models, "
            f"not on a {type(model).__name__}"
        )
    for unit in units.values():
        unit.width = _width(model.get_submodule(unit.members[0][0]), unit.members[0][1])
    return units


def _width(module: nn.Module, role: str) -> int:
    if role == "in":
        return module.in_channels
    if role == "norm":
        return module.weight.shape[0]
    return module.out_channels


def widths_of(model: nn.Module) -> dict[str, int]:
    """Unit name -> its current width."""
    return {name: unit.width for name, unit in width_units(model).items()}


# ----------------------------------------------------------------------------- surgery


def _take(module: nn.Module, name: str, keep: Tensor, dim: int = 0) -> None:
    tensor = getattr(module, name)
    if tensor is None:
        return
    kept = tensor.detach().index_select(dim, keep.to(tensor.device)).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, name, nn.Parameter(kept, requires_grad=tensor.requires_grad))
    else:
        setattr(module, name, kept)  # a buffer stays a buffer


def _cut(module: nn.Module, role: str, keep: Tensor) -> None:
    n = len(keep)
    if role == "norm":
        if not isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            raise TypeError(f"expected a BatchNorm, got {type(module).__name__}")
        for name in ("weight", "bias", "running_mean", "running_var"):
            _take(module, name, keep)
        if isinstance(module, nn.BatchNorm2d):
            module.num_features = n
        return
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"expected a Conv2d, got {type(module).__name__}")
    if role == "in":
        if module.groups != 1:
            raise TypeError("a grouped conv's input channels are cut as 'depthwise'")
        _take(module, "weight", keep, dim=1)
        module.in_channels = n
        return
    _take(module, "weight", keep)
    _take(module, "bias", keep)
    module.out_channels = n
    if role == "depthwise":
        module.in_channels = module.groups = n


def _refresh_feature_info(model: nn.Module) -> None:
    """Each backbone tap's channels read again from its layers, after a surgery."""
    for backbone in (m for m in model.modules() if isinstance(m, FeatureBackbone)):
        for tap, info in backbone.feature_info.items():
            parts = info.module.split(".")
            layer = backbone.features[int(parts[1])]
            if parts[-1] == "expand":
                channels = layer.block[0][0].out_channels
            else:
                channels = [m for m in layer.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
            backbone.feature_info[tap] = dataclasses.replace(info, channels=channels)


def _apply(model: nn.Module, unit: Unit, keep: Tensor) -> None:
    for path, role in unit.members:
        _cut(model.get_submodule(path), role, keep)


def shrink_(
    model: nn.Module, name: str, keep: Tensor | int, *, importance: str = "l2"
) -> nn.Module:
    """Keep the channels ``keep`` (sorted indices, or a count: that many of the most important by
    ``importance``) of unit ``name`` of ``model``, in place; its squeeze-excitation follows, keeping
    its most important squeeze channels (weight L2 norm). Returns ``model``."""
    units = width_units(model)
    unit = _unit(units, name)
    if isinstance(keep, int):
        if not 0 < keep <= unit.width:
            raise ConfigError(f"{name}: cannot keep {keep} of its {unit.width} channels")
        keep = top_channels(channel_importance(model, unit, importance), keep)
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    if not 0 < len(keep) <= unit.width or int(keep[-1]) >= unit.width:
        raise ConfigError(f"{name}: cannot keep {len(keep)} of its {unit.width} channels")
    _apply(model, unit, keep)
    if unit.squeeze is not None:
        squeeze = units[unit.squeeze]
        width = min(squeeze.width, make_divisible(len(keep) // 4, 8))
        if width < squeeze.width:
            _apply(
                model,
                squeeze,
                top_channels(channel_importance(model, squeeze, "l2"), width).sort().values,
            )
    _refresh_feature_info(model)
    return model


def set_widths_(model: nn.Module, widths: Mapping[str, int]) -> nn.Module:
    """Give the units ``widths`` names these widths (their first channels: the weights are loaded
    next), in place — the architecture a shrunk model's ``model.widths`` records."""
    units = width_units(model)
    for name, width in widths.items():
        unit = _unit(units, name, key="model.widths")
        if not isinstance(width, int) or not 0 < width <= unit.width:
            raise ConfigError(
                f"model.widths[{name!r}] = {width!r}: a width from 1 to {unit.width} is needed"
            )
        if width < unit.width:
            _apply(model, unit, torch.arange(width))
    _refresh_feature_info(model)
    return model


def _unit(units: Mapping[str, Unit], name: str, key: str = "unit") -> Unit:
    if name not in units:
        raise ConfigError(
            f"{key} {name!r}: this model has no such channel width{did_you_mean(name, units)}; "
            f"its widths are {', '.join(units)}"
        )
    return units[name]


# ----------------------------------------------------------------------------- importance


@torch.no_grad()
def channel_importance(model: nn.Module, unit: Unit, method: str = "l2") -> Tensor:
    """One score per channel of ``unit``: ``l2``, the L2 norm of every weight producing the channel
    (its filters in the ``out`` and ``depthwise`` convs and its BatchNorm scale and shift, as the
    NetAdapt paper keeps the filters of largest norm); ``bn``, the sum of its BatchNorm scales'
    magnitudes (network slimming)."""
    if method not in IMPORTANCE:
        raise ConfigError(f"importance must be one of {', '.join(IMPORTANCE)}, got {method!r}")
    score = torch.zeros(unit.width, dtype=torch.float64)
    for path, role in unit.members:
        module = model.get_submodule(path)
        if role == "norm":
            if method == "bn":
                score += module.weight.detach().abs().double().cpu()
            else:
                score += (
                    module.weight.detach().double().cpu() ** 2
                    + module.bias.detach().double().cpu() ** 2
                )
        elif role in ("out", "depthwise") and method == "l2":
            score += module.weight.detach().double().cpu().flatten(1).pow(2).sum(1)
            if module.bias is not None:
                score += module.bias.detach().double().cpu() ** 2
    return score.sqrt() if method == "l2" else score


def top_channels(score: Tensor, count: int) -> Tensor:
    """The ``count`` channels of highest ``score`` (ties: the lower index), sorted."""
    order = sorted(range(len(score)), key=lambda c: (-float(score[c]), c))
    return torch.tensor(sorted(order[:count]), dtype=torch.long)
