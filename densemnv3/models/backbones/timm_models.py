"""``timm:<name>``: any timm model as a backbone, through timm's own ``features_only``.

timm is an optional dependency (``pip install densemnv3[timm]``): it is imported only when a
``timm:`` backbone is built. ``timm.create_model(name, features_only=True, output_stride=...)``
makes the network; each level timm reports becomes ``C<k>`` by its stride (``C1`` at 2 ... ``C5``
at 32, ConvNeXt starting at ``C2``), and ``feature_info`` holds the channels and strides of one
probe forward pass, not of a table. timm refuses ``output_stride`` where a model cannot dilate;
that becomes one message. ``pretrained`` is refused (nothing is downloaded): load a local file of
the timm classification model with ``model.backbone_weights``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from densemnv3.errors import ConfigError

from .base import (
    LEVELS,
    FeatureInfo,
    FeatureInfoMap,
    LibraryBackbone,
    check_adapter_options,
    freeze_batchnorm_,
    probe,
)

PREFIX = "timm:"
PROBE_SIZE = (64, 96)


def import_timm():
    """The ``timm`` module, or a :class:`ConfigError` naming the extra that installs it."""
    try:
        import timm
    except ImportError:
        raise ConfigError(
            "timm: backbones need timm, an optional dependency: pip install "
            "'densemnv3[timm]' (or pip install timm)"
        ) from None
    return timm


class TimmBackbone(LibraryBackbone):
    """A timm ``features_only`` model (``body``) returning taps ``C<k>`` as a dict."""

    #: What a timm classification checkpoint holds past the features (its head), not loaded.
    torchvision_ignored_prefixes = (
        "fc.",
        "head.",
        "head_",
        "classifier.",
        "conv_head.",
        "bn2.",
        "global_pool.",
    )

    def stage_maps(self, x: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.feature_info, self.body(x)))

    def convert_torchvision_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A timm classification checkpoint's keys under ``body.`` (with the first ``.`` turned
        into ``_`` where timm's feature wrapper flattened a ``Sequential``, e.g. ``stages_0``)."""
        own = set(self.state_dict())
        out = {}
        for key, value in state.items():
            for candidate in (key, f"body.{key}", "body." + key.replace(".", "_", 1)):
                if candidate in own:
                    key = candidate
                    break
            out[key] = value
        return out


def timm_backbone(
    name: str,
    *,
    output_stride: int = 32,
    out_features: Sequence[str] | None = None,
    frozen_bn: bool = False,
    **model_kwargs,
) -> TimmBackbone:
    """``timm.create_model(name, pretrained=False, features_only=True, ...)``, taps by stride."""
    label = f"{PREFIX}{name}"
    check_adapter_options(
        label,
        output_stride,
        bool(model_kwargs.pop("pretrained", False) or model_kwargs.get("pretrained_cfg_overlay")),
    )
    timm = import_timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:4]}*")[:5]
        raise ConfigError(
            f"unknown timm model {name!r} in backbone {label!r}"
            + (f"; similar: {', '.join(close)}" if close else "; see timm.list_models()")
        )
    if output_stride != 32:
        model_kwargs["output_stride"] = output_stride
    try:
        body = timm.create_model(name, pretrained=False, features_only=True, **model_kwargs)
    except Exception as err:  # noqa: BLE001 - timm raises what its model raises
        what = (
            f"output_stride={output_stride}"
            if output_stride != 32
            else f"options {sorted(model_kwargs)}"
        )
        raise ConfigError(
            f"backbone {label!r} does not support {what} "
            f"({type(err).__name__}: {err}); use output_stride=32"
        ) from None
    if frozen_bn:
        freeze_batchnorm_(body)
    info = _feature_info(body, label, output_stride)
    return TimmBackbone(label, body, info, output_stride=output_stride, out_features=out_features)


@torch.no_grad()
def _feature_info(body: nn.Module, label: str, output_stride: int) -> FeatureInfoMap:
    """One tap per timm level: named by timm's reduction, measured on a probe input."""
    training = body.training
    outputs = probe(body.eval(), PROBE_SIZE, label)
    body.train(training)
    reductions = body.feature_info.reduction()
    first = round(math.log2(reductions[0]))  # never dilated: later levels follow it by octaves
    if not 1 <= first or first + len(reductions) - 1 > len(LEVELS):
        raise ConfigError(f"backbone {label!r}: its levels (strides {reductions}) are not C1..C5")
    info = FeatureInfoMap()
    deepest = 1
    for i, (out, module) in enumerate(zip(outputs, body.feature_info.module_name())):
        if not isinstance(out, Tensor) or out.dim() != 4 or PROBE_SIZE[0] % out.shape[-2]:
            raise ConfigError(
                f"backbone {label!r}: its level {module!r} is not an (N, C, H, W) map"
            )
        stride = PROBE_SIZE[0] // out.shape[-2]
        deepest = max(deepest, stride)
        info[LEVELS[first - 1 + i]] = FeatureInfo(int(out.shape[1]), stride, module)
    if deepest > output_stride:
        raise ConfigError(
            f"backbone {label!r} ignored output_stride={output_stride} (its deepest "
            f"map is at stride {deepest}); use output_stride=32"
        )
    return info
