"""Names of a detector's labels: from the config's COCO annotations, else the known label sets."""

from __future__ import annotations

import json
from pathlib import Path

from densemnv3.config import Config

__all__ = ["detection_class_names"]


def detection_class_names(cfg: Config, num_classes: int) -> list[str]:
    """Names of a detector's labels ``0..num_classes-1`` (0 = ``__background__``).

    In order: the categories of the config's COCO annotation file (``data.root`` /
    ``data.val_ann``, then ``train_ann``) numbered by ``data.label_mapping``; else, by
    ``num_classes``, the synthetic set's 8 Cityscapes thing classes (9 contiguous / 34 by
    category id) or COCO's 80 (81 contiguous / 91 by category id); else ``"class <label>"``.
    """
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
    from densemnv3.data.cityscapes_labels import THING_IDS

    from .visualize import COCO_CATEGORY_NAMES

    synthetic = {cid: name for name, cid in THING_IDS.items()}
    coco = {cid: name for cid, name in enumerate(COCO_CATEGORY_NAMES) if cid and name != "N/A"}
    for categories in (synthetic, coco):
        size = len(categories) + 1 if mapping == "contiguous" else max(categories) + 1
        if num_classes == size:
            return categories
    return {}
