"""What a network's outputs become at the frame's size: a segmentation's label map (and on
request its per-pixel class probabilities), a detector's boxes in frame pixels."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .argmax import label_map
from .upsample import upsampled_labels

__all__ = ["boxes_in_frame", "frame_labels", "frame_probabilities"]


def frame_labels(
    scores: Tensor,
    frame_size: tuple[int, int],
    *,
    network_size: tuple[int, int] | None,
    upsample: str,
    threads: int,
) -> list[np.ndarray]:
    """The ``(H, W)`` uint8 label maps of ``scores`` ``(N, C, h, w)`` at ``frame_size``.

    ``upsample="logits"``: the argmax of the scores resized bilinearly to the frame (what
    evaluation does, without materialising them: :func:`upsampled_labels`); ``"labels"``: the
    argmax at ``network_size`` (the frame's when None), then the label map resized
    nearest-neighbour to the frame (the demo's ``--input-size``: ~1 ms against ~60 ms at 360x640
    -> 720x1280, at the cost of blockier edges); ``"scores"``: the scores resized, then the
    argmax, evaluation's own arithmetic (the shortcut of ``"logits"`` rounds differently at about
    one pixel in 10^7, where two classes tie).
    """
    if tuple(scores.shape[-2:]) == frame_size:
        return list(label_map(scores, threads=threads))  # NCHW, CPU: 10x argmax(1)
    if upsample == "scores":
        up = F.interpolate(scores, size=frame_size, mode="bilinear", align_corners=False)
        return list(label_map(up, threads=threads))
    if upsample != "labels":
        return list(upsampled_labels(scores, frame_size, threads=threads))
    size = network_size or frame_size
    labels = (
        upsampled_labels(scores, size, threads=threads)
        if tuple(scores.shape[-2:]) != size
        else label_map(scores.contiguous(), threads=threads)
    )
    return [cv2.resize(lab, frame_size[::-1], interpolation=cv2.INTER_NEAREST) for lab in labels]


def frame_probabilities(
    scores: Tensor, frame_size: tuple[int, int], *, averaged: bool
) -> list[np.ndarray]:
    """Per-pixel class probabilities ``(C, H, W)`` float16 at ``frame_size``: the softmax of
    ``scores`` (logits) resized bilinearly, or ``scores`` themselves when ``averaged`` (test-time
    augmentation's mean of probabilities)."""
    out = []
    for one in scores:  # one image at a time: C full-size float planes are large
        one = one[None].float()
        if tuple(one.shape[-2:]) != frame_size:
            one = F.interpolate(one, size=frame_size, mode="bilinear", align_corners=False)
        probs = one if averaged else torch.softmax(one, dim=1)
        out.append(probs[0].to(torch.float16).contiguous().numpy())
    return out


def boxes_in_frame(
    detections: list[dict[str, Tensor]],
    frame_size: tuple[int, int],
    input_size: tuple[int, int],
    threshold: float,
    name: Callable[[int], str],
) -> list[dict]:
    """The detections at or above ``threshold`` of a network run at ``input_size``, in the
    pixels of frames of ``frame_size`` (boxes clipped to the frame), with class names."""
    height, width = frame_size
    (in_h, in_w), device = input_size, detections[0]["boxes"].device if detections else "cpu"
    scale = torch.tensor([width / in_w, height / in_h] * 2, device=device)
    limit = torch.tensor([width, height] * 2, device=device, dtype=torch.float32)
    results = []
    for det in detections:
        keep = det["scores"] >= threshold
        boxes = (det["boxes"][keep].float() * scale).clamp_(min=0)
        boxes = torch.minimum(boxes, limit)
        labels = det["labels"][keep].cpu().numpy().astype(np.int64)
        results.append(
            {
                "boxes": boxes.cpu().numpy().astype(np.float32).reshape(-1, 4),
                "scores": det["scores"][keep].float().cpu().numpy(),
                "labels": labels,
                "class_names": [name(int(label)) for label in labels],
            }
        )
    return results
