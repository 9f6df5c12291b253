"""The width-dependent layers of a model as hashable keys, and each key as a network of its own.

The keys of NetAdapt's latency lookup table (:mod:`.latency`). :func:`model_layers` runs one
forward of the network an exported file holds on a batch of no images (every shape, no
arithmetic, far cheaper than the ``meta`` device), with hooks that record each unit's input shape.
A MobileNetV3 block is one :class:`Chain` (one per piece where SSDLite runs it in two), an
LR-ASPP head an :class:`LRASPPBranch` and a :class:`Chain` of its low classifier, and any other
convs run in sequence a :class:`Chain`. Keys are blocks rather than single convs because a runtime
fuses inside a block: a conv timed alone pays for reorders, quantize/dequantize or transposes at
its edges that the whole model does not. What no key accounts for is the table's ``glue``.

:func:`torch_module` builds a key as the same PyTorch modules the model uses (BatchNorm folded);
:func:`onnx_model` writes it with ``onnx.helper`` as the ops the dynamo exporter writes for the
model, in a millisecond instead of an export.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d, SqueezeExcitation

from densemnv3.models import LRASPPSSDLite, SSDLite
from densemnv3.models.backbones.mobilenet_v3 import InvertedResidual
from densemnv3.models.heads.lraspp import LRASPPHead
from densemnv3.models.heads.ssdlite import SSDLiteHead
from densemnv3.models.resize import resize_bilinear

__all__ = [
    "FLOAT_PREFIX",
    "Chain",
    "Conv",
    "LRASPPBranch",
    "Layer",
    "SqueezeExcite",
    "model_layers",
    "onnx_model",
    "torch_module",
]

#: The activations a :class:`Conv` may end in, by module class.
ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid",
    nn.Sigmoid: "sigmoid",
}
_MODULES = {name: cls for cls, name in ACTIVATIONS.items()}
#: Modules that compute nothing once BatchNorm is folded into the conv before them.
_FOLDED = (nn.BatchNorm2d, FrozenBatchNorm2d, nn.Identity, nn.Dropout)
#: Names of the nodes an int8 file keeps in float (a classifier and what follows it) start so.
FLOAT_PREFIX = "float_"
#: ONNX opset of the graphs (HardSwish: 14; ReduceMean with its axes as an input: 18).
OPSET = 18


@dataclass(frozen=True)
class Conv:
    """A square conv with BatchNorm folded in (so with a bias), then ``act`` (``"none"`` or a
    value of :data:`ACTIVATIONS`). ``keep_float``: a classifier, left in float in the int8 file
    (:func:`~densemnv3.export.int8_graph.float_nodes`)."""

    in_channels: int
    out_channels: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    act: str = "none"
    keep_float: bool = False


@dataclass(frozen=True)
class SqueezeExcite:
    """torchvision's ``SqueezeExcitation``: pool → 1×1 conv → ReLU → 1×1 conv → ``gate`` → scale."""

    channels: int
    squeeze: int
    gate: str = "hardsigmoid"


Op = Conv | SqueezeExcite


@dataclass(frozen=True)
class Chain:
    """``ops`` in sequence on a ``(channels, height, width)`` input; ``residual``: plus the
    input."""

    shape: tuple[int, int, int]
    ops: tuple[Op, ...]
    residual: bool = False


@dataclass(frozen=True)
class LRASPPBranch:
    """LR-ASPP's high branch on a ``(channels, height, width)`` feature: ``cbr`` × the global gate
    → the high classifier (kept in float in the int8 file) → resized to ``out_size``."""

    shape: tuple[int, int, int]
    inter_channels: int
    num_classes: int
    out_size: tuple[int, int]


Layer = Chain | LRASPPBranch


# --------------------------------------------------------------------------- finding the layers


def model_layers(model: nn.Module, size: tuple[int, int]) -> list[Layer]:
    """The width-dependent layers of ``model`` for one ``(1, 3, *size)`` input, in the order they
    run (a layer that runs twice is listed twice). ``model`` is not changed."""
    run = (
        model.network
        if isinstance(model, LRASPPSSDLite)
        else model.predict_raw
        if isinstance(model, SSDLite)
        else model
    )
    floats = _classifier_convs(model)
    events: list[tuple[str, list[Layer]]] = []

    def record(name: str, module: nn.Module, args: tuple) -> None:
        found = _unit(module, [tuple(a.shape[1:]) for a in args if isinstance(a, Tensor)], floats)
        if found:
            events.append((name, found))

    handles = [
        module.register_forward_pre_hook(lambda m, args, name=name: record(name, m, args))
        for name, module in model.named_modules()
        if isinstance(
            module, (LRASPPHead, InvertedResidual, nn.Sequential, nn.Conv2d, SqueezeExcitation)
        )
    ]
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():  # a batch of none: every shape, no arithmetic
            run(torch.empty(0, 3, *size, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    units = {name for name, _ in events}
    return [
        layer
        for name, found in events
        if not any(name.startswith(f"{other}.") for other in units)
        for layer in found
    ]


def _classifier_convs(model: nn.Module) -> set[nn.Module]:
    """The convs an int8 file keeps in float: LR-ASPP's classifiers, SSDLite's predictors."""
    convs: set[nn.Module] = set()
    for module in model.modules():
        if isinstance(module, LRASPPHead):
            convs |= {module.low_classifier, module.high_classifier}
        elif isinstance(module, SSDLiteHead):
            convs |= {block[-1] for block in [*module.classification, *module.regression]}
    return convs


def _unit(module: nn.Module, shapes: list[tuple], floats: set[nn.Module]) -> list[Layer] | None:
    """The layers ``module`` is, run on inputs of ``shapes``; None where it is not one."""
    if isinstance(module, LRASPPHead):
        if module.pool != "global":
            return None  # the paper's pool: its convs are found one by one
        low, high = shapes
        branch = LRASPPBranch(
            high, module.cbr[0].out_channels, module.high_classifier.out_channels, low[1:]
        )
        return [branch, Chain(low, _ops(module.low_classifier, floats))]
    ops = _ops(module.block if isinstance(module, InvertedResidual) else module, floats)
    if not ops or not shapes:
        return None
    return [Chain(shapes[0], ops, residual=getattr(module, "use_res_connect", False))]


def _ops(module: nn.Module, floats: set[nn.Module]) -> tuple[Op, ...] | None:
    """``module`` as ops (a ``Sequential`` of convs, norms, activations and squeeze-excitations),
    or None."""
    if isinstance(module, nn.Conv2d):
        return _conv(module, module in floats)
    if isinstance(module, SqueezeExcitation):
        gate = ACTIVATIONS.get(type(module.scale_activation))
        if type(module.activation) is not nn.ReLU or gate not in ("hardsigmoid", "sigmoid"):
            return None
        return (SqueezeExcite(module.fc1.in_channels, module.fc1.out_channels, gate),)
    if not isinstance(module, nn.Sequential):
        return None
    ops: list[Op] = []
    for child in module:
        act = ACTIVATIONS.get(type(child))
        if act is not None:
            if not ops or not isinstance(ops[-1], Conv) or ops[-1].act != "none":
                return None  # an activation a conv does not end in
            ops[-1] = dataclasses.replace(ops[-1], act=act)
        elif not isinstance(child, _FOLDED):
            inner = _ops(child, floats)
            if inner is None:
                return None
            ops += inner
    return tuple(ops)


def _conv(conv: nn.Conv2d, keep_float: bool) -> tuple[Conv] | None:
    sides = (conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    if (
        conv.padding_mode != "zeros"
        or isinstance(conv.padding, str)
        or any(s[0] != s[1] for s in sides)
    ):
        return None  # not a square conv: its time stays in the glue
    return (
        Conv(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0],
            conv.stride[0],
            conv.padding[0],
            conv.dilation[0],
            conv.groups,
            keep_float=keep_float,
        ),
    )


# --------------------------------------------------------------------------- building one layer


class _ChainModule(nn.Sequential):
    def __init__(self, modules: list[nn.Module], residual: bool) -> None:
        super().__init__(*modules)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        return out + x if self.residual else out


class _BranchModule(nn.Module):
    def __init__(self, layer: LRASPPBranch) -> None:
        super().__init__()
        channels, inter = layer.shape[0], layer.inter_channels
        self.cbr = nn.Sequential(nn.Conv2d(channels, inter, 1), nn.ReLU(inplace=True))
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, inter, 1), nn.Sigmoid()
        )
        self.high_classifier = nn.Conv2d(inter, layer.num_classes, 1)
        self.out_size = layer.out_size

    def forward(self, x: Tensor) -> Tensor:
        x = self.high_classifier(self.cbr(x) * self.scale(x))
        return x if tuple(x.shape[-2:]) == self.out_size else resize_bilinear(x, self.out_size)


def _op_module(op: Op) -> nn.Module:
    if isinstance(op, SqueezeExcite):
        return SqueezeExcitation(op.channels, op.squeeze, scale_activation=_MODULES[op.gate])
    conv = nn.Conv2d(
        op.in_channels, op.out_channels, op.kernel, op.stride, op.padding, op.dilation, op.groups
    )
    return nn.Sequential(conv, _MODULES[op.act]()) if op.act != "none" else nn.Sequential(conv)


def torch_module(layer: Layer) -> nn.Module:
    """``layer`` as PyTorch modules in eval mode, seeded random weights (the global RNG is left as
    it was); it takes a ``(1, *layer.shape)`` input."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if isinstance(layer, LRASPPBranch):
            module: nn.Module = _BranchModule(layer)
        else:
            module = _ChainModule([_op_module(op) for op in layer.ops], layer.residual)
    return module.eval().requires_grad_(False)


def onnx_model(layer: Layer, module: nn.Module | None = None) -> Any:
    """``layer`` as an ONNX ``ModelProto`` (input ``x``, output ``y``) with the weights of
    ``module`` (default: :func:`torch_module` of it), so the two compute the same.

    The names of a classifier's conv and what follows it (what an int8 file keeps in float) start
    with :data:`FLOAT_PREFIX`."""
    from onnx import TensorProto, helper

    module = module if module is not None else torch_module(layer)
    graph = _Graph()
    if isinstance(layer, LRASPPBranch):
        gate = graph.act(
            graph.conv(
                graph.node("ReduceMean", "x", graph.const(np.array([2, 3])), keepdims=1),
                module.scale[1],
            ),
            "sigmoid",
        )
        branch = graph.act(graph.conv("x", module.cbr[0]), "relu")
        y = graph.conv(graph.node("Mul", branch, gate), module.high_classifier, keep_float=True)
        if layer.out_size != layer.shape[1:]:
            y = graph.node(
                "Resize",
                y,
                "",
                "",
                graph.const(np.array([1, layer.num_classes, *layer.out_size])),
                mode="linear",
                coordinate_transformation_mode="half_pixel",
                float_=True,
            )
    else:
        y = "x"
        for op, part in zip(layer.ops, module):
            y = (
                graph.squeeze_excite(y, part)
                if isinstance(op, SqueezeExcite)
                else graph.conv_act(y, op, part)
            )
        if layer.residual:
            y = graph.node("Add", y, "x")
    graph.nodes[-1].output[0] = "y"
    shape = [1, *layer.shape]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    proto = helper.make_graph(
        graph.nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [out],
        graph.initializers,
    )
    return helper.make_model(proto, opset_imports=[helper.make_opsetid("", OPSET)])


class _Graph:
    """Nodes and initializers of one layer's graph, named in order."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = f"c{len(self.initializers)}"
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, *inputs: str, float_: bool = False, **attrs: Any) -> str:
        from onnx import helper

        name = f"{FLOAT_PREFIX if float_ else ''}{op.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name

    def conv(self, x: str, conv: nn.Conv2d, keep_float: bool = False) -> str:
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        return self.node(
            "Conv",
            x,
            self.const(conv.weight.numpy()),
            self.const(bias.numpy()),
            kernel_shape=list(conv.kernel_size),
            strides=list(conv.stride),
            pads=[*conv.padding, *conv.padding],
            dilations=list(conv.dilation),
            group=conv.groups,
            float_=keep_float,
        )

    def act(self, x: str, act: str, float_: bool = False) -> str:
        if act == "none":
            return x
        if act == "relu6":
            return self.node(
                "Clip", x, self.const(np.array(0.0)), self.const(np.array(6.0)), float_=float_
            )
        if act == "hardsigmoid":
            return self.node("HardSigmoid", x, alpha=1 / 6, beta=0.5, float_=float_)
        return self.node(
            {"relu": "Relu", "hardswish": "HardSwish", "sigmoid": "Sigmoid"}[act], x, float_=float_
        )

    def conv_act(self, x: str, op: Conv, part: nn.Sequential) -> str:
        return self.act(self.conv(x, part[0], op.keep_float), op.act, op.keep_float)

    def squeeze_excite(self, x: str, se: SqueezeExcitation) -> str:
        pooled = self.node("ReduceMean", x, self.const(np.array([2, 3])), keepdims=1)
        gate = self.act(
            self.conv(self.act(self.conv(pooled, se.fc1), "relu"), se.fc2),
            ACTIVATIONS[type(se.scale_activation)],
        )
        return self.node("Mul", x, gate)
