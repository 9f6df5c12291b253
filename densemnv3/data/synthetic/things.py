"""Draw the things of a street (vehicles, people, two-wheelers) and place them without overlaps."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .camera import Camera
from .palette import (
    BUS_COLORS,
    CAR_COLORS,
    CHASSIS,
    CLOTH_COLORS,
    GLASS,
    HAIR_COLORS,
    HEAD_LIGHT,
    PANTS_COLORS,
    RED_LIGHT,
    SKIN_COLORS,
    TRAM_BANDS,
    TRAM_COLORS,
    TYRE,
    Color,
    jitter,
    pick,
    shade,
)
from .scene import (
    Item,
    Panel,
    Pantograph,
    Part,
    Person,
    Road,
    Side,
    TwoWheeler,
    Vehicle,
    Wheel,
)

_THING_MIX = {
    "car": 0.32, "person": 0.26, "cyclist": 0.1, "motorcyclist": 0.07,
    "bicycle": 0.08, "motorcycle": 0.05, "truck": 0.06, "bus": 0.06,
}  # fmt: skip
#: Share of each vehicle kind crossing the street, and parked at the curb (the rest drive along).
_CROSSING = {"car": 0.1, "truck": 0.1, "bus": 0.08, "train": 0.4}
_PARKED = {"car": 0.3, "truck": 0.08, "bus": 0.0, "train": 0.0}
_PERSON_FP = (-0.25, 0.25, -0.25, 0.25)
_HELMET_COLORS = ((20, 20, 22), (230, 230, 230), (190, 30, 30), (30, 60, 150))


def make_things(
    rng: np.random.Generator,
    cam: Camera,
    size: tuple[int, int],
    road: Road,
    count: int,
    z_far: float,
) -> list[Item]:
    """``count`` things (plus a tram now and then) placed where they belong, without overlaps.

    A tram running along the street lays its rails: ``road.rails`` is set.
    """
    z_min = max(3.0, 0.85 * cam.f * cam.height / (size[0] - cam.cy))  # feet near the bottom row
    names = list(_THING_MIX)
    weights = np.asarray(list(_THING_MIX.values()))
    kinds = [names[i] for i in rng.choice(len(names), size=count, p=weights / weights.sum())]
    if rng.random() < 0.15:
        kinds.insert(0, "train")
    things: list[Item] = []
    for kind in kinds:
        for _ in range(10):
            group = _sample_thing(rng, kind, road, z_min, z_far)
            if not any(_overlap(a, b) for a in group for b in things):
                things += group
                if kind == "train" and group[0].spec.axis == "z":
                    road.rails = group[0].x
                break
    return things


def loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A value in [low, high) with a uniform logarithm (``high`` at least 1 % above ``low``)."""
    return float(low * math.exp(rng.uniform(0, math.log(max(high, low * 1.01) / low))))


def _overlap(a: Item, b: Item, margin: float = 0.2) -> bool:
    return (
        a.x + a.fp[0] < b.x + b.fp[1] + margin and b.x + b.fp[0] < a.x + a.fp[1] + margin
        and a.z + a.fp[2] < b.z + b.fp[3] + margin and b.z + b.fp[2] < a.z + a.fp[3] + margin
    )  # fmt: skip


class _Spot(NamedTuple):
    """Where a thing goes: the road, the side drawn for it, a heading and its depth range."""

    road: Road
    side: Side
    facing: int  # +1 or -1
    z_min: float
    z_far: float


def _sample_thing(
    rng: np.random.Generator, kind: str, road: Road, z_min: float, z_far: float
) -> list[Item]:
    """One thing of ``kind`` (two people for a group) somewhere it belongs, between z_min, z_far."""
    spot = _Spot(road, pick(rng, road.sides), pick(rng, (-1, 1)), z_min, z_far)
    if kind in _CROSSING:
        return [_place_vehicle(rng, kind, spot)]
    if kind == "person":
        return _place_people(rng, spot)
    if kind in ("cyclist", "motorcyclist") and rng.random() < 0.75:
        return [_place_rider_along(rng, kind, spot)]
    return [_place_side_on(rng, kind, spot)]


def _place_vehicle(rng: np.random.Generator, kind: str, spot: _Spot) -> Item:
    """Crossing the street, parked at the curb, or driving in a lane."""
    road, side, facing, z_min = spot.road, spot.side, spot.facing, spot.z_min
    vehicle = _vehicle(rng, kind)
    length, width = vehicle.length, vehicle.width
    mode = rng.random()
    if mode < _CROSSING[kind]:
        vehicle.axis, vehicle.sign = "x", facing
        z = rng.uniform(max(z_min + 4, 10), spot.z_far + 5)
        fp = (-length / 2, length / 2, -width / 2, width / 2)
        x = rng.uniform(-road.left, road.right)
        return Item(kind, x, z, vehicle, vx=facing * rng.uniform(3, 8), fp=fp)
    if mode < _CROSSING[kind] + _PARKED[kind]:
        x = side.sign * (side.edge - width / 2 - rng.uniform(0.1, 0.4))
        speed, closest = 0.0, 0.8 * z_min
    else:  # in a lane; not so close that it fills the picture
        x, facing = pick(rng, road.lanes)
        x, speed = x + rng.uniform(-0.3, 0.3), facing * rng.uniform(4, 12)
        closest = max(0.8 * z_min, 6.0 if kind == "car" else 12.0)
    vehicle.axis, vehicle.sign = "z", facing
    near = loguniform(rng, closest, spot.z_far)
    fp = (-width / 2, width / 2, -length / 2, length / 2)
    return Item(kind, x, near + length / 2, vehicle, vz=speed, fp=fp)


def _place_people(rng: np.random.Generator, spot: _Spot) -> list[Item]:
    """A pedestrian on the sidewalk (or crossing the road), and now and then a companion."""
    side, facing = spot.side, spot.facing
    if rng.random() < 0.8:
        view = pick(rng, ("front", "back", "side"))
        x = side.sign * (side.edge + rng.uniform(0.4, max(0.5, side.walk - 0.3)))
        z = loguniform(rng, spot.z_min, spot.z_far - 15)
    else:
        view = "side"
        x = rng.uniform(-spot.road.left, spot.road.right)
        z = loguniform(rng, spot.z_min, spot.z_far - 20)
    vx, vz = {"side": (facing * 1.3, 0.0), "front": (0.0, -1.3), "back": (0.0, 1.3)}[view]
    group = [Item("person", x, z, _person(rng, view, facing), vx=vx, vz=vz, fp=_PERSON_FP)]
    if rng.random() < 0.4:
        dx, dz = pick(rng, (-1, 1)) * rng.uniform(0.5, 0.75), rng.uniform(-0.4, 0.4)
        person = _person(rng, view, facing)
        group.append(Item("person", x + dx, z + dz, person, vx=vx, vz=vz, fp=_PERSON_FP))
    return group


def _place_rider_along(rng: np.random.Generator, kind: str, spot: _Spot) -> Item:
    """A cyclist at the curb or a motorcyclist in a lane, riding along the street."""
    side, facing = spot.side, spot.facing
    moto = kind == "motorcyclist"
    if moto:
        x, facing = pick(rng, spot.road.lanes)
        x += rng.uniform(-0.8, 0.8)
    else:
        x, facing = side.sign * (side.edge - rng.uniform(0.5, 1.0)), 1 if side.sign > 0 else facing
    view = "back" if facing > 0 else "front"
    speed = facing * (rng.uniform(6, 12) if moto else rng.uniform(3, 6))
    bike = _two_wheeler(rng, moto, view, facing, True)
    z = loguniform(rng, spot.z_min, spot.z_far - 15)
    return Item(kind, x, z, bike, vz=speed, fp=(-0.35, 0.35, -0.9, 0.9))


def _place_side_on(rng: np.random.Generator, kind: str, spot: _Spot) -> Item:
    """A rider crossing the road, or a parked bicycle (sidewalk) or motorcycle (curb)."""
    ridden = kind in ("cyclist", "motorcyclist")
    if ridden:
        x = rng.uniform(-spot.road.left, spot.road.right)
        z = loguniform(rng, spot.z_min, spot.z_far - 10)
        vx = spot.facing * rng.uniform(3, 6)
    else:
        sign, edge = spot.side.sign, spot.side.edge
        x = sign * (edge + rng.uniform(0.3, 0.9) if kind == "bicycle" else edge - 0.5)
        z, vx = loguniform(rng, spot.z_min, spot.z_far - 20), 0.0
    moto = kind in ("motorcyclist", "motorcycle")
    bike = _two_wheeler(rng, moto, "side", spot.facing, ridden)
    return Item(kind, x, z, bike, vx=vx, fp=(-0.9, 0.9, -0.35, 0.35))


def _pair(face: str, width: float, a0: float, a1: float, y0: float, y1: float, color) -> list:
    """The same panel at both sides of an end face (lights, tyres)."""
    return [Panel(face, a0, a1, y0, y1, color), Panel(face, width - a1, width - a0, y0, y1, color)]


def _vehicle(rng: np.random.Generator, kind: str) -> Vehicle:
    """A car, truck, bus or tram ("train"): boxes with windows, lights and wheels."""
    glass = jitter(rng, GLASS, 8)
    return {"car": _car, "truck": _truck, "bus": _bus, "train": _tram}[kind](rng, glass)


def _car(rng: np.random.Generator, glass: Color) -> Vehicle:
    length, width = rng.uniform(3.8, 4.9), rng.uniform(1.65, 1.95)
    hb = rng.uniform(0.95, 1.05) if rng.random() < 0.25 else rng.uniform(0.78, 0.92)
    top = hb + rng.uniform(0.52, 0.68)
    body = jitter(rng, pick(rng, CAR_COLORS), 10)
    c0, c1 = length * rng.uniform(0.06, 0.3), length * rng.uniform(0.68, 0.78)
    mid = (c0 + c1) / 2
    body_details = [
        Wheel(0.19 * length, 0.33), Wheel(0.8 * length, 0.33),
        *_pair("rear", width, 0.08, 0.38, hb - 0.26, hb - 0.1, RED_LIGHT),
        Panel("rear", width / 2 - 0.26, width / 2 + 0.26, 0.4, 0.52, (230, 230, 225)),
        *_pair("front", width, 0.08, 0.4, hb - 0.24, hb - 0.1, HEAD_LIGHT),
        Panel("front", 0.45, width - 0.45, 0.36, 0.56, (40, 40, 42)),
        *_pair("rear", width, 0.12, 0.36, 0.0, 0.3, TYRE),
        *_pair("front", width, 0.12, 0.36, 0.0, 0.3, TYRE),
        Panel("long", mid - 0.02, mid + 0.02, 0.35, hb - 0.05, shade(body, 0.6)),
    ]  # fmt: skip
    cabin_details = [
        Panel("long", c0 + 0.12, mid - 0.05, hb + 0.06, top - 0.07, glass),
        Panel("long", mid + 0.05, c1 - 0.12, hb + 0.06, top - 0.07, glass),
        Panel("rear", 0.22, width - 0.22, hb + 0.07, top - 0.08, glass),
        Panel("front", 0.16, width - 0.16, hb + 0.05, top - 0.06, glass),
    ]
    parts = [
        Part((0, length, 0, width, 0.25, hb), body, body_details),
        Part((c0, c1, 0.1, width - 0.1, hb, top), body, cabin_details),
    ]
    return Vehicle("car", length, width, parts)


def _truck(rng: np.random.Generator, glass: Color) -> Vehicle:
    length, width = rng.uniform(6.5, 9.5), rng.uniform(2.3, 2.55)
    cab_l, cab_h, box_h = rng.uniform(2.0, 2.5), rng.uniform(2.7, 3.1), rng.uniform(3.2, 3.9)
    cab_colors = ((190, 40, 36), (236, 236, 232), (40, 70, 150), (230, 130, 30), (60, 120, 70))
    cab = jitter(rng, pick(rng, cab_colors), 10)
    cargo_colors = ((232, 232, 228), (200, 200, 196), (60, 90, 160), (210, 190, 150))
    cargo = cab if rng.random() < 0.3 else jitter(rng, pick(rng, cargo_colors), 8)
    u_box, door = length - cab_l - 0.2, shade(cargo, 0.55)
    chassis = [Wheel(1.1, 0.5), Wheel(2.3, 0.5), *_pair("rear", width, 0.15, 0.6, 0.0, 0.95, TYRE)]
    cargo_details = [
        Panel("rear", width / 2 - 0.03, width / 2 + 0.03, 1.05, box_h - 0.08, door),
        *_pair("rear", width, 0.08, 0.3, 1.05, 1.25, RED_LIGHT),
        Panel("long", 0.4, u_box - 0.4, box_h * 0.55, box_h * 0.7, shade(cab, 0.9)),
    ]
    cab_details = [
        Wheel(length - cab_l * 0.5, 0.5),
        Panel("long", length - cab_l + 0.35, length - 0.55, 1.7, cab_h - 0.3, glass),
        Panel("front", 0.12, width - 0.12, 1.6, cab_h - 0.2, glass),
        *_pair("front", width, 0.1, 0.45, 0.7, 0.95, HEAD_LIGHT),
        Panel("front", 0.6, width - 0.6, 0.6, 1.35, (40, 40, 42)),
        *_pair("front", width, 0.15, 0.5, 0.0, 0.6, TYRE),
    ]
    parts = [
        Part((0, u_box + 0.2, 0.2, width - 0.2, 0.45, 1.0), CHASSIS, chassis),
        Part((0, u_box, 0, width, 1.0, box_h), cargo, cargo_details),
        Part((length - cab_l, length, 0, width, 0.5, cab_h), cab, cab_details),
    ]
    return Vehicle("truck", length, width, parts)


def _bus(rng: np.random.Generator, glass: Color) -> Vehicle:
    length, width, top = rng.uniform(10.5, 13), rng.uniform(2.45, 2.55), rng.uniform(3.0, 3.3)
    body = jitter(rng, pick(rng, BUS_COLORS), 10)
    details = [
        Panel("long", a, a + 1.2, 1.2, top - 0.45, glass)
        for a in np.arange(0.7, length - 2.6, 1.35)
    ]
    details += [
        Panel("long", length - 2.4, length - 1.3, 0.4, top - 0.45, shade(glass, 0.8)),
        Panel("long", 0, length, 0.3, 0.55, shade(body, 0.6)),
        Wheel(2.5, 0.5), Wheel(length - 2.7, 0.5),
        Panel("front", 0.1, width - 0.1, 0.95, top - 0.5, glass),
        Panel("front", 0.3, width - 0.3, top - 0.45, top - 0.15, (20, 20, 20)),
        Panel("front", 0.6, width - 0.6, top - 0.36, top - 0.24, (240, 150, 30)),
        *_pair("front", width, 0.1, 0.45, 0.45, 0.7, HEAD_LIGHT),
        Panel("rear", 0.25, width - 0.25, 1.9, top - 0.4, glass),
        *_pair("rear", width, 0.1, 0.35, 0.5, 0.9, RED_LIGHT),
        Panel("rear", 0.5, width - 0.5, 0.4, 1.2, shade(body, 0.7)),
        *_pair("rear", width, 0.12, 0.45, 0.0, 0.55, TYRE),
        *_pair("front", width, 0.12, 0.45, 0.0, 0.55, TYRE),
    ]  # fmt: skip
    return Vehicle("bus", length, width, [Part((0, length, 0, width, 0.3, top), body, details)])


def _tram(rng: np.random.Generator, glass: Color) -> Vehicle:
    length, width, top = rng.uniform(24, 34), 2.65, rng.uniform(3.3, 3.6)
    body = jitter(rng, pick(rng, TRAM_COLORS), 6)
    band = jitter(rng, pick(rng, TRAM_BANDS), 8)
    details = [
        Panel("long", 0, length, 0.35, 0.95, band),
        Panel("long", 0, length, top - 0.35, top - 0.2, band),
    ]
    details += [
        Panel("long", a, a + 1.6, 1.1, 2.45, glass) for a in np.arange(1.2, length - 2.5, 1.9)
    ]
    details += [
        Panel("long", a, a + 1.3, 0.45, 2.5, shade(glass, 0.8))
        for a in np.arange(3.0, length - 2, rng.uniform(6, 8))
    ]
    for end, light in (("front", HEAD_LIGHT), ("rear", RED_LIGHT)):
        details += [
            Panel(end, 0.15, width - 0.15, 1.15, top - 0.4, glass),
            Panel(end, 0, width, 0.35, 0.95, band),
        ]
        details += _pair(end, width, 0.15, 0.45, 0.6, 0.8, light)
    details.append(Pantograph(length * 0.45))
    return Vehicle("train", length, width, [Part((0, length, 0, width, 0.35, top), body, details)])


def _person(rng: np.random.Generator, view: str, facing: int) -> Person:
    return Person(
        height=rng.uniform(1.55, 1.95), view=view, facing=facing,
        stride=rng.uniform(-1, 1), sleeves=rng.random() < 0.7,
        skin=jitter(rng, pick(rng, SKIN_COLORS), 6),
        hair=jitter(rng, pick(rng, HAIR_COLORS), 6),
        shirt=jitter(rng, pick(rng, CLOTH_COLORS), 12),
        pants=jitter(rng, pick(rng, PANTS_COLORS), 8),
        bag=jitter(rng, pick(rng, CLOTH_COLORS), 10) if rng.random() < 0.25 else None,
    )  # fmt: skip


def _two_wheeler(
    rng: np.random.Generator, moto: bool, view: str, facing: int, ridden: bool
) -> TwoWheeler:
    rider = _person(rng, view, facing) if ridden else None
    if rider is not None and moto:
        rider.hair = jitter(rng, pick(rng, _HELMET_COLORS), 8)
    color = jitter(rng, pick(rng, CAR_COLORS if moto else CLOTH_COLORS), 10)
    return TwoWheeler(moto, view, facing, color, rider)
