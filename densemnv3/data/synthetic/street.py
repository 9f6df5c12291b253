"""Draw a street scene from a random generator: camera, road, facades, street furniture, things.

Every value is drawn from the generator in a fixed order; changing that order (even drawing a
value that is then not used) changes every image after it, so the checksum test would fail.
"""

from __future__ import annotations

import math

import numpy as np

from .camera import Camera
from .palette import (
    BUILDING_COLORS,
    GLASS,
    STATIC_COLORS,
    TERRAIN_COLORS,
    WALK_COLORS,
    Color,
    jitter,
    pick,
    shade,
)
from .scene import (
    Block,
    Boundary,
    Building,
    Cloud,
    Crown,
    Item,
    Leaf,
    Look,
    Park,
    Pole,
    Road,
    Scene,
    SceneColors,
    Side,
    Sign,
    Skyline,
    Static,
    TrafficLight,
    Tree,
)
from .things import make_things

MAX_SPEED = 9.0  # fastest camera in a video (m/s)


def make_scene(rng: np.random.Generator, size: tuple[int, int], *, travel: float = 0.0) -> Scene:
    """Draw a street: camera, road layout, facades, street furniture and 0-12 things.

    ``travel`` (m) is how far a video's camera drives: the street and its things extend by it.
    """
    h, w = size
    cam = Camera(
        f=w * rng.uniform(0.7, 1.0), cx=w * rng.uniform(0.45, 0.55),
        cy=h * rng.uniform(0.36, 0.5), height=rng.uniform(1.3, 1.8),
    )  # fmt: skip
    z_end = rng.uniform(110, 200) + travel
    road = _make_road(rng, z_end)
    colors = _make_colors(rng)
    clouds = _make_clouds(rng, cam, w)
    facades = _make_facades(rng, road, colors, z_end)
    street = _make_furniture(rng, road, z_end, colors.veg)
    if rng.random() >= 0.04:
        count = int(rng.integers(2, 13)) * (1 + round(travel / 80))
        street += make_things(rng, cam, size, road, count, 50 + travel)
    look = _make_look(rng, cam, size)
    speed = rng.uniform(5.0, MAX_SPEED)
    return Scene(
        size=(h, w), cam=cam, speed=speed, look=look, colors=colors, road=road, clouds=clouds,
        facades=facades, street=street, texture_seed=int(rng.integers(2**31)),
    )  # fmt: skip


def _make_colors(rng: np.random.Generator) -> SceneColors:
    gray = rng.uniform(82, 122)
    overcast = rng.random() < 0.3
    top = (
        (rng.uniform(175, 200),) * 3
        if overcast
        else (rng.uniform(60, 110), rng.uniform(110, 150), rng.uniform(185, 235))
    )
    return SceneColors(
        road=(gray, gray, gray + rng.uniform(-2, 8)),
        walk=jitter(rng, pick(rng, WALK_COLORS), 8),
        terrain=jitter(rng, pick(rng, TERRAIN_COLORS), 8),
        veg=(rng.uniform(38, 78), rng.uniform(82, 126), rng.uniform(22, 52)),
        marking=(rng.uniform(195, 235),) * 3,
        sky_top=top,
        sky_bottom=jitter(rng, (212, 220, 232) if not overcast else (222, 222, 226), 8),
    )


def _make_clouds(rng: np.random.Generator, cam: Camera, w: int) -> list[Cloud]:
    clouds = []
    for _ in range(int(rng.integers(0, 6))):
        u, v, scale = (
            rng.uniform(0, 1.3 * w),
            rng.uniform(0.05, 0.9) * cam.cy,
            rng.uniform(0.04, 0.12) * w,
        )
        puffs = [
            (rng.normal(0, 1.0), rng.normal(0, 0.3), rng.uniform(0.5, 1.2), rng.uniform(0.9, 1.05))
            for _ in range(5)
        ]
        clouds.append(Cloud(u, v, scale, puffs))
    return clouds


def _make_look(rng: np.random.Generator, cam: Camera, size: tuple[int, int]) -> Look:
    h, w = size
    return Look(
        contrast=rng.uniform(0.8, 1.15),
        brightness=rng.uniform(-20, 15),
        cast=rng.uniform(0.93, 1.07, 3).astype(np.float32),
        light=(1 + rng.uniform(0.03, 0.12) * rng.standard_normal((3, 4))).astype(np.float32),
        noise=rng.uniform(1.0, 4.0),
        blur=rng.uniform(0.3, 0.8) if rng.random() < 0.6 else 0.0,
        ego=rng.uniform(0.07, 0.14) if rng.random() < 0.25 else None,
        void=(rng.uniform(0, w), rng.uniform(cam.cy, h), rng.uniform(0.02, 0.06) * w)
        if rng.random() < 0.15
        else None,
    )


def _make_road(rng: np.random.Generator, z_end: float) -> Road:
    lane = rng.uniform(3.0, 3.6)
    n_left, n_right = int(rng.integers(0, 3)), int(rng.integers(0, 2))
    oncoming = n_left > 0 and rng.random() < 0.7
    lanes = [(k * lane, -1 if oncoming and k < 0 else 1) for k in range(-n_left, n_right + 1)]
    lines = [((k + 0.5) * lane, oncoming and k == -1) for k in range(-n_left, n_right)]
    left, right = lane * (0.5 + n_left), lane * (0.5 + n_right)
    if rng.random() < 0.6:
        lines += [(-left + 0.3, True), (right - 0.3, True)]
    sides = [_make_side(rng, sign, edge) for sign, edge in ((-1, left), (1, right))]
    return Road(
        lane=lane, left=left, right=right, lanes=lanes, lines=lines, sides=sides,
        period=rng.uniform(8, 12), dash=rng.uniform(2.5, 4.5), phase=rng.uniform(0, 12),
        crosswalk=rng.uniform(8, 40) if rng.random() < 0.25 else None,
        patches=[(rng.uniform(-left, right), rng.uniform(1, 3), rng.uniform(3, 60),
                  rng.uniform(2, 8), rng.uniform(0.8, 1.1))
                 for _ in range(int(rng.integers(0, 4)))],
        tile=rng.uniform(0.5, 1.2), z_end=z_end,
    )  # fmt: skip


def _make_side(rng: np.random.Generator, sign: int, edge: float) -> Side:
    side = Side(
        sign=sign, edge=edge, walk=rng.uniform(1.5, 4.5),
        setback=rng.uniform(1, 5) if rng.random() < 0.5 else 0.0,
        paved=rng.random() < 0.4, density=rng.uniform(0.3, 1.0), trees=rng.random() < 0.45,
    )  # fmt: skip
    if rng.random() < 0.3:
        z0 = rng.uniform(0, 30)
        side.parking.append((z0, z0 + rng.uniform(15, 60)))
    return side


def _make_facades(
    rng: np.random.Generator, road: Road, colors: SceneColors, z_end: float
) -> list[Item]:
    """Far skyline closing the street, then buildings, parks, walls and fences along both sides."""
    facades = [_make_skyline(rng, colors, z_end)]
    for side in road.sides:
        sign, outer = side.sign, side.edge + side.walk
        x_face = sign * (outer + side.setback)
        z = rng.uniform(-15, 0)
        while z < z_end:
            r = rng.random()
            if r < side.density:
                length = rng.uniform(8, 35)
                building = _building(rng, sign, length)
                facades.append(Item("building", x_face + sign * rng.uniform(0, 1), z, building))
                gap = 0.0 if rng.random() < 0.6 else rng.uniform(2, 12)
            else:
                length, gap = rng.uniform(8, 35), 0.0
                if r < side.density + (1 - side.density) * 0.7:
                    facades.append(Item("park", x_face, z, _park(rng, sign, length, colors.veg)))
            if rng.random() < 0.35:
                facades.append(_boundary(rng, sign * outer, z, length, colors.veg))
            z += length + gap
    return facades


def _make_skyline(rng: np.random.Generator, colors: SceneColors, z_end: float) -> Item:
    z_bg = z_end + rng.uniform(0, 40)
    blocks, x = [], -0.8 * z_bg
    while x < 0.8 * z_bg:
        width = rng.uniform(8, 30)
        if rng.random() > 0.12:
            trees = rng.random() < 0.2
            base = colors.veg if trees else pick(rng, BUILDING_COLORS)
            color = tuple(
                0.55 * np.asarray(jitter(rng, base, 12)) + 0.45 * np.asarray(colors.sky_bottom)
            )
            height = rng.uniform(6, 15) if trees else rng.uniform(8, 45)
            blocks.append(Block(x, x + width, height, color, trees))
        x += width
    return Item("skyline", 0.0, z_bg, Skyline(blocks))


def _boundary(rng: np.random.Generator, x: float, z: float, length: float, veg: Color) -> Item:
    kind = pick(rng, ("wall", "fence", "hedge"))
    # each colour is drawn whatever the kind: the random stream (so every image) depends on it
    colors = {
        "wall": jitter(rng, pick(rng, ((168, 164, 152), (140, 140, 140), (182, 160, 130))), 8),
        "fence": jitter(rng, pick(rng, ((110, 96, 80), (90, 110, 96), (130, 130, 136))), 8),
        "hedge": shade(veg, rng.uniform(0.75, 1.0)),
    }
    height = rng.uniform(1.0, 2.5) if kind != "fence" else rng.uniform(1.0, 2.0)
    return Item(kind, x, z, Boundary(length, height, colors[kind]))


def _building(rng: np.random.Generator, sign: int, length: float) -> Building:
    floor, column = rng.uniform(2.8, 3.6), rng.uniform(2.0, 3.5)
    return Building(
        sign=sign, length=length, depth=rng.uniform(8, 20),
        height=int(rng.integers(2, 10)) * floor + rng.uniform(0.3, 1.5),
        color=jitter(rng, pick(rng, BUILDING_COLORS), 12),
        glass=jitter(rng, GLASS, 10), glass2=jitter(rng, (120, 134, 150), 15),
        floor=floor, column=column, window_w=column * rng.uniform(0.35, 0.65),
        window_h=floor * rng.uniform(0.4, 0.6), sill=rng.uniform(0.7, 1.1),
        shop=rng.random() < 0.5, pattern=int(rng.integers(5)),
    )  # fmt: skip


def _leaves(rng: np.random.Generator) -> list[Leaf]:
    """Lighter and darker leaf clusters inside a crown."""
    out = []
    for _ in range(int(rng.integers(3, 7))):
        radius, angle = rng.uniform(0.2, 0.45), rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(0, 0.85 - radius)
        out.append(
            Leaf(dist * math.cos(angle), dist * math.sin(angle), radius, rng.uniform(0.7, 1.3))
        )
    return out


def _crown(rng: np.random.Generator, dx: float, dz: float, trunk: bool) -> Crown:
    r = rng.uniform(1.4, 3.5)
    y = rng.uniform(r + 1.0, r + 4.5) if trunk else r * rng.uniform(0.6, 0.9)
    return Crown(dx, y, dz, r, rng.uniform(0.8, 1.15), trunk, _leaves(rng))


def _park(rng: np.random.Generator, sign: int, length: float, color: Color) -> Park:
    crowns = [
        _crown(rng, rng.uniform(0, 8), rng.uniform(0, length), rng.random() < 0.7)
        for _ in range(max(1, int(length / rng.uniform(2.5, 5))))
    ]
    crowns.sort(key=lambda c: -c.dz)
    return Park(sign, length, crowns, color)


def _make_furniture(rng: np.random.Generator, road: Road, z_end: float, veg: Color) -> list[Item]:
    """Poles (street lamps, signs, traffic lights), curb trees and static clutter on both sides."""
    items = []
    for side in road.sides:
        sign, edge = side.sign, side.edge
        z = rng.uniform(2, 25)
        while z < z_end:
            items.append(Item("pole", sign * (edge + rng.uniform(0.3, 0.7)), z, _pole(rng, -sign)))
            z += rng.uniform(10, 28)
        if side.trees:
            z, step = rng.uniform(2, 12), rng.uniform(7, 15)
            while z < z_end:
                crown = _crown(rng, 0.0, 0.0, True)
                x, z_tree = sign * (edge + rng.uniform(0.6, 1.2)), z + rng.uniform(-1, 1)
                items.append(
                    Item("tree", x, z_tree, Tree(crown, shade(veg, rng.uniform(0.85, 1.1))))
                )
                z += step
        items += [_static(rng, side) for _ in range(int(rng.integers(0, 4)))]
    return items


def _static(rng: np.random.Generator, side: Side) -> Item:
    kind = pick(rng, ("bin", "bin", "bench", "column"))
    width, height = {"bin": (0.6, 1.0), "bench": (1.6, 0.9), "column": (1.2, 2.8)}[kind]
    height *= rng.uniform(0.9, 1.1)
    color = jitter(rng, pick(rng, STATIC_COLORS), 10)
    x = side.sign * (side.edge + rng.uniform(0.5, side.walk))
    return Item("static", x, rng.uniform(4, 60), Static(kind, width, height, color))


def _pole(rng: np.random.Generator, toward_road: int) -> Pole:
    top = pick(rng, ("lamp", "lamp", "sign", "sign", "sign", "light", "light", "light", "plain"))
    pole = Pole(
        top=top, toward=toward_road, width=rng.uniform(0.22, 0.36),
        height=rng.uniform(5, 8) if top == "lamp" else rng.uniform(3.2, 4.5),
        color=jitter(rng, pick(rng, ((120, 122, 126), (140, 142, 146), (160, 160, 158))), 8),
    )  # fmt: skip
    if top == "sign":
        pole.sign = _sign(rng, pole.height)
        pole.height = max(pole.height, pole.sign.y + 0.2)
    elif top == "light":
        pole.light = _traffic_light(rng)
        if pole.light.arm:
            pole.height = rng.uniform(5.2, 6.5)
    return pole


def _sign(rng: np.random.Generator, pole_height: float) -> Sign:
    shape = pick(rng, ("circle", "circle", "triangle", "rect", "diamond", "octagon"))
    # both picks are drawn whatever the shape: the random stream (so every image) depends on it
    rim_fill = {
        "circle": pick(rng, (((200, 30, 30), (236, 236, 236)), ((30, 70, 170), (30, 70, 170)))),
        "triangle": ((200, 30, 30), (236, 236, 236)),
        "rect": pick(rng, (((30, 70, 170), (236, 236, 236)), ((236, 236, 236), (30, 110, 60)))),
        "diamond": ((236, 236, 236), (240, 196, 20)),
        "octagon": ((236, 236, 236), (200, 30, 30)),
    }
    rim, fill = rim_fill[shape]
    return Sign(
        shape=shape, rim=jitter(rng, rim, 8), fill=jitter(rng, fill, 8),
        size=rng.uniform(0.8, 1.15), y=pole_height - rng.uniform(0.4, 1.2),
        second=rng.random() < 0.3,
    )  # fmt: skip


def _traffic_light(rng: np.random.Generator) -> TrafficLight:
    arm = rng.uniform(2, 5) if rng.random() < 0.4 else 0.0
    return TrafficLight(
        arm=arm, width=rng.uniform(0.5, 0.65), box=rng.uniform(1.3, 1.6),
        both=rng.random() < 0.5,
        housing=jitter(rng, pick(rng, ((36, 36, 38), (50, 50, 52), (180, 150, 40))), 6),
        lit=int(rng.integers(3)),
    )  # fmt: skip
