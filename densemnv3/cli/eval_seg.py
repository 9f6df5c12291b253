"""Evaluate a segmentation checkpoint: per-class IoU table and ``metrics.json``.

``densemnv3 eval-seg CONFIG --weights CKPT [--out DIR] [--save-predictions DIR]``

CKPT may also be an ONNX file written by ``tools/quantize.py`` (int8) or ``tools/export.py``
(fp32): it runs in onnxruntime and is scored by the same code.

A bad sample stops the evaluation with its file name; with ``--set data.skip_bad=True`` it is
left out of the metric instead and listed in ``DIR/skipped_files.txt``. ``--save-predictions``
writes one label-id PNG per evaluated image (``{city}_{seq}_{frame}.png``) that Cityscapes'
official ``evalPixelLevelSemanticLabeling`` can score.
"""

from densemnv3.cli.commands import eval_from_cli


def main(argv: list[str] | None = None) -> int:
    return eval_from_cli("segmentation", __doc__, argv)
