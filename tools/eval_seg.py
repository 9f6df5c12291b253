#!/usr/bin/env python
"""Evaluate a segmentation checkpoint: per-class IoU table and ``metrics.json``.

``python tools/eval_seg.py CONFIG --weights CKPT [--out DIR] [--save-predictions DIR]``

``--save-predictions`` writes one label-id PNG per image (``{city}_{seq}_{frame}.png``) that
Cityscapes' official ``evalPixelLevelSemanticLabeling`` can score.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from densemnv3.engine.cli import eval_parser, load_for_eval, output_dir  # noqa: E402
from densemnv3.utils.cli import run_main  # noqa: E402


def main() -> int:
    import cv2
    import torch

    from densemnv3.evaluation.segmentation import label_ids_from_train_ids

    parser = eval_parser(__doc__)
    parser.add_argument("--save-predictions", metavar="DIR", help="write label-id PNGs here")
    parser.add_argument("--split", default=None, help="dataset split (default: data.val_split)")
    args = parser.parse_args()
    cfg, task, model, device = load_for_eval(args)
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
    out = output_dir(args)
    with open(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
    saved = f" and {len(dataset)} PNGs to {args.save_predictions}" if args.save_predictions else ""
    print(f"wrote {out / 'metrics.json'}{saved}")
    return 0


if __name__ == "__main__":
    run_main(main)
