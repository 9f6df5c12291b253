"""Backbone registry: swap backbones by name, and let downstream repos add their own.

The backbone contract — all a head may rely on — is two things: ``forward(x)`` returns a
``dict[str, Tensor]`` of taps, and ``feature_info[tap]`` has ``.channels`` and ``.stride`` for
every tap it can return (``C1``..``C5``: the stage outputs at strides 2..32, those it reaches).
A builder takes ``output_stride``, ``out_features`` and ``frozen_bn`` keywords. Two capabilities
are optional, each with a fallback: ``set_out_features(taps)`` re-selects the taps (otherwise the
backbone is built again with ``out_features=taps``), and ``first_block_at_stride(s)`` names the
block opening a stride (LR-ASPP's torchvision-compatible low tap; otherwise the stage tap there).

Names with a prefix come from other libraries: ``tv:<model>`` (any torchvision classification
model) and ``timm:<model>`` (timm, an optional dependency).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import nn

from densemnv3.errors import ConfigError
from densemnv3.utils.registry import Registry

from .base import FeatureInfoMap

BackboneBuilder = Callable[..., nn.Module]
BackboneSpec = str | Mapping

#: Every backbone by name; the families register themselves when ``backbones`` is imported.
BACKBONES: Registry[BackboneBuilder] = Registry("backbone")

#: Name prefixes of the backbones that other libraries build.
PREFIXES = ("tv:", "timm:")


def backbone_spec(
    value: str | Mapping | None, key: str = "model.backbone"
) -> tuple[str, dict] | None:
    """``(name, options)`` of a backbone given as a name or ``{"name": ..., **options}``; None."""
    if value is None:
        return None
    options = {} if isinstance(value, str) else dict(value)
    name = value if isinstance(value, str) else options.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"{key}: expected a backbone name or a dict with 'name', e.g. "
            f"{{'name': 'tv:resnet18', 'output_stride': 16}}, got {value!r}"
        )
    return name, options


def require_backbone(backbone: BackboneSpec | None, model: str, head: str) -> BackboneSpec:
    """``backbone``, or the one :class:`ConfigError` of a generic model (``model``, ``head`` on
    any backbone) built without one."""
    if backbone is None:
        raise ConfigError(
            f"model.name {model!r} is {head} on the backbone model.backbone names, "
            "and none is set: e.g. --set model.backbone=mobilenet_v3_large "
            "(or tv:resnet18, timm:efficientnet_b0)"
        )
    return backbone


def register_backbone(
    name: str, builder: BackboneBuilder | None = None, *, overwrite: bool = False
):
    """Register ``builder`` under ``name`` (also usable as a decorator).

    A builder takes keyword arguments (at least ``output_stride``, ``out_features`` and
    ``frozen_bn``) and returns a module whose ``forward`` returns ``dict[str, Tensor]`` and whose
    ``feature_info[tap]`` has ``.channels`` and ``.stride`` — e.g. a
    :class:`~densemnv3.models.backbones.base.FeatureBackbone`. See this module's docstring for
    the optional capabilities a head uses when they are there.
    """
    add = BACKBONES.register(name, overwrite=overwrite)
    return add if builder is None else add(builder)


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`, besides ``tv:<model>`` and ``timm:<model>``."""
    return BACKBONES.names()


def _builder(name: str) -> BackboneBuilder:
    if name.startswith("tv:"):
        from .torchvision_models import torchvision_backbone

        return lambda **kwargs: torchvision_backbone(name.removeprefix("tv:"), **kwargs)
    if name.startswith("timm:"):
        from .timm_models import timm_backbone

        return lambda **kwargs: timm_backbone(name.removeprefix("timm:"), **kwargs)
    return BACKBONES.get(name)


def create_backbone(
    name: BackboneSpec,
    *,
    width_mult: float = 1.0,
    dilated: bool = False,
    reduced_tail: bool = False,
    output_stride: int | None = None,
    out_features: Sequence[str] | None = None,
    frozen_bn: bool = False,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **kwargs,
) -> nn.Module:
    """Build backbone ``name`` returning the taps ``out_features`` as a dict.

    ``name`` is a registered name, ``tv:<torchvision model>``, ``timm:<timm model>``, or a dict
    ``{"name": ..., **options}`` (as ``model.backbone`` in a config). ``out_features`` defaults to
    the builder's own (``("C4", "C5")`` for the native families, every stage for ``tv:``/``timm:``).
    ``dilated=True`` is torchvision's switch and means ``output_stride=16``; ``output_stride=8``
    also dilates the stride-8 → 16 stage. ``reduced_tail`` halves the last stage (MobileNetV3 only).

    ``features_only=True`` (timm's interface): a module whose ``forward`` returns a list of the
    stage taps ``out_indices`` (indices into the stages it offers, default all), in that order,
    with ``feature_info.channels()`` / ``.reduction()`` in the same order.
    """
    label, options = backbone_spec(name, key="backbone")
    given = {
        "width_mult": (width_mult, 1.0),
        "dilated": (dilated, False),
        "reduced_tail": (reduced_tail, False),
        "output_stride": (output_stride, None),
        "frozen_bn": (frozen_bn, False),
    }
    for key in [k for k in options if k in given or k in kwargs]:
        value, default = given.get(key, (kwargs.get(key), None))
        if value not in (default, options[key]):
            raise ConfigError(
                f"backbone {label!r}: {key}={options[key]!r} in its options "
                f"contradicts {key}={value!r}; give it once"
            )
        if key in given:
            given[key] = (options.pop(key), default)
    width_mult, dilated, reduced_tail, output_stride, frozen_bn = (v for v, _ in given.values())
    kwargs = {**options, **kwargs}
    if out_indices is not None and not features_only:
        raise ConfigError(
            "out_indices needs features_only=True (timm's interface); or pick taps "
            "by name with out_features=('C3', 'C5')"
        )
    builder = _builder(label)
    if output_stride is None:
        output_stride = 16 if dilated else 32
    elif dilated and output_stride == 32:
        raise ConfigError("dilated=True contradicts output_stride=32; pass one or the other")
    if reduced_tail:
        kwargs["reduced_tail"] = True
    if width_mult != 1.0:
        kwargs["width_mult"] = width_mult
    if out_features is not None:
        if isinstance(out_features, str | int):
            out_features = (out_features,)
        kwargs["out_features"] = tuple(out_features)

    def build(**extra) -> nn.Module:
        try:
            return builder(output_stride=output_stride, frozen_bn=frozen_bn, **{**kwargs, **extra})
        except TypeError as err:
            raise ConfigError(f"backbone {label!r} does not take these options: {err}") from None
        except ConfigError as err:
            raise ConfigError(str(err).replace("this backbone", f"backbone {label!r}")) from None

    backbone = build()
    if not hasattr(backbone, "feature_info"):
        raise TypeError(f"backbone builder {label!r} returned a module without `feature_info`")
    if features_only:
        levels = FeatureInfoMap(backbone.feature_info).levels()
        indices = range(len(levels)) if out_indices is None else out_indices
        bad = [i for i in indices if not isinstance(i, int) or not 0 <= i < len(levels)]
        if bad:
            offered = ", ".join(f"{i}={t}" for i, t in enumerate(levels))
            raise ConfigError(f"out_indices {tuple(indices)}: backbone {label!r} offers {offered}")
        taps = [levels[i] for i in indices]
        return FeatureList(
            select_taps(backbone, taps, lambda t: build(out_features=tuple(t))), taps
        )
    return backbone


def select_taps(
    backbone: nn.Module, taps: Sequence[str], rebuild: Callable[[Sequence[str]], nn.Module]
) -> nn.Module:
    """``backbone`` returning ``taps``: re-selected in place where it can (``set_out_features``),
    else the one ``rebuild(taps)`` builds (the contract's fallback)."""
    if hasattr(backbone, "set_out_features"):
        backbone.set_out_features(tuple(taps))
        return backbone
    return rebuild(tuple(taps))


class FeatureList(nn.Module):
    """timm's ``features_only`` interface: ``forward`` returns the taps as a list, in order."""

    def __init__(self, backbone: nn.Module, taps: Sequence[str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps = tuple(taps)
        self.feature_info = FeatureInfoMap(
            ((t, backbone.feature_info[t]) for t in taps), selected=taps
        )

    def forward(self, x):
        out = self.backbone(x)
        return [out[t] for t in self.taps]
