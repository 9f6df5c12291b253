"""Paint the street's stuff: skyline, buildings, parks, walls and fences, trees, poles, clutter.

Facade painters take ``(canvas, camera, item, x, z)``, street painters also the instance counters
(unused here: stuff has no instances); (x, z) is where the item stands at the rendered time.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from densemnv3.data.labels import NAME_TO_ID

from .camera import Z_NEAR, Camera, Canvas, face_quads, frontal
from .palette import Color, shade
from .scene import Building, Crown, Item, Sign, TrafficLight


def draw_skyline(cv: Canvas, cam: Camera, item: Item, x: float, z: float) -> None:
    if z < 5:
        return
    for x0, x1, height, color, trees in item.spec.blocks:
        quad = frontal(cam, x0, x1, 0, height, z)
        if trees:
            center = cam.project(((x0 + x1) / 2, height * 0.5, z))
            axes = ((x1 - x0) * cam.f / z / 2, height * cam.f / z / 2)
            cv.ellipse(center, axes, color, NAME_TO_ID["vegetation"], 18)
        else:
            cv.poly([quad], color, NAME_TO_ID["building"], 6)


def draw_building(cv: Canvas, cam: Camera, item: Item, x: float, z: float) -> None:
    b = item.spec
    s, z1, height, color = b.sign, z + b.length, b.height, b.color
    if z1 <= Z_NEAR:
        return
    if z >= Z_NEAR:  # the gable end facing the camera
        front = face_quads((x, 0, z), (s, 0, 0), 0, b.depth, 0, height)
        cv.poly(list(cam.project(front)), shade(color, 0.8), NAME_TO_ID["building"], 9)
        _draw_windows(cv, cam, (x, 0, z), (s, 0, 0), b.depth, height, b, 0.8)
    zc = max(z, Z_NEAR)
    side = face_quads((x, 0, zc), (0, 0, 1), 0, z1 - zc, 0, height)
    cv.poly(list(cam.project(side)), color, NAME_TO_ID["building"], 9)
    _draw_windows(cv, cam, (x, 0, z), (0, 0, 1), b.length, height, b, 1.0, u_min=zc - z)
    cornice = face_quads((x, 0, zc), (0, 0, 1), 0, z1 - zc, height - 0.5, height)
    cv.poly(list(cam.project(cornice)), shade(color, 0.7))


def _draw_windows(
    cv: Canvas,
    cam: Camera,
    origin: tuple[float, float, float],
    axis: tuple[float, float, float],
    length: float,
    height: float,
    b: Building,
    tone: float,
    u_min: float = 0.0,
) -> None:
    """Windows (some lit) on a facade, and shop windows on its ground floor."""
    cols = np.arange(b.column * 0.5, length - b.column * 0.4, b.column)
    rows = b.sill + np.arange(b.floor, height - b.floor * 0.7, b.floor)
    u0, y0 = (a.ravel() for a in np.meshgrid(cols, rows))
    keep = u0 >= u_min
    if not keep.any():
        return
    polys = cam.project(face_quads(origin, axis, u0, u0 + b.window_w, y0, y0 + b.window_h)[keep])
    bright = (np.flatnonzero(keep) * 7 + b.pattern) % 5 == 0
    cv.poly(list(polys[~bright]), shade(b.glass, tone))
    cv.poly(list(polys[bright]), shade(b.glass2, tone))
    if b.shop:
        shops = np.arange(0.5, length - 2.5, 4.0)
        shops = shops[shops >= u_min]
        if len(shops):
            cv.poly(
                list(cam.project(face_quads(origin, axis, shops, shops + 3.2, 0.3, 2.6))),
                shade(b.glass, 0.8 * tone),
            )


def _draw_crown(cv: Canvas, cam: Camera, x: float, z: float, crown: Crown, color: Color) -> None:
    if z < 1.0:
        return
    code = NAME_TO_ID["vegetation"]
    if crown.trunk:
        cv.poly([frontal(cam, x - 0.17, x + 0.17, 0, crown.y, z)], (84, 64, 46), code, 10)
    center, radius = cam.project((x, crown.y, z)), crown.r * cam.f / z
    base = shade(color, crown.tone)
    cv.ellipse(center, (radius, 0.9 * radius), base, code, 26)
    for leaf in crown.leaves:
        cv.ellipse(
            (center[0] + leaf.dx * radius, center[1] + leaf.dy * 0.9 * radius),
            (leaf.radius * radius, 0.8 * leaf.radius * radius),
            shade(base, leaf.tone),
        )


def draw_park(cv: Canvas, cam: Camera, item: Item, x: float, z: float) -> None:
    park = item.spec
    for crown in park.crowns:
        _draw_crown(cv, cam, x + park.sign * crown.dx, z + crown.dz, crown, park.color)


def draw_boundary(cv: Canvas, cam: Camera, item: Item, x: float, z: float) -> None:
    """Walls, fences and hedges along the outer edge of the sidewalk."""
    p, kind = item.spec, item.kind
    z0, z1, height = max(z, Z_NEAR), z + p.length, p.height
    if z1 <= z0:
        return

    def strip(u0, u1, y0, y1, origin_z: float = z0) -> np.ndarray:
        return cam.project(face_quads((x, 0, origin_z), (0, 0, 1), u0, u1, y0, y1))

    label = {"wall": "wall", "fence": "fence", "hedge": "vegetation"}[kind]
    tex = {"wall": 8, "fence": 6, "hedge": 28}[kind]
    cv.poly(list(strip(0, z1 - z0, 0, height)), p.color, NAME_TO_ID[label], tex)
    if kind == "wall":  # concrete blocks under a coping
        cv.poly(list(strip(0, z1 - z0, height - 0.12, height)), shade(p.color, 1.15))
        rows = np.arange(0.5, height - 0.2, 0.5)
        joints = z + np.arange(math.ceil(z0 - z), min(z1, 40) - z, 1.2)
        seams = [strip(0, z1 - z0, rows - 0.025, rows + 0.025)]
        seams.append(strip(joints, joints + 0.04, 0, height - 0.12, origin_z=0))
        cv.poly([q for quads in seams for q in quads], shade(p.color, 0.75))
    elif kind == "fence":
        dark = shade(p.color, 0.55)
        for y in (0.15, height - 0.1):
            cv.poly(list(strip(0, z1 - z0, y - 0.05, y + 0.05)), dark)
        bars = z + np.arange(math.ceil((z0 - z) * 5) / 5, min(z1, 40) - z, 0.2)
        if len(bars):
            cv.poly(list(strip(bars, bars + 0.04, 0, height, origin_z=0)), dark)


def draw_tree(cv: Canvas, cam: Camera, item: Item, x: float, z: float, codes: dict) -> None:
    _draw_crown(cv, cam, x, z, item.spec.crown, item.spec.color)


def draw_pole(cv: Canvas, cam: Camera, item: Item, x: float, z: float, codes: dict) -> None:
    """A pole with a street lamp, a traffic sign or a traffic light (or nothing) on it."""
    p, k, code = item.spec, cam.f / z, NAME_TO_ID["pole"]
    half, s, top = max(p.width * k / 2, 0.6) / k, p.toward, p.height
    cv.poly([frontal(cam, x - half, x + half, 0, top, z)], p.color, code, 5)
    if p.top == "lamp":
        a, b = cam.project((x, top - 0.2, z)), cam.project((x + s * 1.6, top + 0.3, z))
        cv.line(a, b, 0.12 * k, p.color, code, 5)
        lamp = frontal(cam, x + s * 1.2, x + s * 2.0, top + 0.1, top + 0.35, z)
        cv.poly([lamp], shade(p.color, 1.3), code, 5)
    elif p.top == "sign":
        _draw_sign(cv, cam, x, p.sign.y, z, p.sign)
        if p.sign.second:
            second = dataclasses.replace(p.sign, shape="rect", size=0.7 * p.sign.size)
            _draw_sign(cv, cam, x, p.sign.y - 0.75 * p.sign.size - 0.15, z, second)
    elif p.top == "light":
        light = p.light
        if light.arm:
            a, b = cam.project((x, top - 0.3, z)), cam.project((x + s * light.arm, top - 0.3, z))
            cv.line(a, b, 0.15 * k, p.color, code, 5)
            _draw_light(cv, cam, x + s * light.arm * 0.85, top - 0.4 - light.box, z, light)
            if light.both:
                _draw_light(cv, cam, x, 2.2, z, light)
        else:
            _draw_light(cv, cam, x, top - light.box - 0.1, z, light)


_SIGN_CORNERS = {
    "triangle": [(0, -1.1), (-0.95, 0.6), (0.95, 0.6)],
    "rect": [(-1.1, -0.8), (1.1, -0.8), (1.1, 0.8), (-1.1, 0.8)],
    "diamond": [(0, -1), (1, 0), (0, 1), (-1, 0)],
    "octagon": [(math.cos(a), math.sin(a)) for a in np.arange(8) * math.pi / 4 + math.pi / 8],
}


def _draw_sign(cv: Canvas, cam: Camera, x: float, y: float, z: float, sign: Sign) -> None:
    center, r = cam.project((x, y, z)), sign.size / 2 * cam.f / z
    code = NAME_TO_ID["traffic sign"]
    if sign.shape == "circle":
        cv.ellipse(center, (r, r), sign.rim, code, 3)
        cv.ellipse(center, (0.72 * r, 0.72 * r), sign.fill)
        return
    corners = _SIGN_CORNERS[sign.shape]
    outline = np.asarray(center) + r * np.asarray(corners)
    cv.poly([outline], sign.rim, code, 3)
    cv.poly([np.asarray(center) + 0.7 * r * np.asarray(corners)], sign.fill)


def _draw_light(
    cv: Canvas, cam: Camera, x: float, y0: float, z: float, light: TrafficLight
) -> None:
    width, height = light.width, light.box
    housing = frontal(cam, x - width / 2, x + width / 2, y0, y0 + height, z)
    cv.poly([housing], light.housing, NAME_TO_ID["traffic light"], 3)
    lit = ((255, 40, 30), (255, 180, 0), (40, 230, 120))
    r = 0.3 * width * cam.f / z
    for i, color in enumerate(lit):
        center = cam.project((x, y0 + height * (5 - 2 * i) / 6, z))
        cv.ellipse(center, (r, r), color if i == light.lit else shade(color, 0.25))


def draw_static(cv: Canvas, cam: Camera, item: Item, x: float, z: float, codes: dict) -> None:
    """Bins, benches and advertising columns: Cityscapes 'static' (ignored in training)."""
    p, code = item.spec, NAME_TO_ID["static"]
    half, height, color = p.width / 2, p.height, p.color
    if p.kind == "bench":
        for y0, y1 in ((0.4, 0.5), (0.6, 0.9)):
            cv.poly([frontal(cam, x - half, x + half, y0, y1, z)], color, code, 6)
        for leg in (x - half + 0.1, x + half - 0.15):
            cv.poly([frontal(cam, leg, leg + 0.05, 0, 0.4, z)], (40, 40, 40), code, 6)
        return
    cv.poly([frontal(cam, x - half, x + half, 0, height, z)], color, code, 6)
    if p.kind == "column":
        poster = frontal(cam, x - half * 0.9, x + half * 0.9, 0.8, height - 0.4, z)
        cv.poly([poster], shade(color, 1.4))
    lid = frontal(cam, x - half * 1.05, x + half * 1.05, height - 0.08, height, z)
    cv.poly([lid], shade(color, 0.7), code, 6)
