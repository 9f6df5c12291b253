"""What a synthetic street is made of: the typed scene that sampling fills in and rendering reads.

A :class:`Scene` is drawn once from an image's random generator (``street.make_scene``) and can
be rendered at any time t (``render.render``): things move, the camera drives down +z.
Lengths are metres in world coordinates (see ``camera``); colours are RGB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .camera import Camera
from .palette import Color

# ---------------------------------------------------------------------------------------------
# The street: road, sidewalks, sky and the photometric look of the picture


@dataclass
class Side:
    """One side of the road: curb, sidewalk and what stands behind it."""

    sign: int  # -1 left, +1 right
    edge: float  # |x| of the curb
    walk: float  # sidewalk width
    setback: float  # from the sidewalk to the facades
    paved: bool  # paved (sidewalk) rather than terrain behind the sidewalk
    density: float  # share of the frontage that is buildings
    trees: bool  # a row of curb trees
    parking: list[tuple[float, float]] = field(default_factory=list)  # (z0, z1) bays


@dataclass
class Road:
    """The road across x (lanes, markings, both sides), running along z to ``z_end``."""

    lane: float  # lane width
    left: float  # |x| of the left curb
    right: float  # x of the right curb
    lanes: list[tuple[float, int]]  # (centre x, direction of travel)
    lines: list[tuple[float, bool]]  # (x, solid) lane markings
    sides: list[Side]
    period: float  # dashed markings: one dash and gap
    dash: float
    phase: float
    crosswalk: float | None  # z of a zebra crossing
    patches: list[tuple[float, float, float, float, float]]  # (x, half width, z0, length, tone)
    tile: float  # sidewalk joint spacing
    z_end: float  # where the street ends
    rails: float | None = None  # x of tram rails, set when a tram runs along the street


class Cloud(NamedTuple):
    u: float  # screen position (pixels): clouds are far away
    v: float
    scale: float  # pixels
    puffs: list[tuple[float, float, float, float]]  # (du, dv, radius, tone) in ``scale`` units


@dataclass
class SceneColors:
    road: Color
    walk: Color
    terrain: Color
    veg: Color
    marking: Color
    sky_top: Color
    sky_bottom: Color


@dataclass
class Look:
    """Per-image photometric settings applied after painting."""

    contrast: float
    brightness: float
    cast: np.ndarray  # (3,) colour cast
    light: np.ndarray  # (3, 4) coarse lighting gain, upsampled over the image
    noise: float  # sensor noise sigma
    blur: float  # Gaussian sigma; 0 for none
    ego: float | None  # height of the ego vehicle's hood, as a share of the image height
    void: tuple[float, float, float] | None  # (u, v, radius): a patch labelled unlabeled


# ---------------------------------------------------------------------------------------------
# Facades and street furniture


class Block(NamedTuple):
    x0: float
    x1: float
    height: float
    color: Color
    trees: bool


@dataclass
class Skyline:
    """Far blocks closing the street."""

    blocks: list[Block]


@dataclass
class Building:
    sign: int  # the side of the street
    length: float  # along the street
    depth: float
    height: float
    color: Color
    glass: Color
    glass2: Color  # lit windows
    floor: float  # storey height
    column: float  # window spacing
    window_w: float
    window_h: float
    sill: float
    shop: bool  # shop windows on the ground floor
    pattern: int  # which windows are lit


class Leaf(NamedTuple):
    dx: float  # in crown radii
    dy: float
    radius: float
    tone: float


class Crown(NamedTuple):
    """A tree crown (on a trunk or a bush) with its leaf clusters."""

    dx: float  # from the object's position, away from the road
    y: float  # height of the centre
    dz: float
    r: float
    tone: float
    trunk: bool
    leaves: list[Leaf]


@dataclass
class Park:
    sign: int
    length: float
    crowns: list[Crown]  # far to near
    color: Color


@dataclass
class Boundary:
    """A wall, fence or hedge (the item's kind says which) along the sidewalk."""

    length: float
    height: float
    color: Color


@dataclass
class Tree:
    crown: Crown
    color: Color


@dataclass
class Static:
    """A bin, bench or advertising column."""

    kind: str
    width: float
    height: float
    color: Color


@dataclass
class Sign:
    shape: str  # circle, triangle, rect, diamond or octagon
    rim: Color
    fill: Color
    size: float
    y: float  # height of the centre
    second: bool  # a smaller rectangular sign below


@dataclass
class TrafficLight:
    arm: float  # over the road; 0 for a light on the pole
    width: float
    box: float  # height of the housing
    both: bool  # a second light on the pole under an arm
    housing: Color
    lit: int  # 0 red, 1 amber, 2 green


@dataclass
class Pole:
    top: str  # lamp, sign, light or plain
    toward: int  # the direction of the road (-1 or +1 in x)
    width: float
    height: float
    color: Color
    sign: Sign | None = None
    light: TrafficLight | None = None


# ---------------------------------------------------------------------------------------------
# Things (vehicle coordinates: u from rear to front, w across, y up)


class Panel(NamedTuple):
    """A flat detail (window, light, tyre) on a ``rear``, ``front`` or ``long`` (side) face."""

    face: str
    a0: float  # from-to along the face (u for a side, w for an end)
    a1: float
    y0: float
    y1: float
    color: Color


class Wheel(NamedTuple):
    u: float
    r: float


class Pantograph(NamedTuple):
    u: float


Detail = Panel | Wheel | Pantograph


@dataclass
class Part:
    """One box of a vehicle, (u0, u1, w0, w1, y0, y1), with the details on its faces."""

    box: tuple[float, float, float, float, float, float]
    color: Color
    details: list[Detail]


@dataclass
class Vehicle:
    """A vehicle of boxes; ``axis`` and ``sign`` say where it heads once placed."""

    kind: str  # car, truck, bus or train (a tram)
    length: float
    width: float
    parts: list[Part]
    axis: str = "z"  # "z": along the street, "x": crossing it
    sign: int = 1  # heading along ``axis``


@dataclass
class Person:
    """A pedestrian or a rider: build, pose and clothes."""

    height: float
    view: str  # front, back or side
    facing: int  # +1 right, -1 left (side view)
    stride: float
    sleeves: bool
    skin: Color
    hair: Color  # a motorcyclist's helmet
    shirt: Color
    pants: Color
    bag: Color | None


@dataclass
class TwoWheeler:
    """A bicycle or motorcycle, ridden or parked."""

    moto: bool  # a motorcycle, else a bicycle
    view: str
    facing: int
    color: Color
    rider: Person | None


Spec = Skyline | Building | Park | Boundary | Tree | Pole | Static | Vehicle | Person | TwoWheeler


@dataclass
class Item:
    """Something standing in the street; ``fp`` is its footprint (x0, x1, z0, z1) around (x, z)."""

    kind: str
    x: float
    z: float
    spec: Spec
    vx: float = 0.0
    vz: float = 0.0
    fp: tuple[float, float, float, float] = (-0.3, 0.3, -0.3, 0.3)


@dataclass
class Scene:
    """A street drawn once from an image's generator, to be rendered at any time t."""

    size: tuple[int, int]
    cam: Camera
    speed: float  # camera speed in m/s (videos only)
    look: Look
    colors: SceneColors
    road: Road
    clouds: list[Cloud]
    facades: list[Item]  # buildings, parks, walls, fences: behind everything on the street
    street: list[Item]  # poles, trees, static objects and things, painted far to near
    texture_seed: int
