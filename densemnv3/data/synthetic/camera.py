"""The pinhole camera, street geometry in world coordinates, and the canvas things are painted on.

World coordinates are metres: x right, y up, z ahead of the camera, which stands at ``height``
metres above the ground at x = z = 0 and looks down +z.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np

Z_NEAR = 0.5  # near clipping plane (m)
FAR = 1e4  # "infinity" for ground strips (m)


class Camera(NamedTuple):
    f: float
    cx: float
    cy: float  # horizon row
    height: float

    def project(self, points) -> np.ndarray:
        """World points (..., 3) -> pixels (..., 2); z is clamped to the near plane."""
        p = np.asarray(points, dtype=np.float64)
        z = np.maximum(p[..., 2], Z_NEAR)
        u = self.cx + self.f * p[..., 0] / z
        v = self.cy + self.f * (self.height - p[..., 1]) / z
        return np.stack((u, v), axis=-1)


class Canvas:
    """Flat colours, Cityscapes instance ids and texture strength, painted back to front.

    ``code`` is what goes into the instance-id map (a label id, or label id * 1000 + index for a
    thing); ``code=None`` paints the image only (windows, markings: details inside a region).
    """

    def __init__(self, height: int, width: int) -> None:
        self.rgb = np.zeros((height, width, 3), np.uint8)
        self.ids = np.zeros((height, width), np.uint16)
        self.tex = np.zeros((height, width), np.float32)

    def _paint(self, draw: Callable, color, code: int | None, tex: float | None) -> None:
        draw(self.rgb, tuple(float(c) for c in color))
        if code is not None:
            draw(self.ids, float(code))
        if tex is not None:
            draw(self.tex, float(tex))

    def poly(self, polys, color, code: int | None = None, tex: float | None = None) -> None:
        """Fill polygons given in pixels."""
        pts = [fixed(p).reshape(-1, 2) for p in polys]
        if pts:
            self._paint(lambda img, c: cv2.fillPoly(img, pts, c, cv2.LINE_8, 4), color, code, tex)

    def ellipse(
        self, center, axes, color, code: int | None = None, tex: float | None = None, thickness=-1
    ) -> None:
        """Fill (or, with ``thickness`` >= 0, outline) an upright ellipse."""
        c, a = tuple(fixed(center).tolist()), tuple(np.maximum(fixed(axes), 8).tolist())
        thickness = thickness if thickness < 0 else max(1, round(thickness))
        self._paint(
            lambda img, col: cv2.ellipse(img, c, a, 0, 0, 360, col, thickness, cv2.LINE_8, 4),
            color,
            code,
            tex,
        )

    def line(self, p0, p1, width, color, code: int | None = None, tex: float | None = None) -> None:
        """A straight stroke ``width`` pixels wide."""
        a, b, t = tuple(fixed(p0).tolist()), tuple(fixed(p1).tolist()), max(1, round(width))
        self._paint(lambda img, col: cv2.line(img, a, b, col, t, cv2.LINE_8, 4), color, code, tex)

    def haze_disc(self, center, radius: float, color, alpha: float, code: int) -> None:
        """Blend ``color`` into a disc (a spoked wheel) and give it ``code``."""
        h, w = self.ids.shape
        x0, y0 = max(int(center[0] - radius) - 1, 0), max(int(center[1] - radius) - 1, 0)
        x1, y1 = min(int(center[0] + radius) + 2, w), min(int(center[1] + radius) + 2, h)
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        c = tuple(fixed((center[0] - x0, center[1] - y0)).tolist())
        cv2.circle(mask, c, int(radius * 16), 1, -1, cv2.LINE_8, 4)
        m = mask.astype(bool)
        roi = self.rgb[y0:y1, x0:x1]
        roi[m] = (roi[m] * (1 - alpha) + np.asarray(color) * alpha).astype(np.uint8)
        self.ids[y0:y1, x0:x1][m] = code


def fixed(points) -> np.ndarray:
    """Pixel coordinates as int32 with 4 fractional bits (OpenCV's ``shift=4``)."""
    return np.clip(np.round(np.asarray(points, dtype=np.float64) * 16), -(2**28), 2**28).astype(
        np.int32
    )


def face_quads(origin, axis, u0, u1, y0, y1) -> np.ndarray:
    """Upright rectangles (n, 4, 3) on the face from ground point ``origin`` along ``axis``."""
    u0, u1, y0, y1 = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(a, float)) for a in (u0, u1, y0, y1))
    )
    us = np.stack((u0, u1, u1, u0), axis=-1)
    pts = np.asarray(origin, float) + us[..., None] * np.asarray(axis, float)
    pts[..., 1] = np.stack((y0, y0, y1, y1), axis=-1)
    return pts


def ground_quads(x0, x1, z0, z1) -> np.ndarray:
    """Ground rectangles (n, 4, 3), z clipped to the near plane (empty ones dropped)."""
    x0, x1, z0, z1 = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(a, float)) for a in (x0, x1, z0, z1))
    )
    z0 = np.maximum(z0, Z_NEAR)
    keep = z1 > z0
    x0, x1, z0, z1 = x0[keep], x1[keep], z0[keep], z1[keep]
    zeros = np.zeros_like(x0)
    corners = [(x0, z0), (x1, z0), (x1, z1), (x0, z1)]
    return np.stack([np.stack((x, zeros, z), axis=-1) for x, z in corners], axis=-2)


def frontal(cam: Camera, x0: float, x1: float, y0: float, y1: float, z: float) -> np.ndarray:
    """A rectangle facing the camera at depth ``z``, in pixels (4, 2)."""
    return cam.project([(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)])
