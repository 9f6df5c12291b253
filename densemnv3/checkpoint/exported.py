"""Exported files given as weights: a densemnv3 ONNX model (fp32 from ``tools/export.py``, int8
from ``tools/quantize.py``) or ExecuTorch program (``.pte``), read and checked without running
it. Their metadata records the config, the task and what the graph outputs; the graph must take
and give what the metadata declares (:mod:`.signature`), with finite weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from densemnv3.config.schema import TASKS
from densemnv3.errors import CheckpointError

from .info import CheckpointInfo
from .metadata import metadata_of
from .pte import read_pte
from .signature import check_graph, onnx_float_weights, onnx_signature
from .state import check_finite

__all__ = ["inspect_onnx", "inspect_pte"]


def inspect_onnx(path: Path) -> CheckpointInfo:
    """A densemnv3 ONNX file: its metadata records the config, the task and what it outputs;
    its graph must take and give what the metadata declares, with finite weights (read without
    running it: :mod:`.signature`)."""
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        metadata = metadata_of(proto)
    except ImportError:
        raise CheckpointError(
            f"{path}: reading an ONNX file needs the 'onnx' package, which is not "
            f"installed: pip install densemnv3[export]"
        ) from None
    except Exception:  # noqa: BLE001 - protobuf raises its own errors for arbitrary bytes
        raise CheckpointError(
            f"{path}: not a readable ONNX model ({path.stat().st_size} bytes, "
            f"truncated or damaged); "
            f"write one with tools/export.py or tools/quantize.py"
        ) from None
    if metadata.get("task") == "multitask" and metadata.get("outputs") != "multitask_raw":
        raise CheckpointError(
            f"{path}: a multi-task ONNX file (logits, boxes and scores without NMS), which "
            f"the tools do not run; run it in onnxruntime, or give the tools "
            f"tools/quantize.py's file or the checkpoint it was exported from (best.pt)"
        )
    if not isinstance(metadata.get("config"), Mapping) or metadata.get("task") not in TASKS:
        raise CheckpointError(
            f"{path}: an ONNX model not written by densemnv3 (its metadata records no "
            f"config); the tools run the files of tools/export.py and tools/quantize.py"
        )

    check_graph(
        path,
        metadata,
        *onnx_signature(proto),
        remedy="export the checkpoint with tools/export.py or tools/quantize.py",
    )
    check_finite(onnx_float_weights(proto), what=f"{path}: its graph")
    made_by = "tools/quantize.py" if metadata.get("precision") == "int8" else "tools/export.py"
    return _exported_info(path, metadata, "onnx", f"ONNX {{task}} model of {{arch}} ({made_by})")


def inspect_pte(path: Path) -> CheckpointInfo:
    """A densemnv3 ExecuTorch program: its ``densemnv3_metadata`` method returns the metadata an
    ONNX file records (:mod:`.pte`); its ``forward`` must take
    and give what the metadata declares (:mod:`.signature`)."""
    try:
        metadata, signature = read_pte(path)
    except ImportError:
        raise CheckpointError(
            f"{path}: reading an ExecuTorch program needs the 'executorch' package, which "
            f"is not installed: pip install densemnv3[executorch]"
        ) from None
    except Exception:  # noqa: BLE001 - the runtime raises RuntimeError with an error code; JSON errors
        raise CheckpointError(
            f"{path}: not a readable ExecuTorch program ({path.stat().st_size} bytes, "
            f"truncated or damaged); write one with tools/export.py --format executorch"
        ) from None
    if not isinstance(metadata.get("config"), Mapping) or metadata.get("task") not in TASKS:
        raise CheckpointError(
            f"{path}: an ExecuTorch program not written by densemnv3 (it records no "
            f"config); the tools run the .pte files of tools/export.py --format executorch"
        )
    if signature is not None:  # without a forward the engine says so when it loads
        check_graph(
            path,
            metadata,
            *signature,
            remedy="export the checkpoint with tools/export.py --format executorch",
        )
    return _exported_info(
        path, metadata, "pte", "ExecuTorch {task} model of {arch} (tools/export.py)"
    )


def _exported_info(path: Path, metadata: dict, fmt: str, what: str) -> CheckpointInfo:
    """The :class:`CheckpointInfo` of an exported file (``what``: its description after the
    precision, with ``{task}`` and ``{arch}`` filled in from ``metadata``)."""
    arch, task = str(metadata.get("arch")), metadata["task"]
    precision = metadata.get("precision", "fp32")
    description = f"an {precision} " + what.format(task=task, arch=arch)
    return CheckpointInfo(
        path=path,
        state=metadata,
        weights={},
        task=task,
        arch=arch,
        backbone=None,
        description=description,
        format=fmt,
    )
