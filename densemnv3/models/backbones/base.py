"""The feature-tap machinery shared by every MobileNet backbone.

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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from densemnv3.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class FeatureInfo:
    """What a tap produces: ``channels`` and ``stride`` (input pixels per output pixel)."""

    channels: int
    stride: int
    module: str  # the layer it is read from, e.g. "features.12" or "features.13.block.0"


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
        self.feature_info = self._build_feature_info(blocks, output_stride, split_expand is not None)
        if frozen_bn:
            freeze_batchnorm_(self)
        self.out_features: tuple[str, ...] = ()
        self.set_out_features(out_features)

    def _build_feature_info(
        self, blocks: Sequence[BlockSpec], output_stride: int, has_expand: bool
    ) -> dict[str, FeatureInfo]:
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
        return {k: info[k] for k in sorted(info, key=_tap_order)}

    def set_out_features(self, out_features: Sequence[str]) -> None:
        """Choose the taps ``forward`` returns (layers past the last one are skipped)."""
        if isinstance(out_features, str):
            out_features = (out_features,)
        for name in out_features:
            if name not in self.feature_info:
                raise ConfigError(
                    f"unknown feature tap {name!r}{did_you_mean(name, self.feature_info)}; "
                    f"this backbone offers {', '.join(self.feature_info)}"
                )
        self.out_features = tuple(out_features)
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


def _tap_order(name: str) -> tuple[int, int]:
    if name.startswith("features."):
        return (1, int(name.split(".")[1]))
    return (0, {"C1": 1, "C2": 2, "C3": 3, "C4": 4, "C4_expand": 5, "C5": 6}[name])
