"""Every class name and palette of the toolkit, in one place.

- Cityscapes: the label table (label ids, train ids, colours) as in the official cityscapesScripts.
  Train ids 0-18 are the 19 evaluated classes; every other label id maps to :data:`IGNORE_INDEX`.
  The synthetic set's detection classes are its thing classes (:data:`THING_IDS`).
- COCO: :data:`COCO_CATEGORY_NAMES`, torchvision's 91-entry list.
- :func:`detection_class_names`: the names of a detector's labels, from its config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from densemnv3.config import Config

IGNORE_INDEX = 255


class Label(NamedTuple):
    name: str
    id: int
    train_id: int
    category: str
    has_instances: bool
    color: tuple[int, int, int]  # RGB


LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, "void", False, (0, 0, 0)),
    Label("ego vehicle", 1, 255, "void", False, (0, 0, 0)),
    Label("rectification border", 2, 255, "void", False, (0, 0, 0)),
    Label("out of roi", 3, 255, "void", False, (0, 0, 0)),
    Label("static", 4, 255, "void", False, (0, 0, 0)),
    Label("dynamic", 5, 255, "void", False, (111, 74, 0)),
    Label("ground", 6, 255, "void", False, (81, 0, 81)),
    Label("road", 7, 0, "flat", False, (128, 64, 128)),
    Label("sidewalk", 8, 1, "flat", False, (244, 35, 232)),
    Label("parking", 9, 255, "flat", False, (250, 170, 160)),
    Label("rail track", 10, 255, "flat", False, (230, 150, 140)),
    Label("building", 11, 2, "construction", False, (70, 70, 70)),
    Label("wall", 12, 3, "construction", False, (102, 102, 156)),
    Label("fence", 13, 4, "construction", False, (190, 153, 153)),
    Label("guard rail", 14, 255, "construction", False, (180, 165, 180)),
    Label("bridge", 15, 255, "construction", False, (150, 100, 100)),
    Label("tunnel", 16, 255, "construction", False, (150, 120, 90)),
    Label("pole", 17, 5, "object", False, (153, 153, 153)),
    Label("polegroup", 18, 255, "object", False, (153, 153, 153)),
    Label("traffic light", 19, 6, "object", False, (250, 170, 30)),
    Label("traffic sign", 20, 7, "object", False, (220, 220, 0)),
    Label("vegetation", 21, 8, "nature", False, (107, 142, 35)),
    Label("terrain", 22, 9, "nature", False, (152, 251, 152)),
    Label("sky", 23, 10, "sky", False, (70, 130, 180)),
    Label("person", 24, 11, "human", True, (220, 20, 60)),
    Label("rider", 25, 12, "human", True, (255, 0, 0)),
    Label("car", 26, 13, "vehicle", True, (0, 0, 142)),
    Label("truck", 27, 14, "vehicle", True, (0, 0, 70)),
    Label("bus", 28, 15, "vehicle", True, (0, 60, 100)),
    Label("caravan", 29, 255, "vehicle", True, (0, 0, 90)),
    Label("trailer", 30, 255, "vehicle", True, (0, 0, 110)),
    Label("train", 31, 16, "vehicle", True, (0, 80, 100)),
    Label("motorcycle", 32, 17, "vehicle", True, (0, 0, 230)),
    Label("bicycle", 33, 18, "vehicle", True, (119, 11, 32)),
    Label("license plate", -1, -1, "vehicle", False, (0, 0, 142)),
)

#: The 19 evaluated classes, in train-id order.
TRAIN_LABELS: tuple[Label, ...] = tuple(
    sorted(
        (lab for lab in LABELS if 0 <= lab.train_id < IGNORE_INDEX), key=lambda lab: lab.train_id
    )
)
CLASS_NAMES: tuple[str, ...] = tuple(lab.name for lab in TRAIN_LABELS)
NUM_CLASSES = len(TRAIN_LABELS)

#: label id (0-33) -> train id; ids outside the table are *invalid* (see VALID_LABEL_IDS).
ID_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _lab in LABELS:
    if _lab.id >= 0:
        ID_TO_TRAIN_ID[_lab.id] = _lab.train_id
#: True for the label ids that appear in the official table (0-33).
VALID_LABEL_IDS = np.zeros(256, dtype=bool)
VALID_LABEL_IDS[[lab.id for lab in LABELS if lab.id >= 0]] = True

#: train id -> label id (what the official evaluation script reads); 255 -> 0 (unlabeled).
TRAIN_ID_TO_ID = np.zeros(256, dtype=np.uint8)
for _lab in TRAIN_LABELS:
    TRAIN_ID_TO_ID[_lab.train_id] = _lab.id

#: train id -> RGB colour; 255 -> black.
TRAIN_ID_PALETTE = np.zeros((256, 3), dtype=np.uint8)
for _lab in TRAIN_LABELS:
    TRAIN_ID_PALETTE[_lab.train_id] = _lab.color

#: label id -> RGB colour (for ``*_gtFine_color.png``).
ID_PALETTE = np.zeros((256, 3), dtype=np.uint8)
for _lab in LABELS:
    if _lab.id >= 0:
        ID_PALETTE[_lab.id] = _lab.color

#: The thing classes that carry instances and a COCO category in the synthetic set.
THING_NAMES: tuple[str, ...] = tuple(
    lab.name for lab in TRAIN_LABELS if lab.has_instances
)  # person, rider, car, truck, bus, train, motorcycle, bicycle
#: Name -> label id of every label in the official table (0-33).
NAME_TO_ID: dict[str, int] = {lab.name: lab.id for lab in LABELS if lab.id >= 0}
#: Thing name -> label id, which is also its COCO category id in the synthetic set.
THING_IDS: dict[str, int] = {lab.name: lab.id for lab in LABELS if lab.name in THING_NAMES}


#: COCO names indexed by category id (0 = background, "N/A" for the 11 unused ids up to 90):
#: torchvision's list, the label order of its 91-class COCO detectors.
COCO_CATEGORY_NAMES: tuple[str, ...] = (
    "__background__",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "N/A",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "N/A",
    "backpack",
    "umbrella",
    "N/A",
    "N/A",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "N/A",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "N/A",
    "dining table",
    "N/A",
    "N/A",
    "toilet",
    "N/A",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "N/A",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)


def detection_class_names(cfg: Config, num_classes: int) -> list[str]:
    """Names of a detector's labels ``0..num_classes-1`` (0 = ``__background__``).

    In order: ``data.classes`` of a YOLO or VOC config (training writes them there); the
    categories of the config's COCO annotation file (``data.root`` /
    ``data.val_ann``, then ``train_ann``) numbered by ``data.label_mapping``; else, by
    ``num_classes``, the synthetic set's 8 Cityscapes thing classes (9 contiguous / 34 by
    category id) or COCO's 80 (81 contiguous / 91 by category id); else ``"class <label>"``.
    """
    if cfg.data.classes is not None and (cfg.data.format or "coco") != "coco":
        names = ["__background__", *cfg.data.classes]  # a YOLO or VOC set's, in label order
        return names[:num_classes] + [f"class {i}" for i in range(len(names), num_classes)]
    mapping = cfg.data.label_mapping
    categories = _annotation_categories(cfg)
    if categories is None:
        categories = _default_categories(num_classes, mapping)
    names = [f"class {i}" for i in range(num_classes)]
    if num_classes:
        names[0] = "__background__"
    if mapping == "contiguous":
        for label, cid in enumerate(sorted(categories), start=1):
            if label < num_classes:
                names[label] = categories[cid]
    else:
        for cid, name in categories.items():
            if 0 < cid < num_classes:
                names[cid] = name
    return names


def _annotation_categories(cfg: Config) -> dict[int, str] | None:
    root = Path(cfg.data.root)
    for ann in (cfg.data.val_ann, cfg.data.train_ann):
        path = root / ann
        if path.is_file():
            try:
                with open(path) as f:
                    data = json.load(f)
                return {int(c["id"]): str(c["name"]) for c in data["categories"]}
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return None


def _default_categories(num_classes: int, mapping: str) -> dict[int, str]:
    synthetic = {cid: name for name, cid in THING_IDS.items()}
    coco = {cid: name for cid, name in enumerate(COCO_CATEGORY_NAMES) if cid and name != "N/A"}
    for categories in (synthetic, coco):
        size = len(categories) + 1 if mapping == "contiguous" else max(categories) + 1
        if num_classes == size:
            return categories
    return {}


#: Pascal VOC 2012's segmentation classes (label 0 = background; 255 marks object borders).
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
#: ADE20K's 150 SceneParsing classes (ADEChallengeData2016), in label order (mask value - 1).
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
