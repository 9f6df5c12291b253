"""Evaluate a checkpoint of any task: ``densemnv3 eval [CONFIG] --weights CKPT [--out DIR]
[--split S] [--save-predictions DIR]``.

CONFIG may be left out for ``last.pt`` / ``best.pt``, which record theirs. Writes ``metrics.json``
to DIR (default: the checkpoint's folder) with what the task measures: segmentation the per-class
IoU and ``mIoU``; detection pycocotools' ``AP``, ``AP50``, ... and ``detections.json``; the
multi-task model both, from one pass, and ``mIoU_AP_mean``. ``--save-predictions`` writes
label-id PNGs for Cityscapes' official script (models that segment). Bad samples: as
``tools/eval_seg.py`` (``--set data.skip_bad=True``).
"""

from densemnv3.cli.commands import eval_from_cli


def main(argv: list[str] | None = None) -> int:
    return eval_from_cli(None, __doc__, argv)
