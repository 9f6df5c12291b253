"""What the Predictor runs of a model: the tensors of one pass, postprocess apart, and a
detector's candidates under a score threshold dropped before its NMS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import Tensor, nn

from densemnv3.models.multitask import LRASPPSSDLite

__all__ = ["MultiTaskNetwork", "SegmentationLogits", "thresholded"]


class SegmentationLogits(nn.Module):
    """A segmentation model's logits at its own stride (an LR-ASPP's, or an exported one's
    ``network``: stride 8; the Predictor takes the labels of their upsampling once, at the frame
    size); any other model's output as it is."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        network = getattr(self.model, "network", None)
        return network(x) if network is not None else self.model(x)


class MultiTaskNetwork(nn.Module):
    """A multi-task model's tensors of one pass: stride-8 logits (upsampled once, by the
    Predictor), class logits, box deltas and default boxes; the postprocess runs apart."""

    def __init__(self, model: LRASPPSSDLite) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.model.network(x)


def thresholded(detector: nn.Module, threshold: float, run: Callable[[], Any]) -> Any:
    """``run()`` (the detector's detections) with candidates under ``threshold`` dropped
    before NMS.

    Greedy NMS keeps a box or not from higher-scored boxes only, so the detections at or
    above ``threshold`` are the same, without decoding and suppressing the rest.
    """
    own = getattr(detector, "score_thresh", None)
    if not isinstance(own, float) or threshold <= own:
        return run()
    # the model keeps float32 scores > its threshold: the float32 just below ours keeps >= ours
    detector.score_thresh = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    try:
        return run()
    finally:
        detector.score_thresh = own
