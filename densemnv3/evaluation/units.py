"""How metrics are shown: IoU, accuracy and AP are fractions in [0, 1] everywhere — tables,
summary lines, ``metrics.json``, ``results.csv`` — as pycocotools prints them."""

from __future__ import annotations

import math

UNIT = "fraction 0-1"


def fmt(value: float | None) -> str:
    """``0.5312``; ``—`` where undefined (``None``, NaN, or pycocotools' -1)."""
    return "—" if value is None or math.isnan(value) or value < 0 else f"{value:.4f}"
