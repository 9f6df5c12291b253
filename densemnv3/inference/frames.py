"""OpenCV frames as the Predictor takes them: one frame or a batch, checked and made BGR."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from densemnv3.errors import UserError

__all__ = ["as_bgr", "as_frame_list", "normalized_cpu"]


def as_frame_list(frames: Any) -> tuple[list[np.ndarray], bool]:
    """Frames as a list of contiguous (H, W, 3) uint8 BGR arrays, and whether one was given."""
    if isinstance(frames, np.ndarray):
        if frames.ndim == 4:
            return [as_bgr(f, i) for i, f in enumerate(frames)], False
        return [as_bgr(frames, None)], True
    if isinstance(frames, (list, tuple)):
        return [as_bgr(f, i) for i, f in enumerate(frames)], False
    raise UserError(
        f"expected an OpenCV frame (numpy uint8 array of shape (H, W, 3)) or a list of them, "
        f"got {type(frames).__name__}"
    )


def as_bgr(frame: Any, index: int | None) -> np.ndarray:
    """``frame`` (BGR, BGRA or grayscale uint8) as a contiguous (H, W, 3) BGR array; ``index``
    names it in errors."""
    where = "frame" if index is None else f"frame {index}"
    if not isinstance(frame, np.ndarray):
        raise UserError(f"{where}: expected a numpy uint8 array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise UserError(
            f"{where}: expected uint8 pixels (as cv2.imread / VideoCapture.read return), got dtype "
            f"{frame.dtype} with shape {frame.shape}; convert with np.clip(x, 0, "
            f"255).astype(np.uint8)"
        )
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        raise UserError(
            f"{where}: expected an (H, W, 3) BGR, (H, W, 4) BGRA or (H, W) grayscale image, got "
            f"shape {frame.shape}"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise UserError(f"{where}: empty image of shape {frame.shape}")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(frame)


def normalized_cpu(
    pixels: torch.Tensor,
    size: tuple[int, int] | None,
    lut: np.ndarray,
    memory_format: torch.memory_format,
) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 BGR frames on the CPU -> the network's float RGB input at ``size``
    (the frames' own when None), by OpenCV: each frame swapped to RGB and normalised by ``lut``
    (a 256-entry table per channel) straight into channels-last memory, then resized in float
    (bilinear with half-pixel centres, as ``F.interpolate``). The values of torch's passes up to
    float rounding, in a fraction of their time."""
    frames = pixels.numpy()
    height, width = frames.shape[1:3]
    size = tuple(size or (height, width))
    out = np.empty((len(frames), *size, 3), np.float32)
    for frame, nhwc in zip(frames, out):
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if (height, width) == size:
            cv2.LUT(rgb, lut, dst=nhwc)
        else:
            cv2.resize(cv2.LUT(rgb, lut), size[::-1], dst=nhwc, interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(out).permute(0, 3, 1, 2)  # an NCHW view of channels-last memory
    return x.contiguous(memory_format=memory_format)
