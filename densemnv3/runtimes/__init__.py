"""The runtimes that run exported files, as one layer: the engines (:mod:`.engines`: onnxruntime,
OpenVINO; :mod:`.executorch_engine`: ExecuTorch), the task wrappers that give an exported file the
interface of the PyTorch model (:mod:`.model`) and the choice of engine, asked for or measured
(:mod:`.choice`). The metadata every exported file records: :mod:`densemnv3.checkpoint.metadata`.

:func:`densemnv3.load.load_model` loads exported files through :func:`load_exported`, so the
Predictor, the eval tools, the demo and the benchmark take ``--weights model.onnx`` /
``model.pte`` and ``--runtime`` alike. Names load on first use: ``densemnv3.runtimes.names``
imports without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from densemnv3.utils.lazy import lazy_exports

_EXPORTS = {
    "RUNTIMES": "names",
    "check_runtime": "choice",
    "engine_class": "choice",
    "engines_for": "choice",
    "load_exported": "choice",
    "route_cache_path": "choice",
    "Engine": "engines",
    "METADATA_PREFIX": "densemnv3.checkpoint.metadata",
    "OUTPUT_NAMES": "densemnv3.checkpoint.metadata",
    "TASK_OF_OUTPUTS": "densemnv3.checkpoint.metadata",
    "read_metadata": "densemnv3.checkpoint.metadata",
    "write_metadata": "densemnv3.checkpoint.metadata",
    "ExportedDetector": "model",
    "ExportedModel": "model",
    "ExportedMultiTask": "model",
    "ExportedSegmenter": "model",
    "exported_model": "model",
}

__all__ = [
    "METADATA_PREFIX",
    "OUTPUT_NAMES",
    "RUNTIMES",
    "TASK_OF_OUTPUTS",
    "Engine",
    "ExportedDetector",
    "ExportedModel",
    "ExportedMultiTask",
    "ExportedSegmenter",
    "check_runtime",
    "engine_class",
    "engines_for",
    "exported_model",
    "load_exported",
    "read_metadata",
    "route_cache_path",
    "write_metadata",
]

if TYPE_CHECKING:
    from densemnv3.checkpoint.metadata import (
        METADATA_PREFIX,
        OUTPUT_NAMES,
        TASK_OF_OUTPUTS,
        read_metadata,
        write_metadata,
    )

    from .choice import check_runtime, engine_class, engines_for, load_exported, route_cache_path
    from .engines import Engine
    from .model import (
        ExportedDetector,
        ExportedModel,
        ExportedMultiTask,
        ExportedSegmenter,
        exported_model,
    )
    from .names import RUNTIMES


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
