#!/usr/bin/env python
"""Evaluate a segmentation checkpoint: per-class IoU table and ``metrics.json``.

``python tools/eval_seg.py CONFIG --weights CKPT [--out DIR] [--save-predictions DIR]``

CKPT may also be an ONNX file written by ``tools/quantize.py`` (int8) or ``tools/export.py``
(fp32): it runs in onnxruntime and is scored by the same code.

A bad sample stops the evaluation with its file name; with ``--set data.skip_bad=True`` it is
left out of the metric instead and listed in ``DIR/skipped_files.txt``. ``--save-predictions``
writes one label-id PNG per evaluated image (``{city}_{seq}_{frame}.png``) that Cityscapes'
official ``evalPixelLevelSemanticLabeling`` can score.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from densemnv3.commands import eval_parser, evaluate_and_write, load_for_eval  # noqa: E402
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

    metrics = evaluate_and_write(args, cfg, task, model, device, dataset, on_prediction=on_prediction)
    if args.save_predictions:
        print(f"wrote {metrics['images_evaluated']} PNGs to {args.save_predictions}")
    return 0


if __name__ == "__main__":
    run_main(main)
