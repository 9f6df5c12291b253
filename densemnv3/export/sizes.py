"""The input sizes an exported graph takes: dynamic, or fixed where the paper's LR-ASPP pool
fixes its window, and the sizes recorded in an exported file's metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn


def min_input_size(model: nn.Module, input_size: Sequence[int]) -> tuple[int, int] | None:
    """The smallest height and width an ONNX file of ``model`` traced at ``input_size`` takes
    (it then takes every larger size), or ``None``: the file takes ``input_size`` only.

    Dynamic sizes need the same operations at every size. The paper's LR-ASPP pool averages a
    49×49 window, clamped to maps smaller than that: a fixed window (one ``AveragePool``) for
    inputs whose stride-16 map is at least 49×49 (784×784 px, Cityscapes' 1024×2048 frames
    included), a different one below. So it is dynamic from there up when traced there, and
    fixed at ``input_size`` when traced below. Every other model takes any size from 32×32.
    """
    paper = _paper_pool(model)
    if paper is not None:
        pool, stride = paper
        low = tuple(k * stride for k in pool.kernel_size)
        return low if all(s >= m for s, m in zip(input_size, low)) else None
    return (32, 32)


def _paper_pool(model: nn.Module) -> tuple[nn.AvgPool2d, int] | None:
    """The paper pool of an LR-ASPP head (alone or in the multi-task model) and the stride of the
    map it pools, or ``None``."""
    part = {"segmentation": "head", "multitask": "seg"}.get(getattr(model, "task", None))
    head = getattr(model, part, None) if part else None
    if getattr(head, "pool", None) != "paper":
        return None
    return head.scale[0], model.backbone.feature_info[model.high_tap].stride


def dynamic_size(model: nn.Module, input_size: Sequence[int] = (10**4, 10**4)) -> bool:
    """Whether an ONNX file of ``model`` traced at ``input_size`` takes other sizes too."""
    return min_input_size(model, input_size) is not None


def trace_size(model: nn.Module, input_size: Sequence[int]) -> tuple[int, int]:
    """The size to trace a dynamic export at: ``input_size`` or larger, so that every feature map
    (down to SSDLite's stride 512) and the paper pool's output have >= 2 cells (``torch.export``
    specialises dimensions of size 1, which would fix the size)."""
    low = (576, 576)
    paper = _paper_pool(model)
    if paper is not None:
        pool, stride = paper
        low = tuple((k + s) * stride for k, s in zip(pool.kernel_size, pool.stride))
    return max(int(input_size[0]), low[0]), max(int(input_size[1]), low[1])


def second_size(size: Sequence[int], min_size: Sequence[int] = (32, 32)) -> tuple[int, int]:
    """Another input size to check a dynamic file at: 3/4 of the height, 5/4 of the width (at
    least ``min_size``)."""
    return (
        max(int(min_size[0]), int(size[0]) * 3 // 4 // 16 * 16),
        max(int(min_size[1]), int(size[1]) * 5 // 4 // 16 * 16),
    )


def size_metadata(input_size: Sequence[int], min_size: Sequence[int] | None) -> dict[str, Any]:
    """What an ONNX file records about the sizes it takes (read by ``ExportedModel``)."""
    if min_size is None:
        return {"input_size": tuple(int(s) for s in input_size)}
    return {"input_size": "dynamic", "min_input_size": tuple(int(s) for s in min_size)}
