"""Evaluate a detection checkpoint with pycocotools.

``densemnv3 eval-det CONFIG --weights CKPT [--out DIR]`` prints COCOeval's 12-number
summary and a per-class AP table, and writes ``detections.json`` (COCO results format, original
category ids, boxes in original image pixels) and ``metrics.json`` to DIR.

CKPT may also be an ONNX file written by ``tools/quantize.py`` (int8) or ``tools/export.py``
(fp32): it runs in onnxruntime and is scored by the same code.

A bad image stops the evaluation with its file name; with ``--set data.skip_bad=True`` it is left
out — of ``detections.json`` and of the image ids COCOeval scores — and listed in
``DIR/skipped_files.txt``.
"""

from densemnv3.cli.commands import eval_from_cli


def main(argv: list[str] | None = None) -> int:
    return eval_from_cli("detection", __doc__, argv)
