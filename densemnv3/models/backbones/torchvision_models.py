"""``tv:<name>``: any torchvision classification model as a backbone, taps found by stride.

``create_backbone("tv:resnet18")`` builds ``torchvision.models.get_model("resnet18", weights=None)``
and reads its feature maps through ``torchvision.models.feature_extraction`` (FX tracing, public
API). Nothing is tabulated per model:

- every submodule's output is probed once on a small input; the outputs that are ``(N, C, H, W)``
  maps at a power-of-two stride are candidates;
- ``C<k>`` (stride ``2**k``) is the shallowest module at that stride, the latest one among equals —
  the stage outputs: ``layer1``..``layer4`` of a ResNet, ``features.<i>`` of an EfficientNet,
  ``stage2``..``stage4`` and ``conv5`` of a ShuffleNetV2; ``feature_info`` holds what the probe saw;
- ``output_stride`` 8/16 turns the strided layers past it into stride-1 dilated ones, following the
  graph (a strided layer keeps the dilation of its input, the layers after it get the product, as
  torchvision's ``replace_stride_with_dilation``), so every ResNet, MobileNet, EfficientNet or
  ShuffleNet can run dilated. A model whose downsampling dilation cannot replace (an even kernel,
  as ConvNeXt's 2×2 stride-2 convs, or an average pool) is refused with one message.

Weights are never downloaded: ``weights`` other than ``None`` is refused; load a local torchvision
file with ``model.backbone_weights`` (its keys are renamed, its classifier ignored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from densemnv3.errors import ConfigError, did_you_mean

from .base import (
    LEVELS,
    FeatureInfo,
    FeatureInfoMap,
    LibraryBackbone,
    check_adapter_options,
    freeze_batchnorm_,
    probe,
)

PREFIX = "tv:"
#: The probe inputs (height, width): every stride up to 32 divides each side; a global pool (1×1)
#: or a channels-last output gives another ratio per side or size and is not taken for a map.
PROBE_SIZES = ((64, 96), (96, 64))
_FUNCTIONAL_RESAMPLING = (F.max_pool2d, F.avg_pool2d, F.conv2d, F.interpolate)


class TorchvisionBackbone(LibraryBackbone):
    """A torchvision model's trunk (``body``, an FX graph module) returning taps ``C1``..``C5``."""

    def stage_maps(self, x: Tensor) -> dict[str, Tensor]:
        return self.body(x)

    def convert_torchvision_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A torchvision classification checkpoint's keys under ``body.``."""
        return {k if k.startswith("body.") else f"body.{k}": v for k, v in state.items()}


def torchvision_backbone(
    name: str,
    *,
    output_stride: int = 32,
    out_features: Sequence[str] | None = None,
    frozen_bn: bool = False,
    **model_kwargs,
) -> TorchvisionBackbone:
    """The trunk of ``torchvision.models.get_model(name, weights=None, **model_kwargs)``."""
    label = f"{PREFIX}{name}"
    check_adapter_options(
        label,
        output_stride,
        model_kwargs.get("weights") is not None or bool(model_kwargs.get("pretrained")),
    )
    model_kwargs.pop("weights", None)
    model = _classification_model(name, label, model_kwargs).eval()
    if frozen_bn:
        freeze_batchnorm_(model)
    probed = _probe(model, _candidates(model, label), label)
    nominal = _levels(probed)
    if not nominal:
        raise ConfigError(
            f"backbone {label!r}: no (N, C, H, W) feature map at a power-of-two stride "
            f"was found in it (a vision transformer?); use a convolutional model"
        )
    if output_stride < max(probed[m][0] for m in nominal.values()):
        _dilate(model, nominal[max(nominal, key=LEVELS.index)], output_stride, label)
        probed = _probe(model, list(nominal.values()), label)
        deepest = max((s for s, _ in probed.values()), default=0)
        if deepest > output_stride or len(probed) < len(nominal):
            raise ConfigError(
                f"backbone {label!r} cannot run at output_stride {output_stride}: "
                f"dilation does not keep its maps; use output_stride=32"
            )
    body = create_feature_extractor(model, return_nodes={m: tap for tap, m in nominal.items()})
    info = FeatureInfoMap(
        (tap, FeatureInfo(probed[m][1], probed[m][0], m)) for tap, m in nominal.items()
    )
    ignored = sorted(
        {k.split(".")[0] for k in model.state_dict()} - {k.split(".")[0] for k in body.state_dict()}
    )
    return TorchvisionBackbone(
        label,
        body.train(),
        info,
        output_stride=output_stride,
        out_features=out_features,
        ignored=ignored,
    )


def _classification_model(name: str, label: str, kwargs: dict) -> nn.Module:
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ConfigError(
            f"unknown torchvision classification model {name!r} in backbone {label!r}"
            f"{did_you_mean(name, available)}; see torchvision.models.list_models()"
        )
    try:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError, NotImplementedError) as err:
        raise ConfigError(
            f"backbone {label!r} does not take these options {sorted(kwargs)}: {err}"
        ) from None


def _candidates(model: nn.Module, label: str) -> list[str]:
    """Per traced node that ends a submodule, the shallowest such submodule, in graph order."""
    try:
        train_nodes, eval_nodes = get_graph_node_names(model)
    except Exception as err:  # noqa: BLE001 - FX tracing fails in many ways
        raise ConfigError(
            f"backbone {label!r}: torchvision's feature extraction cannot trace it "
            f"({type(err).__name__}: {err})"
        ) from None
    modules = {name for name, _ in model.named_modules() if name}
    in_train = {p for n in train_nodes for p in _prefixes(n)}
    last: dict[str, int] = {}  # module -> index of its last node
    for i, node in enumerate(eval_nodes):
        for prefix in _prefixes(node):
            if prefix in modules and prefix in in_train:
                last[prefix] = i
    shallowest: dict[int, str] = {}
    for module, i in last.items():
        if i not in shallowest or module.count(".") < shallowest[i].count("."):
            shallowest[i] = module
    return [shallowest[i] for i in sorted(shallowest)]


def _prefixes(node: str) -> list[str]:
    parts = node.split(".")
    return [".".join(parts[: k + 1]) for k in range(len(parts))]


@torch.no_grad()
def _probe(model: nn.Module, modules: list[str], label: str) -> dict[str, tuple[int, int]]:
    """``(stride, channels)`` of every module in ``modules`` whose output is an (N, C, H, W) map
    at a power-of-two stride, the same at both :data:`PROBE_SIZES`."""

    def forward(x: Tensor) -> dict[str, Tensor]:
        return create_feature_extractor(model, return_nodes={m: m for m in modules}).eval()(x)

    found = []
    for size in PROBE_SIZES:
        outputs = probe(forward, size, label)
        found.append({m: _stride_and_channels(out, size) for m, out in outputs.items()})
    return {m: v for m, v in found[0].items() if v is not None and all(f[m] == v for f in found)}


def _stride_and_channels(out: object, size: tuple[int, int]) -> tuple[int, int] | None:
    if not isinstance(out, Tensor) or out.dim() != 4:
        return None
    sh, sw = (s / o for s, o in zip(size, out.shape[-2:]))
    if sh != sw or not sh.is_integer() or int(sh) & (int(sh) - 1):
        return None
    return int(sh), out.shape[1]


def _levels(probed: Mapping[str, tuple[int, int]]) -> dict[str, str]:
    """``C<k>`` -> the shallowest module at stride ``2**k`` (the latest among equals)."""
    levels = {}
    for k, tap in enumerate(LEVELS, start=1):
        at = [m for m, (s, _) in probed.items() if s == 2**k]  # graph order
        if at:
            depth = min(m.count(".") for m in at)
            levels[tap] = [m for m in at if m.count(".") == depth][-1]
    return levels


def _dilate(model: nn.Module, last: str, output_stride: int, label: str) -> None:
    """Replace the strides past ``output_stride`` (up to module ``last``) by dilation, in place."""
    graph_module = create_feature_extractor(model, return_nodes={last: "out"}).eval()
    stride_at: dict[object, int] = {}
    rate_at: dict[object, int] = {}
    for node in graph_module.graph.nodes:
        inputs = node.all_input_nodes
        stride = max((stride_at[n] for n in inputs), default=1)
        rate = max((rate_at[n] for n in inputs), default=1)
        if (
            node.op == "call_module"
        ):  # a leaf of the trace: a layer or a chain (Conv2dNormActivation)
            for name, layer in graph_module.get_submodule(node.target).named_modules():
                if isinstance(layer, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
                    where = f"{node.target}.{name}".rstrip(".")
                    stride, rate = _resample(layer, stride, rate, output_stride, where, label)
        if (
            node.op == "call_function"
            and node.target in _FUNCTIONAL_RESAMPLING
            and (rate > 1 or stride >= output_stride)
        ):
            raise ConfigError(
                f"backbone {label!r} cannot run at output_stride {output_stride}: "
                f"{node.name} is a functional {node.target.__name__} that dilation "
                f"cannot change; use output_stride=32"
            )
        stride_at[node], rate_at[node] = stride, rate


def _resample(
    layer: nn.Module, stride: int, rate: int, output_stride: int, where: str, label: str
) -> tuple[int, int]:
    """``(stride, rate)`` after ``layer``, made stride 1 and dilated where the stride would pass
    ``output_stride``; a layer reached by a dilated input gets that dilation."""
    step = _pair(layer.stride)[0]
    if step > 1 and stride * step > output_stride:
        _set_dilation(layer, rate, where, label, output_stride)
        layer.stride = (1, 1) if isinstance(layer, nn.Conv2d) else 1
        return stride, rate * step
    if step > 1:
        return stride * step, rate
    if rate > 1:
        _set_dilation(layer, rate, where, label, output_stride)
    return stride, rate


def _set_dilation(module: nn.Module, rate: int, name: str, label: str, output_stride: int) -> None:
    kernel = _pair(module.kernel_size)
    if all(k == 1 for k in kernel):
        return
    refuse = isinstance(module, nn.AvgPool2d) or any(k % 2 == 0 for k in kernel)
    if refuse:
        what = f"{type(module).__name__} {name!r} (kernel {kernel[0]}x{kernel[1]})"
        raise ConfigError(
            f"backbone {label!r} cannot run at output_stride {output_stride}: dilation "
            f"cannot replace the stride of its {what}; use output_stride=32"
        )
    old = _pair(module.dilation)[0]
    module.dilation = (old * rate,) * 2 if isinstance(module, nn.Conv2d) else old * rate
    if not isinstance(module.padding, str):
        padding = tuple((k - 1) // 2 * old * rate for k in kernel)
        module.padding = padding if isinstance(module, nn.Conv2d) else padding[0]


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, tuple | list) else (value, value)
