"""Render a scene at time t: sky and ground, facades, then street items far to near, then the look.

Everything is painted back to front with OpenCV into a :class:`~.camera.Canvas`, then textured,
lit, blurred and noised per image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from densemnv3.data.labels import NAME_TO_ID

from .camera import FAR, Canvas, ground_quads
from .draw_street import (
    draw_boundary,
    draw_building,
    draw_park,
    draw_pole,
    draw_skyline,
    draw_static,
    draw_tree,
)
from .draw_things import draw_person, draw_two_wheeler, draw_vehicle
from .palette import shade
from .scene import Scene

_DRAW_FACADE = {
    "skyline": draw_skyline, "building": draw_building, "park": draw_park,
    "wall": draw_boundary, "fence": draw_boundary, "hedge": draw_boundary,
}  # fmt: skip
_FACADE_LAYER = {"skyline": 0, "building": 1, "park": 1, "wall": 2, "fence": 2, "hedge": 2}
_DRAW_STREET = {
    "tree": draw_tree, "pole": draw_pole, "static": draw_static,
    "car": draw_vehicle, "truck": draw_vehicle, "bus": draw_vehicle, "train": draw_vehicle,
    "person": draw_person, "cyclist": draw_two_wheeler, "motorcyclist": draw_two_wheeler,
    "bicycle": draw_two_wheeler, "motorcycle": draw_two_wheeler,
}  # fmt: skip


def render(sc: Scene, t: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The scene at time ``t`` (s): RGB uint8 image and Cityscapes instance ids (uint16)."""
    h, w = sc.size
    cam, dz = sc.cam, sc.speed * t
    cv = Canvas(h, w)
    _draw_sky(cv, sc, t)
    _draw_ground(cv, sc, dz)
    for item in sorted(sc.facades, key=lambda o: (_FACADE_LAYER[o.kind], -o.z)):
        _DRAW_FACADE[item.kind](cv, cam, item, item.x, item.z - dz)
    placed = []
    for i, item in enumerate(sc.street):
        x, z = item.x + item.vx * t, item.z + item.vz * t - dz
        x0, x1, z0 = x + item.fp[0], x + item.fp[1], z + item.fp[2]
        if 1.0 <= z0 < 400:
            placed.append((-math.hypot(max(x0, 0.0, -x1), z0), i, item, x, z))
    codes: dict[int, int] = {}
    for _, _, item, x, z in sorted(placed, key=lambda entry: entry[:2]):
        _DRAW_STREET[item.kind](cv, cam, item, x, z, codes)
    if sc.look.ego:
        hood = sc.look.ego * h
        center = (w / 2, h + 0.9 * hood)
        cv.ellipse(center, (0.8 * w, 1.9 * hood), (38, 40, 44), NAME_TO_ID["ego vehicle"], 4)
        cv.ellipse(center, (0.5 * w, 1.5 * hood), (70, 72, 78), None, None, 2)
    if sc.look.void:
        u, v, r = sc.look.void
        cv2.ellipse(cv.ids, (int(u), int(v)), (int(r), int(0.6 * r)), 0, 0, 360, 0, -1)
    return _finish(cv, sc, rng), cv.ids


def _finish(cv: Canvas, sc: Scene, rng: np.random.Generator) -> np.ndarray:
    """Texture, lighting, colour cast, contrast, blur and sensor noise."""
    h, w = sc.size
    look = sc.look
    tex_rng = np.random.default_rng(sc.texture_seed)  # same texture in every video frame
    low = cv2.resize(tex_rng.standard_normal((h // 8 + 2, w // 8 + 2), dtype=np.float32), (w, h))
    high = tex_rng.standard_normal((h, w), dtype=np.float32)
    img = cv.rgb.astype(np.float32)
    img += ((0.6 * low + 0.8 * high) * cv.tex)[..., None]
    light = cv2.resize(look.light, (w, h), interpolation=cv2.INTER_CUBIC)
    img *= light[..., None] * look.cast
    img = (img - 128.0) * look.contrast + (128.0 + look.brightness)
    if look.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), look.blur)
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * look.noise
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_sky(cv: Canvas, sc: Scene, t: float) -> None:
    h, w = sc.size
    horizon = min(h, max(1, math.ceil(sc.cam.cy)))
    a = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    top = np.asarray(sc.colors.sky_top, np.float32)
    bottom = np.asarray(sc.colors.sky_bottom, np.float32)
    cv.rgb[:horizon] = top * (1 - a) + bottom * a
    cv.ids[:horizon] = NAME_TO_ID["sky"]
    cv.tex[:horizon] = 2
    for cloud in sc.clouds:
        u, size = (cloud.u + 3 * t) % (1.3 * w) - 0.15 * w, cloud.scale
        for du, dv, r, tone in cloud.puffs:
            center = (u + du * size, cloud.v + dv * size)
            cv.ellipse(center, (r * size, 0.5 * r * size), (238 * tone,) * 3, None, 4)


def _draw_ground(cv: Canvas, sc: Scene, dz: float) -> None:
    """Terrain, sidewalks with curbs and joints, road with parking, markings and crossings."""
    h, w = sc.size
    cam, c, road, ids = sc.cam, sc.colors, sc.road, NAME_TO_ID

    def ground(x0, x1, z0, z1, color, code=None, tex=None) -> None:
        cv.poly(list(cam.project(ground_quads(x0, x1, z0, z1))), color, code, tex)

    below = np.array([[-1, cam.cy], [w + 1, cam.cy], [w + 1, h + 1], [-1, h + 1]])
    cv.poly([below], c.terrain, ids["terrain"], 16)
    tile = road.tile
    joints = np.arange(int(30 / tile) + 1) * tile + (-dz % tile)
    for side in road.sides:
        s, edge, outer = side.sign, side.edge, side.edge + side.walk
        if side.paved:
            ground(s * outer, s * (outer + 60), 0, FAR, shade(c.walk, 0.93), ids["sidewalk"], 7)
        ground(s * edge, s * outer, 0, FAR, c.walk, ids["sidewalk"], 6)
        ground(s * edge, s * outer, joints, joints + 0.05, shade(c.walk, 0.8))
        ground(s * edge, s * (edge + 0.2), 0, FAR, shade(c.walk, 1.12), ids["sidewalk"], 4)
    left, right = road.left, road.right
    ground(-left, right, 0, FAR, c.road, ids["road"], 9)
    for x, half, z0, length, tone in road.patches:
        ground(x - half, x + half, z0 - dz, z0 + length - dz, shade(c.road, tone))
    if road.rails is not None:
        for x in (road.rails - 0.72, road.rails + 0.72):
            ground(x - 0.04, x + 0.04, 0, FAR, (70, 70, 74))
    for side in road.sides:
        s, edge = side.sign, side.edge
        for z0, z1 in side.parking:
            bay = shade(c.road, 1.18)
            ground(s * (edge - 2.4), s * edge, z0 - dz, z1 - dz, bay, ids["parking"], 14)
            stripes = np.arange(z0, z1, 5.5) - dz
            ground(s * (edge - 2.4), s * edge, stripes, stripes + 0.12, c.marking)
    period = road.period
    dashes = (road.phase - dz) % period + period * np.arange(-1, int(road.z_end / period) + 2)
    for x, solid in road.lines:
        z0, z1 = (0, FAR) if solid else (dashes, dashes + road.dash)
        ground(x - 0.07, x + 0.07, z0, z1, c.marking, ids["road"], 3)
    if road.crosswalk is not None:
        xs = np.arange(-left + 0.3, right - 0.5, 1.0)
        z0 = road.crosswalk - dz
        ground(xs, xs + 0.5, z0, z0 + 3.0, c.marking, ids["road"], 3)
