"""ShuffleNetV2 backbone (Ma et al., 2018): torchvision's network as a ``features`` stack with taps.

torchvision's ``shufflenet_v2_x*`` builders make the layers (public API, no private module); their
``conv1``, ``maxpool``, the blocks of ``stage2``..``stage4`` and ``conv5`` become ``features`` in
that order, so taps, ``output_stride`` and ``frozen_bn`` work as for the MobileNets. Torchvision's
checkpoints load by renaming their keys
(:meth:`ShuffleNetV2Backbone.convert_torchvision_state_dict`); the outputs are then identical to
torchvision's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torchvision
from torch import Tensor, nn

from densemnv3.errors import ConfigError

from .base import BlockSpec, FeatureBackbone
from .registry import register_backbone

#: torchvision's builder suffix for each width multiplier.
WIDTHS = {0.5: "x0_5", 1.0: "x1_0", 1.5: "x1_5", 2.0: "x2_0"}

_STAGE_KEY = re.compile(r"^stage([234])\.(\d+)\.")


class ShuffleNetV2Backbone(FeatureBackbone):
    """A :class:`FeatureBackbone` that also reads torchvision's ShuffleNetV2 checkpoint keys."""

    torchvision_ignored_prefixes = ("fc.",)

    def __init__(
        self,
        features: nn.Sequential,
        blocks: Sequence[BlockSpec],
        stage_sizes: Sequence[int],
        **kwargs,
    ) -> None:
        super().__init__(features, blocks, split_expand=None, **kwargs)
        self.stage_sizes = tuple(stage_sizes)

    def convert_torchvision_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``conv1.`` → ``features.0.``, ``stage<s>.<j>.`` → ``features.<2 + blocks before + j>.``,
        ``conv5.`` → the last layer; other keys (``fc.``, ours) pass unchanged."""
        first = {2: 2, 3: 2 + self.stage_sizes[0], 4: 2 + sum(self.stage_sizes[:2])}
        last = len(self.features) - 1
        out = {}
        for key, value in state.items():
            if match := _STAGE_KEY.match(key):
                index = first[int(match.group(1))] + int(match.group(2))
                key = f"features.{index}." + key[match.end() :]
            elif key.startswith("conv1."):
                key = "features.0." + key.removeprefix("conv1.")
            elif key.startswith("conv5."):
                key = f"features.{last}." + key.removeprefix("conv5.")
            out[key] = value
        return out


def _spec(layer: nn.Module) -> BlockSpec:
    """conv1, a block (output: both halves, i.e. twice branch2's channels) or conv5."""
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    downsamples = any(c.stride[0] == 2 for c in convs)
    if hasattr(layer, "branch2"):
        branch2 = [m for m in layer.branch2.modules() if isinstance(m, nn.Conv2d)]
        return BlockSpec(2 * branch2[-1].out_channels, downsamples=downsamples)
    return BlockSpec(convs[-1].out_channels, downsamples=downsamples)


@register_backbone("shufflenet_v2")
def shufflenet_v2(
    *,
    width_mult: float = 1.0,
    output_stride: int = 32,
    out_features: Sequence[str] = ("C4", "C5"),
    frozen_bn: bool = False,
) -> ShuffleNetV2Backbone:
    """ShuffleNetV2 at width 0.5, 1.0, 1.5 or 2.0 (C5: ``conv5``, 1024 channels, 2048 at 2.0)."""
    if width_mult not in WIDTHS:
        raise ConfigError(
            f"shufflenet_v2 width_mult must be one of {sorted(WIDTHS)}, got {width_mult!r}"
        )
    net = getattr(torchvision.models, f"shufflenet_v2_{WIDTHS[width_mult]}")(weights=None)
    stages = [net.stage2, net.stage3, net.stage4]
    features = nn.Sequential(net.conv1, net.maxpool, *(b for s in stages for b in s), net.conv5)
    specs = [_spec(net.conv1), BlockSpec(_spec(net.conv1).channels, downsamples=True)]  # + max pool
    specs += [_spec(layer) for layer in features[2:]]
    return ShuffleNetV2Backbone(
        features,
        specs,
        [len(s) for s in stages],
        output_stride=output_stride,
        out_features=out_features,
        frozen_bn=frozen_bn,
    )
