"""Inference on OpenCV frames: :class:`Predictor` (pre/post-processing around a model), overlays,
video sources / sinks for the demo (``tools/demo_video.py``), and the per-device defaults every
inference path resolves its options from (:func:`inference_defaults`, :func:`resolve_inference`);
label maps from logits (:func:`label_map`; :func:`upsampled_labels`, the labels of logits
upsampled to a size, as from an exported LR-ASPP's stride-8 outputs).

Names load on first use, so ``densemnv3.inference.video`` imports without torch: the demo reports
a bad source at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from densemnv3.utils.lazy import lazy_exports

_EXPORTS = {
    "InferenceSettings": "settings",
    "Predictor": "predictor",
    "inference_defaults": "settings",
    "resolve_inference": "settings",
    "FrameReader": "video",
    "VideoWriter": "video",
    "open_source": "video",
    "source_fps": "video",
    "source_kind": "video",
    "class_color": "visualize",
    "draw_detections": "visualize",
    "draw_fps": "visualize",
    "overlay_segmentation": "visualize",
    "label_map": "argmax",
    "upsampled_labels": "upsample",
}

__all__ = [
    "FrameReader",
    "InferenceSettings",
    "Predictor",
    "VideoWriter",
    "class_color",
    "draw_detections",
    "draw_fps",
    "inference_defaults",
    "label_map",
    "open_source",
    "overlay_segmentation",
    "resolve_inference",
    "source_fps",
    "source_kind",
    "upsampled_labels",
]

if TYPE_CHECKING:
    from .argmax import label_map
    from .predictor import Predictor
    from .settings import InferenceSettings, inference_defaults, resolve_inference
    from .upsample import upsampled_labels
    from .video import FrameReader, VideoWriter, open_source, source_fps, source_kind
    from .visualize import (
        class_color,
        draw_detections,
        draw_fps,
        overlay_segmentation,
    )


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
