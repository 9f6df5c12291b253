"""The feature-tap machinery shared by the native backbones (MobileNets, ShuffleNetV2).

A backbone is a ``features`` :class:`~torch.nn.Sequential` (index-compatible with torchvision's,
so checkpoints load by key) plus a description of its blocks. From that description
:class:`FeatureBackbone` derives ``feature_info`` — channels and stride of every tap it can
produce — converts strides to dilation for ``output_stride`` 8/16, and returns the requested taps
from ``forward`` as a dict.

Taps:
- ``C1`` .. ``C5``: the output just before each downsampling (strides 2, 4, 8, 16, 32 — capped at
  ``output_stride`` when dilated). ``C5`` is the last layer of ``features``.
- ``C4_expand``: the expansion (1×1 conv) output of the block that opens stride 32, before its
  strided depthwise conv (SSDLite's first map). Only for inverted-residual families.
- ``features.<i>``: the output of ``features[i]`` (any block; LR-ASPP taps ``features.4``).

:class:`FeatureInfoMap` (every backbone's ``feature_info``), :func:`check_taps` and
:func:`probe` are shared with the adapters of other libraries' models (``torchvision_models.py``,
``timm_models.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from densemnv3.errors import ConfigError, did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class FeatureInfo:
    """What a tap produces: ``channels`` and ``stride`` (input pixels per output pixel)."""

    channels: int
    stride: int
    module: str  # the layer it is read from, e.g. "features.12" or "features.13.block.0"


#: The stage taps, in order; a backbone offers those its strides reach (ConvNeXt has no C1).
LEVELS = ("C1", "C2", "C3", "C4", "C5")


class FeatureInfoMap(dict):
    """``feature_info``: tap name -> :class:`FeatureInfo`, in order, plus timm's list view.

    ``channels()`` / ``reduction()`` / ``module_name()`` list the ``selected`` taps (default: the
    stage taps ``C1``..``C5`` the backbone offers, i.e. timm's levels), so code written against
    timm's ``feature_info.channels()`` runs unchanged.
    """

    def __init__(self, items=(), selected: Sequence[str] | None = None) -> None:
        super().__init__(items)
        self.selected = None if selected is None else tuple(selected)

    def levels(self) -> list[str]:
        """The stage taps this backbone offers, shallowest first."""
        return [t for t in LEVELS if t in self]

    def _taps(self, taps: Sequence[str] | None) -> Sequence[str]:
        return (
            taps
            if taps is not None
            else self.selected
            if self.selected is not None
            else self.levels()
        )

    def channels(self, taps: Sequence[str] | None = None) -> list[int]:
        return [self[t].channels for t in self._taps(taps)]

    def reduction(self, taps: Sequence[str] | None = None) -> list[int]:
        return [self[t].stride for t in self._taps(taps)]

    def module_name(self, taps: Sequence[str] | None = None) -> list[str]:
        return [self[t].module for t in self._taps(taps)]


def check_adapter_options(label: str, output_stride: int, wants_download: bool) -> None:
    """What a backbone from another library (``tv:``, ``timm:``) checks first: ``output_stride``
    is 8, 16 or 32, and no pretrained weights are asked for (nothing is downloaded)."""
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    if wants_download:
        raise ConfigError(
            f"backbone {label!r}: weights are never downloaded; give a local file of "
            f"the classification model as model.backbone_weights instead"
        )


def probe(forward: Callable[[Tensor], T], size: tuple[int, int], label: str) -> T:
    """``forward`` of a zero ``(1, 3, *size)`` batch, how the adapters (``tv:``, ``timm:``) measure
    a library's model; its failure is one :class:`ConfigError` naming backbone ``label``."""
    try:
        return forward(torch.zeros(1, 3, *size))
    except Exception as err:  # noqa: BLE001 - the model's own error, reworded
        raise ConfigError(
            f"backbone {label!r} fails on a {size[0]}x{size[1]} input ({type(err).__name__}: {err})"
        ) from None


def describe_taps(feature_info: Mapping[str, FeatureInfo]) -> str:
    """``"C1, C2, C3, C4, C5, C4_expand, features.0 .. features.16"``: every tap, briefly."""
    levels = [t for t in LEVELS if t in feature_info]
    blocks = [t for t in feature_info if t.startswith("features.")]
    others = [t for t in feature_info if t not in levels and t not in blocks]
    span = [f"{blocks[0]} .. {blocks[-1]}"] if len(blocks) > 2 else blocks
    return ", ".join([*levels, *others, *span])


def check_taps(
    out_features: Sequence[str] | str | None,
    feature_info: Mapping[str, FeatureInfo],
    backbone: str = "this backbone",
) -> tuple[str, ...]:
    """``out_features`` as a tuple of known tap names (``None``: the stage taps); an integer or
    unknown tap raises one :class:`ConfigError` listing the valid ones."""
    if out_features is None:
        return tuple(t for t in LEVELS if t in feature_info)
    if isinstance(out_features, str | int):
        out_features = (out_features,)
    valid = describe_taps(feature_info)
    for name in out_features:
        if not isinstance(name, str):
            raise ConfigError(
                f"out_features takes tap names, got {name!r}; {backbone} offers {valid} (for "
                f"timm-style level indices use create_backbone(..., features_only=True, "
                f"out_indices=(...)))"
            )
        if name not in feature_info:
            raise ConfigError(
                f"unknown feature tap {name!r}{did_you_mean(name, feature_info)}; "
                f"{backbone} offers {valid}"
            )
    return tuple(out_features)


@dataclass(frozen=True)
class BlockSpec:
    """One entry of ``features``: its output channels, whether it halves the resolution, and
    (inverted residuals only) its expansion channels."""

    channels: int
    downsamples: bool
    expand_channels: int | None = None


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below it and never more than
    10 % down (the MobileNet channel rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def dilate_(module: nn.Module, dilation: int) -> None:
    """Turn every spatial conv of ``module`` into a stride-1 conv with ``dilation`` (in place)."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size[0] > 1:
            conv.stride = (1, 1)
            conv.dilation = (dilation, dilation)
            conv.padding = tuple((k - 1) // 2 * dilation for k in conv.kernel_size)


def freeze_batchnorm_(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below ``module`` by a FrozenBatchNorm2d with the same eps."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm_(child)
    return module


class FeatureBackbone(nn.Module):
    """A MobileNet ``features`` stack that returns named taps.

    Args:
        features: the layers, in order (stem, blocks, last conv).
        blocks: one :class:`BlockSpec` per entry of ``features``.
        split_expand: for inverted residuals, ``f(block, x) -> (expanded, out)`` running ``block``
            while exposing its expansion output; ``None`` if the family has no expansion.
        output_stride: 8, 16 or 32; strides past it become dilation.
        out_features: the taps ``forward`` returns.
        frozen_bn: replace BatchNorm by FrozenBatchNorm2d.
    """

    #: Checkpoint keys that may be present but are not used (the classifier of a torchvision model).
    torchvision_ignored_prefixes: tuple[str, ...] = ("classifier.",)

    def __init__(
        self,
        features: nn.Sequential,
        blocks: Sequence[BlockSpec],
        *,
        split_expand: Callable[[nn.Module, Tensor], tuple[Tensor, Tensor]] | None,
        output_stride: int = 32,
        out_features: Sequence[str] = ("C4", "C5"),
        frozen_bn: bool = False,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        if len(blocks) != len(features):
            raise ValueError("one BlockSpec per layer of `features` is required")
        self.features = features
        self.output_stride = output_stride
        self._split_expand = split_expand
        self.feature_info = self._build_feature_info(
            blocks, output_stride, split_expand is not None
        )
        if frozen_bn:
            freeze_batchnorm_(self)
        self.out_features: tuple[str, ...] = ()
        self.set_out_features(out_features)

    def _build_feature_info(
        self, blocks: Sequence[BlockSpec], output_stride: int, has_expand: bool
    ) -> FeatureInfoMap:
        info: dict[str, FeatureInfo] = {}
        stride = dilation = 1
        level_end: dict[int, int] = {}  # log2(nominal stride) -> index of the last layer there
        nominal = 1
        for i, spec in enumerate(blocks):
            if spec.downsamples:
                nominal *= 2
                if stride < output_stride:
                    stride *= 2
                else:
                    dilation *= 2
            if dilation > 1:
                dilate_(self.features[i], dilation)
            level_end[nominal.bit_length() - 1] = i
            info[f"features.{i}"] = FeatureInfo(spec.channels, stride, f"features.{i}")
        for level in range(1, 6):
            i = level_end[level]
            info[f"C{level}"] = info[f"features.{i}"]
        if has_expand:
            opener = level_end[4] + 1  # the block that opens nominal stride 32
            expand = blocks[opener].expand_channels
            if expand is not None:
                c4_stride = info["C4"].stride
                info["C4_expand"] = FeatureInfo(expand, c4_stride, f"features.{opener}.expand")
        return FeatureInfoMap((k, info[k]) for k in sorted(info, key=_tap_order))

    def set_out_features(self, out_features: Sequence[str]) -> None:
        """Choose the taps ``forward`` returns (layers past the last one are skipped)."""
        self.out_features = check_taps(out_features, self.feature_info)
        self._taps_at: dict[int, list[str]] = {}
        self._expand_at = -1
        for name in self.out_features:
            if name == "C4_expand":
                self._expand_at = int(self.feature_info[name].module.split(".")[1])
            else:
                index = int(self.feature_info[name].module.split(".")[1])
                self._taps_at.setdefault(index, []).append(name)
        last_tap = max([*self._taps_at, self._expand_at])
        self._num_layers = last_tap + 1

    @property
    def channels(self) -> dict[str, int]:
        """Channels of each returned tap, in order."""
        return {name: self.feature_info[name].channels for name in self.out_features}

    @property
    def strides(self) -> dict[str, int]:
        """Stride of each returned tap, in order."""
        return {name: self.feature_info[name].stride for name in self.out_features}

    def first_block_at_stride(self, stride: int) -> str:
        """The ``features.<i>`` tap of the first layer whose output has ``stride``."""
        for name, info in self.feature_info.items():
            if name.startswith("features.") and info.stride == stride:
                return name
        raise ConfigError(f"this backbone has no layer at stride {stride}")

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for i in range(self._num_layers):
            layer = self.features[i]
            if i == self._expand_at:
                out["C4_expand"], x = self._split_expand(layer, x)
            else:
                x = layer(x)
            for name in self._taps_at.get(i, ()):
                out[name] = x
        return {name: out[name] for name in self.out_features}


class InvertedResidualBase(nn.Module):
    """The forward passes the inverted-residual blocks (MobileNetV2, V3) share: over
    :attr:`layers` (the block's Sequential, under torchvision's name for it), adding the input
    when ``use_res_connect``; :meth:`forward_with_expansion` also returns the output of the 1×1
    expansion (the first layer) where ``has_expansion``."""

    has_expansion: bool
    use_res_connect: bool

    @property
    def layers(self) -> nn.Sequential:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(x)
        return out + x if self.use_res_connect else out

    def forward_with_expansion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(expansion output, block output)``; the first is SSDLite's ``C4_expand`` map (a
        :class:`FeatureBackbone`'s ``split_expand``)."""
        if not self.has_expansion:
            raise ValueError("this block has no expansion conv")
        expanded = self.layers[0](x)
        out = self.layers[1:](expanded)
        return expanded, out + x if self.use_res_connect else out


class LibraryBackbone(nn.Module):
    """Another library's model (``body``) behind the tap interface: the base of the ``tv:`` and
    ``timm:`` adapters. Subclasses say how ``body`` yields every stage tap (:meth:`stage_maps`).

    ``ignored``: the top-level modules of the library's model that ``body`` leaves out (its
    classifier); a checkpoint's keys under ``body.<module>.`` go unused. A subclass may name its
    unused keys as a class attribute instead.
    """

    torchvision_ignored_prefixes: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        body: nn.Module,
        feature_info: FeatureInfoMap,
        *,
        output_stride: int,
        out_features: Sequence[str] | None,
        ignored: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.feature_info = feature_info
        self.output_stride = output_stride
        if ignored:
            self.torchvision_ignored_prefixes = tuple(f"body.{p}." for p in ignored)
        self.set_out_features(out_features)

    def set_out_features(self, out_features: Sequence[str] | None) -> None:
        """Choose the taps ``forward`` returns (``None``: every stage tap)."""
        self.out_features = check_taps(out_features, self.feature_info, f"backbone {self.name!r}")

    def stage_maps(self, x: Tensor) -> Mapping[str, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        maps = self.stage_maps(x)
        return {tap: maps[tap] for tap in self.out_features}


def _tap_order(name: str) -> tuple[int, int]:
    if name.startswith("features."):
        return (1, int(name.split(".")[1]))
    return (0, {"C1": 1, "C2": 2, "C3": 3, "C4": 4, "C4_expand": 5, "C5": 6}[name])
