"""What an exported file records about itself: the config it was trained with, its task, what its
graph outputs, its precision and the input sizes it takes.

``tools/export.py`` (fp32 ONNX, ExecuTorch ``.pte``) and ``tools/quantize.py`` (int8 ONNX) write it;
every runtime reads it, so ``--weights model.onnx`` / ``model.pte`` works in the eval tools, the
Predictor, the demo and the benchmark as a checkpoint does. In an ONNX file it is the model's
``metadata_props`` under ``densemnv3.*``; in a ``.pte`` (:mod:`.pte`) the same keys
and values, as the JSON a constant method of the program returns.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "METADATA_PREFIX",
    "OUTPUT_NAMES",
    "TASK_OF_OUTPUTS",
    "encode_values",
    "decode_values",
    "metadata_of",
    "read_metadata",
    "write_metadata",
]

METADATA_PREFIX = "densemnv3."
#: What a graph outputs, by the ``outputs`` metadata value.
OUTPUT_NAMES = {
    "logits": ("logits",),  # at the input size
    # at the low tap's stride (8): the label map of their upsampling is taken outside the graph
    "logits_raw": ("logits",),
    "decoded": ("boxes", "scores"),
    "raw": ("cls_logits", "bbox_regression", "anchors"),
    "detections": ("num_detections", "boxes", "scores", "labels"),
    "multitask": ("logits", "boxes", "scores"),
    # the logits at the low tap's stride (8): upsampled and post-processed by ExportedMultiTask
    "multitask_raw": ("logits", "cls_logits", "bbox_regression", "anchors"),
}
#: The task of a graph the tools run, by its ``outputs``.
TASK_OF_OUTPUTS = {
    "logits": "segmentation",
    "logits_raw": "segmentation",
    "raw": "detection",
    "detections": "detection",
    "multitask_raw": "multitask",
}


def encode_values(values: Mapping[str, Any]) -> dict[str, str]:
    """Strings as they are, anything else as its ``repr`` (read back with :func:`ast.literal_eval`:
    dicts, lists, tuples and numbers keep their types, nothing runs)."""
    return {key: value if isinstance(value, str) else repr(value) for key, value in values.items()}


def decode_values(values: Mapping[str, str]) -> dict[str, Any]:
    """The inverse of :func:`encode_values`."""
    decoded: dict[str, Any] = {}
    for key, text in values.items():
        try:
            decoded[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            decoded[key] = text
    return decoded


def write_metadata(proto: Any, values: Mapping[str, Any]) -> None:
    """Record ``values`` in an ``onnx.ModelProto``'s ``metadata_props`` under ``densemnv3.*``."""
    for key, text in encode_values(values).items():
        entry = proto.metadata_props.add()
        entry.key = METADATA_PREFIX + key
        entry.value = text


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``densemnv3.*`` metadata of the ONNX file at ``path`` (empty for another file).
    Raises :class:`OSError`/:class:`ValueError`-like errors of ``onnx`` for unreadable files."""
    import onnx

    return metadata_of(onnx.load(str(path), load_external_data=False))


def metadata_of(proto: Any) -> dict[str, Any]:
    """The ``densemnv3.*`` metadata of an ``onnx.ModelProto`` (empty for another model's)."""
    return decode_values(
        {
            entry.key[len(METADATA_PREFIX) :]: entry.value
            for entry in proto.metadata_props
            if entry.key.startswith(METADATA_PREFIX)
        }
    )
