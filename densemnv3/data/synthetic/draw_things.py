"""Paint the things: vehicles as lit boxes, people and riders as strokes, bicycles, motorcycles.

Each painter takes ``(canvas, camera, item, x, z, codes)`` with (x, z) where the item stands at
the rendered time, and gives each thing the next Cityscapes instance id of its class.
"""

from __future__ import annotations

import math

import numpy as np

from densemnv3.data.labels import NAME_TO_ID

from .camera import Camera, Canvas
from .palette import HEAD_LIGHT, RED_LIGHT, TYRE, Color, shade
from .scene import Item, Panel, Part, Person, Vehicle, Wheel

Point = tuple[float, float]


def new_code(codes: dict[int, int], name: str) -> int:
    """The next Cityscapes instance id (label id * 1000 + index) of class ``name``."""
    label = NAME_TO_ID[name]
    codes[label] = codes.get(label, -1) + 1
    return label * 1000 + codes[label]


# ---------------------------------------------------------------------------------------------
# Vehicles


class _Frame:
    """Vehicle coordinates (u from rear to front, w across, y up) -> world, at (x, z)."""

    def __init__(self, vehicle: Vehicle, x: float, z: float) -> None:
        self.v, self.x, self.z = vehicle, x, z
        self.du = self(1, 0, 0) - self(0, 0, 0)  # unit vectors of u and w in the world
        self.dw = self(0, 1, 0) - self(0, 0, 0)

    def __call__(self, u, w, y) -> np.ndarray:
        u, w, y = np.broadcast_arrays(*(np.asarray(a, float) for a in (u, w, y)))
        v, x, z = self.v, self.x, self.z
        if v.axis == "z":
            return np.stack((x - v.width / 2 + w, y, z + v.sign * (u - v.length / 2)), axis=-1)
        return np.stack((x + v.sign * (u - v.length / 2), y, z - v.width / 2 + w), axis=-1)

    def distance(self, part: Part) -> float:
        """Ground distance from the camera to the nearest point of ``part``'s footprint."""
        u0, u1, w0, w1 = part.box[:4]
        corners = self([u0, u1, u1, u0], [w0, w0, w1, w1], 0)
        xs, zs = corners[:, 0], corners[:, 2]
        return math.hypot(max(xs.min(), 0.0, -xs.max()), max(zs.min(), 0.0))


def draw_vehicle(cv: Canvas, cam: Camera, item: Item, x: float, z: float, codes: dict) -> None:
    """Boxes with windows, lights and wheels on the faces the camera sees, far boxes first."""
    v = item.spec
    code = new_code(codes, v.kind)
    world = _Frame(v, x, z)
    shadow = world(
        [-0.2, v.length + 0.2, v.length + 0.2, -0.2], [-0.1, -0.1, v.width + 0.1, v.width + 0.1], 0
    )
    cv.poly([cam.project(shadow)], (34, 34, 36))
    for part in sorted(v.parts, key=world.distance, reverse=True):
        _draw_part(cv, cam, world, part, code, z)


def _faces_camera(normal: np.ndarray, point: np.ndarray) -> bool:
    return -(normal[0] * point[0] + normal[2] * point[2]) > 1e-6


def _visible_faces(world: _Frame, part: Part) -> tuple[dict[str, float], float | None]:
    """The end faces ({"rear": u0} or {"front": u1}, or none) and the side (its w) in view."""
    u0, u1, w0, w1 = part.box[:4]
    du, dw = world.du, world.dw
    ends = {}
    if _faces_camera(-du, world(u0, w0, 0)):
        ends["rear"] = u0
    elif _faces_camera(du, world(u1, w0, 0)):
        ends["front"] = u1
    if _faces_camera(-dw, world(u0, w0, 0)):
        return ends, w0
    if _faces_camera(dw, world(u0, w1, 0)):
        return ends, w1
    return ends, None


def _draw_part(cv: Canvas, cam: Camera, world: _Frame, part: Part, code: int, z: float) -> None:
    u0, u1, w0, w1, y0, y1 = part.box
    color = part.color
    if cam.height > y1:
        top = world([u0, u1, u1, u0], [w0, w0, w1, w1], y1)
        cv.poly([cam.project(top)], shade(color, 1.1), code, 4)
    ends, side = _visible_faces(world, part)
    for u in ends.values():
        end = world(u, [w0, w1, w1, w0], [y0, y0, y1, y1])
        cv.poly([cam.project(end)], shade(color, 0.95), code, 4)
    if side is not None:
        flank = world([u0, u1, u1, u0], side, [y0, y0, y1, y1])
        cv.poly([cam.project(flank)], shade(color, 0.85), code, 4)
    for detail in part.details:
        if isinstance(detail, Panel):
            a0, a1, b0, b1 = detail.a0, detail.a1, detail.y0, detail.y1
            if detail.face in ends:
                panel = world(ends[detail.face], [a0, a1, a1, a0], [b0, b0, b1, b1])
                cv.poly([cam.project(panel)], detail.color, code, 2)
            elif detail.face == "long" and side is not None:
                panel = world([a0, a1, a1, a0], side, [b0, b0, b1, b1])
                cv.poly([cam.project(panel)], shade(detail.color, 0.9), code, 2)
        elif isinstance(detail, Wheel):
            if side is not None:
                _draw_wheel(cv, cam, world, detail, side, code)
        else:  # a tram's pantograph on the roof
            uc, wc = detail.u, (w0 + w1) / 2
            arm = cam.project(world([uc - 0.7, uc, uc + 0.7], wc, [y1, y1 + 0.9, y1]))
            for a, b in zip(arm[:-1], arm[1:]):
                cv.line(a, b, 0.06 * cam.f / z, (50, 50, 54), code, 2)


def _draw_wheel(
    cv: Canvas, cam: Camera, world: _Frame, wheel: Wheel, side: float, code: int
) -> None:
    angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
    for radius, color in ((wheel.r, TYRE), (0.5 * wheel.r, (120, 122, 126))):
        rim = world(wheel.u + radius * np.cos(angles), side, wheel.r + radius * np.sin(angles))
        cv.poly([cam.project(rim)], color, code, 2)


# ---------------------------------------------------------------------------------------------
# People and two-wheelers


class _Figure:
    """A figure's own units: ``a`` toward where it faces, ``b`` up; ``k`` pixels per unit."""

    def __init__(self, cv: Canvas, feet: Point, k: float, facing: int) -> None:
        self.cv, self.k, self.d = cv, k, facing
        self.fx, self.fy = feet

    def at(self, a: float, b: float) -> Point:
        return self.fx + self.k * a * self.d, self.fy - self.k * b

    def stroke(self, a: Point, b: Point, width: float, color: Color, code: int) -> None:
        self.cv.line(self.at(*a), self.at(*b), width * self.k, color, code, 3)

    def oval(self, center: Point, ra: float, rb: float, color: Color, code: int) -> None:
        self.cv.ellipse(self.at(*center), (ra * self.k, rb * self.k), color, code, 3)

    def quad(self, corners, color: Color, code: int, tex: float = 3) -> None:
        self.cv.poly([np.array([self.at(a, b) for a, b in corners])], color, code, tex)

    def box(self, a0: float, a1: float, b0: float, b1: float, color: Color, code: int) -> None:
        self.quad([(a0, b0), (a1, b0), (a1, b1), (a0, b1)], color, code)


def draw_person(cv: Canvas, cam: Camera, item: Item, x: float, z: float, codes: dict) -> None:
    p = item.spec
    code = new_code(codes, "person")
    k = cam.f / z * p.height  # pixels per body height
    feet = cam.project((x, 0.0, z))
    fig = _Figure(cv, feet, k, p.facing)
    sleeve = p.shirt if p.sleeves else p.skin
    st = 0.12 * p.stride
    cv.ellipse((fig.fx, fig.fy), (0.16 * k, 0.025 * k), (45, 45, 48))
    if p.view == "side":
        fig.stroke((0, 0.5), (-st, 0.03), 0.075, shade(p.pants, 0.8), code)
        fig.stroke((0, 0.79), (0.8 * st, 0.5), 0.05, shade(sleeve, 0.8), code)
        fig.stroke((0, 0.5), (st, 0.03), 0.075, p.pants, code)
        fig.quad([(-0.07, 0.82), (0.07, 0.82), (0.065, 0.48), (-0.065, 0.48)], p.shirt, code, 4)
        fig.stroke((0, 0.79), (-0.8 * st, 0.5), 0.05, sleeve, code)
        head = (0.015, 0.905)
    else:
        for s in (-1, 1):
            fig.stroke((0.055 * s, 0.5), (0.065 * s + 0.3 * st, 0.03), 0.085, p.pants, code)
        fig.quad([(-0.125, 0.82), (0.125, 0.82), (0.105, 0.48), (-0.105, 0.48)], p.shirt, code, 4)
        for s in (-1, 1):
            fig.stroke((0.14 * s, 0.79), (0.16 * s, 0.5), 0.055, sleeve, code)
        head = (0.0, 0.905)
    back = p.view == "back"
    fig.oval(head, 0.058, 0.072, p.hair if back else p.skin, code)
    if not back:
        fig.oval((head[0] - 0.01, head[1] + 0.04), 0.055, 0.035, p.hair, code)
    if p.bag is not None:
        fig.quad([(0.1, 0.64), (0.2, 0.64), (0.2, 0.45), (0.1, 0.45)], p.bag, code)


def draw_two_wheeler(cv: Canvas, cam: Camera, item: Item, x: float, z: float, codes: dict) -> None:
    """A bicycle or motorcycle (side, back or front view), with its rider if it has one."""
    p = item.spec
    bike = new_code(codes, "motorcycle" if p.moto else "bicycle")
    rider = new_code(codes, "rider") if p.rider is not None else None
    k = cam.f / z
    fig = _Figure(cv, cam.project((x, 0.0, z)), k, p.facing)
    shadow = (0.5 * k if p.view == "side" else 0.25 * k, 0.04 * k)
    cv.ellipse((fig.fx, fig.fy), shadow, (45, 45, 48))
    if p.view == "side":
        (_motorcycle_side if p.moto else _bicycle_side)(fig, p.color, bike)
        if rider is not None:
            _rider_side(fig, p.rider, p.moto, rider)
        return
    if rider is not None:
        _rider_back(fig, p.rider, rider)
    if p.moto:
        fig.box(-0.08, 0.08, 0.0, 0.62, TYRE, bike)
        fig.quad([(-0.22, 0.5), (0.22, 0.5), (0.26, 0.95), (-0.26, 0.95)], p.color, bike)
        fig.box(-0.07, 0.07, 0.78, 0.86, RED_LIGHT if p.view == "back" else HEAD_LIGHT, bike)
        fig.stroke((-0.4, 1.15), (0.4, 1.15), 0.03, (40, 40, 40), bike)
    else:
        fig.box(-0.025, 0.025, 0.0, 0.68, TYRE, bike)
        fig.box(-0.02, 0.02, 0.34, 0.9, p.color, bike)
        fig.box(-0.07, 0.07, 0.88, 0.94, (30, 30, 30), bike)
        fig.stroke((-0.3, 1.02), (0.3, 1.02), 0.04, (40, 40, 40), bike)


_MOTORCYCLE_BODY = [
    (-0.72, 0.62), (-0.55, 0.82), (-0.05, 0.85), (0.2, 0.98),
    (0.5, 0.95), (0.55, 0.7), (0.3, 0.35), (-0.3, 0.38),
]  # fmt: skip


def _motorcycle_side(fig: _Figure, color: Color, code: int) -> None:
    for hub in (-0.68, 0.68):
        fig.oval((hub, 0.32), 0.32, 0.32, TYRE, code)
        fig.oval((hub, 0.32), 0.16, 0.16, (130, 132, 136), code)
    fig.quad(_MOTORCYCLE_BODY, color, code)
    fig.box(-0.2, 0.25, 0.3, 0.6, (60, 60, 64), code)
    fig.quad([(-0.6, 0.83), (-0.05, 0.86), (-0.05, 0.93), (-0.55, 0.9)], (30, 30, 30), code)
    fig.stroke((0.5, 0.95), (0.68, 0.32), 0.06, (150, 150, 154), code)
    fig.stroke((0.45, 1.0), (0.55, 1.12), 0.05, (40, 40, 40), code)


def _bicycle_side(fig: _Figure, color: Color, code: int) -> None:
    k = fig.k
    for hub in (-0.52, 0.52):
        fig.cv.haze_disc(fig.at(hub, 0.34), 0.34 * k, (50, 50, 54), 0.55, code)
        fig.cv.ellipse(fig.at(hub, 0.34), (0.34 * k, 0.34 * k), TYRE, code, 3, thickness=0.05 * k)
    rear, bb, seat, head, front = (
        (-0.52, 0.34),
        (0.0, 0.28),
        (-0.15, 0.88),
        (0.4, 0.92),
        (0.52, 0.34),
    )
    for a, b in ((rear, bb), (rear, seat), (seat, bb), (bb, head), (seat, head), (head, front)):
        fig.stroke(a, b, 0.06, color, code)
    fig.stroke(head, (0.34, 1.02), 0.04, (40, 40, 40), code)
    fig.stroke((-0.22, 0.9), (-0.06, 0.9), 0.05, (30, 30, 30), code)


# hip, knee, foot, shoulder, hand, head of a rider seen from the side
_RIDER_POSE = {
    True: ((-0.22, 0.95), (0.22, 0.8), (0.05, 0.42), (0.0, 1.5), (0.46, 1.1), (0.08, 1.68)),
    False: ((-0.12, 0.98), (0.14, 0.68), (0.08, 0.18), (0.14, 1.48), (0.34, 1.02), (0.22, 1.64)),
}


def _rider_side(fig: _Figure, p: Person, moto: bool, code: int) -> None:
    hip, knee, foot, shoulder, hand, head = _RIDER_POSE[moto]
    sleeve = p.shirt if p.sleeves else p.skin
    for a, b, width, color in (
        (hip, knee, 0.13, p.pants), (knee, foot, 0.11, p.pants),
        (hip, shoulder, 0.3, p.shirt), (shoulder, hand, 0.09, sleeve),
    ):  # fmt: skip
        fig.stroke(a, b, width, color, code)
    fig.oval(head, 0.11, 0.13, p.skin, code)
    fig.oval((head[0] - 0.02, head[1] + 0.05), 0.12, 0.09, p.hair, code)


def _rider_back(fig: _Figure, p: Person, code: int) -> None:
    sleeve = p.shirt if p.sleeves else p.skin
    for s in (-1, 1):
        fig.stroke((0.1 * s, 0.95), (0.18 * s, 0.6), 0.13, p.pants, code)
        fig.stroke((0.18 * s, 0.6), (0.12 * s, 0.22), 0.11, p.pants, code)
    fig.quad([(-0.19, 1.5), (0.19, 1.5), (0.16, 0.92), (-0.16, 0.92)], p.shirt, code, 4)
    for s in (-1, 1):
        fig.stroke((0.17 * s, 1.45), (0.3 * s, 1.05), 0.09, sleeve, code)
    front = p.view == "front"
    fig.oval((0, 1.64), 0.1, 0.12, p.skin if front else p.hair, code)
    if front:
        fig.oval((0, 1.69), 0.1, 0.07, p.hair, code)
