#!/usr/bin/env python
"""Evaluate a segmentation checkpoint: per-class IoU table and ``metrics.json``.

``python tools/eval_seg.py CONFIG --weights CKPT [--out DIR] [--save-predictions DIR]``

``--save-predictions`` writes one label-id PNG per image (``{city}_{seq}_{frame}.png``) that
Cityscapes' official ``evalPixelLevelSemanticLabeling`` can score.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from densemnv3.utils.cli import add_set_argument, resolve_device, run_main  # noqa: E402


def main() -> int:
    import cv2
    import torch

    from densemnv3.config import load_config
    from densemnv3.engine.checkpoint import load_checkpoint
    from densemnv3.evaluation.segmentation import label_ids_from_train_ids
    from densemnv3.models import load_torchvision_weights
    from densemnv3.tasks import build_task

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--weights", required=True, help="a checkpoint (last.pt / best.pt / torchvision)")
    add_set_argument(parser)
    parser.add_argument("--out", help="where metrics.json goes (default: the checkpoint's folder)")
    parser.add_argument("--save-predictions", metavar="DIR", help="write label-id PNGs here")
    parser.add_argument("--device", default=None)
    parser.add_argument("--split", default=None, help="dataset split (default: data.val_split)")
    args = parser.parse_args()

    cfg = load_config(args.config, args.overrides)
    device = torch.device(resolve_device(args.device or cfg.train.device))
    task = build_task(cfg)
    model = task.build_model()
    state = load_checkpoint(args.weights)
    load_torchvision_weights(model, state)
    model.to(device).eval()
    dataset = task.dataset(args.split or cfg.data.val_split, train=False)

    on_prediction = None
    if args.save_predictions:
        pred_dir = Path(args.save_predictions)
        pred_dir.mkdir(parents=True, exist_ok=True)

        def on_prediction(index: int, pred: torch.Tensor) -> None:
            ids = label_ids_from_train_ids(pred.to(torch.uint8).cpu().numpy())
            cv2.imwrite(str(pred_dir / f"{dataset.sample_id(index)}.png"), ids)

    metrics = task.evaluate(model, dataset, device, on_prediction=on_prediction)
    print(task.report(metrics))
    out = Path(args.out) if args.out else Path(args.weights).parent
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"wrote {out / 'metrics.json'}" + (f" and {len(dataset)} PNGs to {args.save_predictions}"
                                              if args.save_predictions else ""))
    return 0


if __name__ == "__main__":
    run_main(main)
