"""Look at a config's dataset before training on it.

densemnv3 data check CONFIG [--split val] [--out DIR] [--set data.root=PATH ...]

Reads every sample of the split(s) (all of them; ``--split`` for one) as training would, and
prints the images per split and their sizes, each class's share of the pixels (segmentation) or
its box count and the box sizes (detection), and every problem found: a mask of another size
than its image, a value that is no class, a colour not in the palette, a YOLO box outside the
image, an XML without size, a file that does not decode. Each split gets a contact sheet PNG
(``DIR/contact_sheet_SPLIT.png``) of 16 samples with their masks and boxes drawn and the class
colours under them, so that a wrong palette or a swapped class list is seen before an hour of
training, and its report in ``DIR/data_check_SPLIT.txt``. Exit status 1 when problems were found.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from densemnv3.cli.arguments import add_set_argument

SAMPLES = 16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="densemnv3 data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["check"], help="what to do with the dataset")
    parser.add_argument("config", help="a config (a shipped config's name or a file)")
    parser.add_argument("--split", help="one split (default: data.train_split and val_split)")
    parser.add_argument(
        "--out", type=Path, help="where the contact sheets go (default: WORK_DIR/data_check)"
    )
    parser.add_argument("--no-progress", action="store_true")
    add_set_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from densemnv3.config import load_config
    from densemnv3.data.summary import summarize
    from densemnv3.tasks import build_task
    from densemnv3.tasks.common import ensure_synthetic
    from densemnv3.utils.files import write_image, write_text

    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    cfg.data = dataclasses.replace(cfg.data, skip_bad=True)  # list every problem, stop at none
    ensure_synthetic(cfg)
    task = build_task(cfg)
    out = args.out or Path(cfg.work_dir) / "data_check"
    splits = [args.split] if args.split else [cfg.data.train_split, cfg.data.val_split]
    problems = 0
    for split in dict.fromkeys(splits):
        dataset = task.dataset(split, train=False)
        dataset.transform = None  # the original images and labels
        summary = summarize(dataset, split, progress=not args.no_progress)
        report = "\n".join(summary.lines())
        print(report, flush=True)
        write_text(out / f"data_check_{split}.txt", report + "\n")
        if summary.good:
            sheet = out / f"contact_sheet_{split}.png"
            write_image(sheet, contact_sheet(dataset, summary.good))
            print(f"contact sheet: {sheet}\n")
        problems += len(summary.problems)
    return 1 if problems else 0


def contact_sheet(dataset, indices: list[int]) -> np.ndarray:
    """BGR sheet of up to 16 samples (evenly spread over ``indices``) with masks and boxes."""
    import cv2

    from densemnv3.data.summary import dataset_file
    from densemnv3.inference.visualize import contact_sheet as grid
    from densemnv3.inference.visualize import draw_detections, overlay_segmentation

    spread = np.linspace(0, len(indices) - 1, min(SAMPLES, len(indices))).round().astype(int)
    picks = [indices[i] for i in spread]
    classes = getattr(dataset, "classes", None)
    tiles = []
    for index in dict.fromkeys(int(i) for i in picks):
        item = dataset.load(index) if hasattr(dataset, "load") else dataset[index]
        frame = cv2.cvtColor(np.ascontiguousarray(item[0]), cv2.COLOR_RGB2BGR)
        if classes is not None:
            frame = overlay_segmentation(
                frame, np.asarray(item[1]), 0.5, classes.colours(), classes.ignore_index
            )
        boxes = _boxes(dataset, index, item)
        if boxes is not None:
            draw_detections(frame, boxes, class_names=getattr(dataset, "class_names", None))
        tiles.append((frame, Path(dataset_file(dataset, index)).name))
    legend = (
        [(n, tuple(int(v) for v in c)) for n, c in zip(classes.names, classes.colours())]
        if classes is not None
        else []
    )
    return grid(tiles, legend=legend)


def _boxes(dataset, index: int, item) -> dict | None:
    """The sample's boxes (xyxy pixels) and labels for ``draw_detections``, or None."""
    import torch

    if isinstance(item[1], dict):  # a detection sample: (image, target)
        target = item[1]
        boxes, labels = target["boxes"], target["labels"]
    elif len(item) > 3:  # the multi-task sample: image, mask, boxes, labels, ...
        boxes, labels = torch.as_tensor(item[2]), torch.as_tensor(item[3])
    else:
        return None
    return {
        "boxes": torch.as_tensor(boxes).reshape(-1, 4),
        "labels": torch.as_tensor(labels).reshape(-1),
        "scores": torch.ones(len(labels)),
    }
