#!/usr/bin/env python
"""Evaluate a detection checkpoint with pycocotools.

``python tools/eval_det.py CONFIG --weights CKPT [--out DIR]`` prints COCOeval's 12-number
summary and a per-class AP table, and writes ``detections.json`` (COCO results format, original
category ids, boxes in original image pixels) and ``metrics.json`` to DIR.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from densemnv3.utils.cli import add_set_argument, resolve_device, run_main  # noqa: E402


def main() -> int:
    import torch

    from densemnv3.config import load_config
    from densemnv3.engine.checkpoint import load_checkpoint
    from densemnv3.models import load_torchvision_weights
    from densemnv3.tasks import build_task

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--weights", required=True, help="a checkpoint (last.pt / best.pt / torchvision)")
    add_set_argument(parser)
    parser.add_argument("--out", help="output folder (default: the checkpoint's folder)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    cfg = load_config(args.config, args.overrides)
    device = torch.device(resolve_device(args.device or cfg.train.device))
    task = build_task(cfg)
    model = task.build_model()
    load_torchvision_weights(model, load_checkpoint(args.weights))
    model.to(device).eval()
    out = Path(args.out) if args.out else Path(args.weights).parent
    out.mkdir(parents=True, exist_ok=True)
    metrics = task.evaluate(model, task.val_dataset(), device, results_path=out / "detections.json")
    print(task.report(metrics))
    with open(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"wrote {out / 'detections.json'} and {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    run_main(main)
