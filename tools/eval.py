#!/usr/bin/env python
"""Evaluate a checkpoint of any task: ``python tools/eval.py [CONFIG] --weights CKPT [--out DIR]
[--split S] [--save-predictions DIR]``.

CONFIG may be left out for ``last.pt`` / ``best.pt``, which record theirs. Writes ``metrics.json``
to DIR (default: the checkpoint's folder) with what the task measures: segmentation the per-class
IoU and ``mIoU``; detection pycocotools' ``AP``, ``AP50``, ... and ``detections.json``; the
multi-task model both, from one pass, and ``mIoU_AP_mean``. ``--save-predictions`` writes
label-id PNGs for Cityscapes' official script (models that segment). Bad samples: as
``tools/eval_seg.py`` (``--set data.skip_bad=True``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from densemnv3.commands import eval_from_cli  # noqa: E402
from densemnv3.utils.cli import run_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return eval_from_cli(None, __doc__, argv)


if __name__ == "__main__":
    run_main(main)
