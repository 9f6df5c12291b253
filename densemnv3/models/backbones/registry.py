"""Backbone registry: swap backbones by name, and let downstream repos add their own."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from densemnv3.errors import ConfigError
from densemnv3.utils.registry import Registry

BackboneBuilder = Callable[..., nn.Module]

#: Every backbone by name; the families register themselves when ``backbones`` is imported.
BACKBONES: Registry[BackboneBuilder] = Registry("backbone")


def register_backbone(name: str, builder: BackboneBuilder | None = None, *, overwrite: bool = False):
    """Register ``builder`` under ``name`` (also usable as a decorator).

    A builder takes keyword arguments (at least ``output_stride``, ``out_features`` and
    ``frozen_bn``) and returns a module whose ``forward`` returns ``dict[str, Tensor]`` and whose
    ``feature_info[tap]`` has ``.channels`` and ``.stride`` — e.g. a
    :class:`~densemnv3.models.backbones.base.FeatureBackbone`.
    """
    add = BACKBONES.register(name, overwrite=overwrite)
    return add if builder is None else add(builder)


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`."""
    return BACKBONES.names()


def create_backbone(
    name: str,
    *,
    width_mult: float = 1.0,
    dilated: bool = False,
    reduced_tail: bool = False,
    output_stride: int | None = None,
    out_features: Sequence[str] = ("C4", "C5"),
    frozen_bn: bool = False,
    **kwargs,
) -> nn.Module:
    """Build backbone ``name`` returning the taps ``out_features`` as a dict.

    ``dilated=True`` is torchvision's switch and means ``output_stride=16``; ``output_stride=8``
    also dilates the stride-8 → 16 stage. ``reduced_tail`` halves the last stage (MobileNetV3 only).
    """
    builder = BACKBONES.get(name)
    if output_stride is None:
        output_stride = 16 if dilated else 32
    elif dilated and output_stride == 32:
        raise ConfigError("dilated=True contradicts output_stride=32; pass one or the other")
    if reduced_tail:
        kwargs["reduced_tail"] = True
    if width_mult != 1.0:
        kwargs["width_mult"] = width_mult
    try:
        backbone = builder(
            output_stride=output_stride, out_features=tuple(out_features), frozen_bn=frozen_bn,
            **kwargs,
        )
    except TypeError as err:
        raise ConfigError(f"backbone {name!r} does not take these options: {err}") from None
    if not hasattr(backbone, "feature_info"):
        raise TypeError(f"backbone builder {name!r} returned a module without `feature_info`")
    return backbone
