"""Inference-time rewrites of a trained model: BatchNorm folding, memory format, precision, compile.

None of them changes what the model computes beyond floating-point rounding (fp16/bf16 change
the precision, on purpose). ``prepare_for_inference`` is the one call a tool needs, with the
options :mod:`densemnv3.inference.settings` resolves for the device::

    settings = inference_defaults(device)          # CUDA: fp16, NCHW; CPU: fp32, NCHW
    model = prepare_for_inference(model, channels_last=settings.channels_last,
                                  dtype=settings.dtype)   # eval, folded BN

(channels_last helps convolutions on CPU but slows MobileNetV3's depthwise ones on CUDA.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops import FrozenBatchNorm2d

if TYPE_CHECKING:
    from .settings import InferenceSettings

__all__ = [
    "CUDAGraphed",
    "accelerated",
    "compile_for_inference",
    "cuda_graph_network",
    "fuse_conv_bn_",
    "prepare_for_inference",
]

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def fuse_conv_bn_(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``Conv2d`` directly followed by a ``BatchNorm2d`` (or
    ``FrozenBatchNorm2d``) in an ``nn.Sequential`` into the conv; the norm becomes ``nn.Identity``.

    That covers torchvision's ``Conv2dNormActivation`` (every backbone layer, the SSDLite extra
    blocks and head) and the LR-ASPP ``cbr`` branch. Pairs in training mode are left alone (their
    statistics still change). Returns ``model``, changed in place.
    """
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if not (
                isinstance(conv, nn.Conv2d) and isinstance(bn, (nn.BatchNorm2d, FrozenBatchNorm2d))
            ):
                continue
            if conv.training or bn.training:
                continue
            if isinstance(bn, nn.BatchNorm2d) and not bn.track_running_stats:
                continue  # normalises with batch statistics even in eval mode
            setattr(seq, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(seq, bn_name, nn.Identity())
    return model


def prepare_for_inference(
    model: nn.Module,
    *,
    fuse_bn: bool = True,
    channels_last: bool = False,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """``model`` in eval mode with BatchNorm folded into the convs (``fuse_bn``), NHWC weights
    (``channels_last``: feed it ``x.to(memory_format=torch.channels_last)`` too) and optionally
    its floating-point parameters cast to ``dtype`` (fp16/bf16; feed it inputs of that dtype).

    Changes ``model`` in place and returns it; parameters stop requiring gradients.
    """
    model.eval()
    model.requires_grad_(False)
    if fuse_bn:
        fuse_conv_bn_(model)
    if dtype is not None:
        model.to(dtype=dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def compile_for_inference(model: nn.Module, mode: CompileMode = "reduce-overhead") -> nn.Module:
    """``torch.compile`` the network of ``model``, leaving data-dependent postprocessing eager.

    A model whose forward is pure tensor code (LR-ASPP) is compiled whole. One with a ``head``
    and a data-dependent postprocess (SSDLite's candidate selection and NMS) gets its
    ``backbone``, ``extra`` blocks and ``head`` compiled in place, so postprocessing neither
    breaks the graph nor recompiles as the number of candidates changes.

    On CUDA ``mode`` is torch.compile's (``reduce-overhead`` replays CUDA graphs: call
    ``torch.compiler.cudagraph_mark_step_begin()`` before each call and clone outputs you keep).
    On CPU ``mode`` is ignored: Inductor's ``freezing`` (weights folded as constants, prepacked
    for oneDNN) is used instead.
    """

    def compile_(module: nn.Module) -> nn.Module:
        if next(module.parameters()).device.type == "cpu":
            return torch.compile(module, options={"freezing": True})
        return torch.compile(module, mode=mode)

    if not (hasattr(model, "postprocess") and hasattr(model, "head")):
        return compile_(model)
    model.backbone = compile_(model.backbone)
    model.head = compile_(model.head)
    if isinstance(getattr(model, "extra", None), nn.ModuleList):
        model.extra = nn.ModuleList(compile_(block) for block in model.extra)
    return model


GraphInput = Tensor | Sequence[Tensor]


class CUDAGraphed(nn.Module):
    """``module`` replayed from one CUDA graph captured on ``example`` (a tensor or a list of them).

    An input of the captured shapes and dtypes is copied into the graph's static input and the
    graph replayed: one launch instead of one per kernel. Other inputs run ``module`` eagerly.
    The returned tensors are the graph's static outputs, overwritten by the next call: clone
    what must outlive it. For inference only (call under ``torch.inference_mode()``).
    """

    def __init__(self, module: nn.Module, example: GraphInput, warmup: int = 3) -> None:
        super().__init__()
        self.module = module
        self._static_in = _map(example, torch.clone)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm up (cuDNN autotuning, allocations) off the graph
            for _ in range(warmup):
                module(self._static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._static_out = module(self._static_in)

    def forward(self, x: GraphInput):
        static = self._static_in if isinstance(self._static_in, list) else [self._static_in]
        given = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(given) != len(static) or any(
            g.shape != s.shape or g.dtype != s.dtype or g.device != s.device
            for g, s in zip(given, static)
        ):
            return self.module(x)
        for s, g in zip(static, given):
            s.copy_(g)
        self._graph.replay()
        return self._static_out


def cuda_graph_network(model: nn.Module, example: Tensor) -> nn.Module:
    """Capture the network of ``model`` in CUDA graphs for inputs shaped like ``example``.

    LR-ASPP (pure tensor code): the whole model, returned as a :class:`CUDAGraphed`. SSDLite: its
    ``backbone``, each ``extra`` block and its ``head`` are replaced in place by graphs, while
    postprocessing (NMS, data-dependent sizes) stays eager; ``model`` is returned.
    """
    if not (hasattr(model, "postprocess") and hasattr(model, "head")):
        return CUDAGraphed(model, example)
    with torch.inference_mode():
        model.backbone = CUDAGraphed(model.backbone, example)
        taps = model.backbone(example)
        maps = [taps[name] for name in getattr(model, "taps", taps)]
        x = maps[-1]
        blocks = []
        for block in model.extra:
            blocks.append(CUDAGraphed(block, x))
            x = blocks[-1](x)
            maps.append(x)
        model.extra = nn.ModuleList(blocks)
        model.head = CUDAGraphed(model.head, maps)
    return model


def _map(value: GraphInput, fn):
    return [fn(v) for v in value] if isinstance(value, (list, tuple)) else fn(value)


def accelerated(network: nn.Module, settings: InferenceSettings) -> Callable[[Tensor], Any]:
    """``network`` compiled and/or replayed from CUDA graphs as ``settings`` say."""
    if settings.compile:
        compiled = compile_for_inference(network, mode=settings.compile_mode)
        if settings.cuda_graphs:  # Inductor's CUDA graphs: one step per call

            def step(x: Tensor) -> Any:
                torch.compiler.cudagraph_mark_step_begin()
                return compiled(x)

            return step
        return compiled
    if settings.cuda_graphs:
        return _GraphPerShape(network)
    return network


class _GraphPerShape:
    """Calls ``network`` replayed from a CUDA graph captured at the first input of each shape
    (up to ``max_graphs`` shapes; an SSDLite gets one capture, see :func:`cuda_graph_network`)."""

    def __init__(self, network: nn.Module, max_graphs: int = 4) -> None:
        self.network, self.max_graphs = network, max_graphs
        self.graphs: dict[tuple, Callable[[Tensor], Any]] = {}

    def __call__(self, x: Tensor) -> Any:
        key = (tuple(x.shape), x.dtype)
        graph = self.graphs.get(key)
        if graph is None:
            if hasattr(self.network, "postprocess"):  # replaces its parts in place, once
                graph = self.graphs.setdefault("detector", cuda_graph_network(self.network, x))
            elif len(self.graphs) < self.max_graphs:
                graph = self.graphs[key] = CUDAGraphed(self.network, x)
            else:
                return self.network(x)
        return graph(x)
