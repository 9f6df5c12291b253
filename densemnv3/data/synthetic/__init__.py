"""Synthetic street scenes in the Cityscapes layout, with COCO detection annotations.

The toolkit's out-of-the-box data and its test data. A pinhole camera looks down a procedurally
built street (sky, buildings with windows, trees, road with lane markings converging to the
vanishing point, sidewalks, poles, signs and traffic lights) with things at many scales and
occlusions: cars, trucks, buses, trams, pedestrians, cyclists and motorcyclists.

- ``writer``: this public API; the Cityscapes PNGs, COCO json and videos on disk.
- ``formats``: :func:`write_format` converts a written set into the other layouts (:data:`FORMATS`:
  folder, Pascal VOC, ADE20K, YOLO); ``make_synthetic(..., format=...)`` uses it.
- ``scene``: the typed description of a street; ``street`` and ``things`` draw one at random.
- ``render``: paints a scene at time t (``draw_street``, ``draw_things``) on the ``camera``'s
  canvas, in the colours of ``palette``.
"""

from densemnv3.data.labels import THING_IDS

from .formats import FORMATS, write_format
from .writer import (
    CITIES,
    MIN_AREA,
    describe,
    make_synthetic,
    make_synthetic_video,
    synthetic_exists,
    synthetic_video_frames,
)

__all__ = [
    "CITIES",
    "FORMATS",
    "MIN_AREA",
    "THING_IDS",
    "describe",
    "make_synthetic",
    "make_synthetic_video",
    "synthetic_exists",
    "synthetic_video_frames",
    "write_format",
]
