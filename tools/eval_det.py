#!/usr/bin/env python
"""Evaluate a detection checkpoint with pycocotools.

``python tools/eval_det.py CONFIG --weights CKPT [--out DIR]`` prints COCOeval's 12-number
summary and a per-class AP table, and writes ``detections.json`` (COCO results format, original
category ids, boxes in original image pixels) and ``metrics.json`` to DIR.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from densemnv3.engine.cli import eval_parser, load_for_eval, output_dir  # noqa: E402
from densemnv3.utils.cli import run_main  # noqa: E402


def main() -> int:
    args = eval_parser(__doc__).parse_args()
    cfg, task, model, device = load_for_eval(args)
    out = output_dir(args)
    metrics = task.evaluate(model, task.val_dataset(), device, results_path=out / "detections.json")
    print(task.report(metrics))
    with open(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"wrote {out / 'detections.json'} and {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    run_main(main)
