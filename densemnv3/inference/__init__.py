"""Inference on OpenCV frames: :class:`Predictor` (pre/post-processing around a model), overlays,
and video sources / sinks for the demo (``tools/demo_video.py``).

Names load on first use, so ``densemnv3.inference.video`` imports without torch: the demo reports
a bad source at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Predictor": "predictor",
    "detection_class_names": "predictor",
    "FrameReader": "video",
    "VideoWriter": "video",
    "open_source": "video",
    "source_fps": "video",
    "source_kind": "video",
    "COCO_CATEGORY_NAMES": "visualize",
    "class_color": "visualize",
    "draw_detections": "visualize",
    "draw_fps": "visualize",
    "overlay_segmentation": "visualize",
}

__all__ = [
    "COCO_CATEGORY_NAMES",
    "FrameReader",
    "Predictor",
    "VideoWriter",
    "class_color",
    "detection_class_names",
    "draw_detections",
    "draw_fps",
    "open_source",
    "overlay_segmentation",
    "source_fps",
    "source_kind",
]

if TYPE_CHECKING:
    from .predictor import Predictor, detection_class_names
    from .video import FrameReader, VideoWriter, open_source, source_fps, source_kind
    from .visualize import (
        COCO_CATEGORY_NAMES,
        class_color,
        draw_detections,
        draw_fps,
        overlay_segmentation,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
