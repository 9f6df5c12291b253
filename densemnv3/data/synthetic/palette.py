"""The colours of the synthetic street (RGB), and the random draws that choose and vary them."""

from __future__ import annotations

import numpy as np

Color = tuple[float, float, float]

BUILDING_COLORS = (
    (196, 178, 150),
    (150, 84, 62),
    (128, 128, 134),
    (222, 212, 188),
    (92, 92, 98),
    (214, 196, 120),
    (200, 160, 150),
    (170, 176, 168),
    (110, 82, 70),
    (236, 232, 224),
)
WALK_COLORS = ((168, 164, 160), (150, 150, 156), (186, 172, 150), (165, 125, 115), (196, 194, 190))
TERRAIN_COLORS = ((112, 150, 78), (138, 160, 92), (150, 132, 96), (124, 140, 84))
CAR_COLORS = (
    (198, 200, 206),
    (28, 28, 32),
    (238, 238, 236),
    (126, 22, 28),
    (28, 48, 112),
    (92, 96, 102),
    (40, 82, 62),
    (70, 110, 160),
    (150, 36, 30),
)
BUS_COLORS = ((232, 188, 40), (190, 38, 40), (40, 82, 172), (236, 130, 30), (40, 140, 90))
TRAM_COLORS = ((236, 234, 226), (240, 206, 60), (220, 220, 214), (200, 206, 214))
TRAM_BANDS = ((196, 30, 36), (30, 80, 170), (30, 130, 70), (236, 120, 20))
CLOTH_COLORS = (
    (30, 30, 34),
    (34, 42, 80),
    (210, 210, 206),
    (170, 30, 40),
    (40, 100, 60),
    (0, 120, 200),
    (220, 60, 120),
    (60, 90, 150),
    (200, 120, 40),
    (120, 60, 110),
    (236, 200, 60),
)
PANTS_COLORS = ((40, 50, 80), (30, 30, 32), (80, 80, 86), (170, 150, 120), (60, 70, 110))
SKIN_COLORS = ((232, 190, 160), (200, 150, 115), (150, 100, 70), (100, 66, 46))
HAIR_COLORS = ((30, 24, 20), (80, 52, 30), (200, 170, 110), (120, 120, 120))
STATIC_COLORS = ((60, 110, 70), (120, 120, 124), (220, 120, 40), (50, 80, 150), (120, 80, 50))
GLASS = (38, 50, 66)
CHASSIS = (44, 44, 46)
TYRE = (26, 26, 28)
RED_LIGHT = (210, 30, 30)
HEAD_LIGHT = (236, 232, 200)


def shade(color, k: float) -> Color:
    """``color`` made ``k`` times brighter (darker for k < 1), saturating at 255."""
    return tuple(min(255.0, c * k) for c in color)


def jitter(rng: np.random.Generator, color, amount: float) -> Color:
    """``color`` plus Gaussian noise of ``amount`` per channel."""
    return tuple(np.clip(np.asarray(color, float) + rng.normal(0, amount, 3), 0, 255).tolist())


def pick(rng: np.random.Generator, options):
    """One of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]
