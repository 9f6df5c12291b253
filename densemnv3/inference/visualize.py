"""Overlays on OpenCV BGR frames: segmentation colours, detection boxes, an FPS readout.

``overlay_segmentation`` returns a new frame; ``draw_detections`` and ``draw_fps`` draw in place
and return the frame they were given (OpenCV's convention), so calls chain either way.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from densemnv3.data.labels import IGNORE_INDEX, TRAIN_ID_PALETTE

__all__ = [
    "class_color",
    "contact_sheet",
    "draw_detections",
    "draw_fps",
    "draw_label",
    "overlay_segmentation",
]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def overlay_segmentation(
    frame_bgr: np.ndarray,
    label_map: np.ndarray,
    alpha: float = 0.5,
    palette_rgb: np.ndarray = TRAIN_ID_PALETTE,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """``frame_bgr`` blended with the colours of ``label_map`` (train ids, Cityscapes palette by
    default); ignored pixels (``ignore_index``) keep the frame's colour. Returns a new uint8 BGR
    frame."""
    if label_map.shape != frame_bgr.shape[:2]:
        raise ValueError(
            f"label map {label_map.shape} does not match the frame {frame_bgr.shape[:2]}"
        )
    # A 256-entry table through cv2.LUT: cheaper than indexing the palette with palette[label_map]
    lut = np.zeros((1, 256, 3), np.uint8)
    lut[0, : len(palette_rgb)] = palette_rgb[:256, ::-1]
    labels = label_map if label_map.dtype == np.uint8 else label_map.astype(np.uint8)
    colours = cv2.LUT(cv2.merge([labels, labels, labels]), lut)
    out = cv2.addWeighted(frame_bgr, 1.0 - alpha, colours, alpha, 0.0)
    ignored = label_map == ignore_index
    if ignored.any():
        out[ignored] = frame_bgr[ignored]
    return out


def class_color(label: int) -> tuple[int, int, int]:
    """A bright BGR colour for ``label``; consecutive labels get well-separated hues."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def _text_color(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = bgr
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _font_scale(frame: np.ndarray) -> float:
    return float(np.clip(min(frame.shape[:2]) / 720.0, 0.35, 1.2))


def draw_label(
    frame: np.ndarray,
    text: str,
    origin: tuple[int, int],
    color: tuple[int, int, int],
    *,
    font_scale: float | None = None,
    above: bool = True,
) -> np.ndarray:
    """``text`` on a filled ``color`` box whose bottom-left (``above``) or top-left corner is at
    ``origin``, moved inside the frame when it would leave it."""
    scale = _font_scale(frame) if font_scale is None else font_scale
    thickness = max(1, round(scale * 1.5))
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(2, round(3 * scale))
    box_w, box_h = tw + 2 * pad, th + base + 2 * pad
    height, width = frame.shape[:2]
    x, y = origin
    top = y - box_h if above else y
    if top < 0:  # no room above: put it just inside the box's top edge
        top = y if above else 0
    x = int(min(max(x, 0), max(width - box_w, 0)))
    top = int(min(max(top, 0), max(height - box_h, 0)))
    cv2.rectangle(frame, (x, top), (x + box_w, top + box_h), color, cv2.FILLED)
    cv2.putText(
        frame,
        text,
        (x + pad, top + pad + th),
        _FONT,
        scale,
        _text_color(color),
        thickness,
        cv2.LINE_AA,
    )
    return frame


def draw_detections(
    frame_bgr: np.ndarray,
    detections: Mapping[str, Any],
    *,
    class_names: Sequence[str] | None = None,
    thickness: int | None = None,
    font_scale: float | None = None,
    show_scores: bool = True,
) -> np.ndarray:
    """Draw ``detections`` (``boxes`` xyxy frame pixels, ``scores``, ``labels``, optional
    ``class_names`` per detection, as :class:`~densemnv3.inference.Predictor` returns) in place.

    Names come from the detections' ``class_names``, else ``class_names[label]``, else the label.
    Each class has its own colour; labels sit on a filled box above each detection. The
    highest-scored detections are drawn last, on top.
    """
    boxes = np.asarray(detections["boxes"], dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(detections["labels"]).reshape(-1).astype(np.int64)
    scores = np.asarray(detections.get("scores", np.ones(len(boxes))), dtype=np.float32).reshape(-1)
    names = detections.get("class_names")
    scale = _font_scale(frame_bgr) if font_scale is None else font_scale
    line = thickness or max(1, round(min(frame_bgr.shape[:2]) / 360))
    for i in np.argsort(scores, kind="stable"):
        label = int(labels[i])
        if names is not None:
            name = names[i]
        elif class_names is not None and 0 <= label < len(class_names):
            name = class_names[label]
        else:
            name = str(label)
        color = class_color(label)
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
        cv2.rectangle(frame_bgr, (x1, y1), (x2, y2), color, line)  # axis-aligned: no AA
        text = f"{name} {scores[i]:.2f}" if show_scores else name
        draw_label(
            frame_bgr, text, (x1 - (line - 1) // 2, y1 - (line - 1) // 2), color, font_scale=scale
        )
    return frame_bgr


def draw_fps(frame: np.ndarray, fps: float, extra: str = "") -> np.ndarray:
    """``"12.3 FPS  <extra>"`` in the top-left corner, on a dark box; in place."""
    text = f"{fps:.1f} FPS" + (f"  {extra}" if extra else "")
    return draw_label(frame, text, (0, 0), (32, 32, 32), above=False)


def contact_sheet(
    tiles: Sequence[tuple[np.ndarray, str]],
    *,
    columns: int = 4,
    width: int = 320,
    legend: Sequence[tuple[str, tuple[int, int, int]]] = (),
) -> np.ndarray:
    """One BGR image of ``tiles`` (BGR frames, each scaled to ``width`` pixels wide, with its
    caption under it) on a grid of ``columns``, and under it a ``legend`` of (name, RGB colour)
    swatches, so that a wrong palette or a swapped class list shows at a glance."""
    if not tiles:
        raise ValueError("contact_sheet needs at least one tile")
    caption_h = 22
    scaled = [
        cv2.resize(t, (width, max(1, round(t.shape[0] * width / t.shape[1]))), cv2.INTER_AREA)
        for t, _ in tiles
    ]
    cell_h = max(t.shape[0] for t in scaled) + caption_h
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * cell_h, columns * width, 3), 255, np.uint8)
    for i, (tile, (_, caption)) in enumerate(zip(scaled, tiles, strict=True)):
        y, x = (i // columns) * cell_h, (i % columns) * width
        sheet[y : y + tile.shape[0], x : x + width] = tile
        cv2.putText(
            sheet, caption[-40:], (x + 4, y + cell_h - 7), _FONT, 0.42, (0, 0, 0), 1, cv2.LINE_AA
        )
    if not legend:
        return sheet
    per_row = max(1, columns * width // 160)
    strip = np.full((-(-len(legend) // per_row) * 20 + 6, sheet.shape[1], 3), 255, np.uint8)
    for i, (name, rgb) in enumerate(legend):
        y, x = (i // per_row) * 20 + 4, (i % per_row) * 160 + 4
        cv2.rectangle(strip, (x, y), (x + 14, y + 14), tuple(int(c) for c in rgb[::-1]), -1)
        cv2.putText(strip, name[:20], (x + 20, y + 12), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([sheet, strip])
