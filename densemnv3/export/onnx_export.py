"""Export a trained model to ONNX or TorchScript, checked against PyTorch on random input.

What is exported (input ``images``: a normalised ``(N, 3, H, W)`` float batch, N dynamic):

- LR-ASPP (:class:`LRASPPExport`): ``logits`` ``(N, num_classes, H/8, W/8)``, the logits at the
  low tap's stride before the model upsamples them; the tools take the labels of their bilinear
  upsampling from them without computing it (:func:`~densemnv3.inference.upsampled_labels`:
  the same labels, in a fraction of the upsample's time). With ``full_size_logits``,
  ``(N, num_classes, H, W)``, the upsample in the graph (as files
  of ``outputs: logits`` carry it).
- SSDLite (:class:`SSDLiteExport`): ``boxes`` ``(N, A, 4)`` decoded xyxy in input pixels, clipped
  to the image, and ``scores`` ``(N, A, num_classes)`` softmax (column 0 is the background), for
  an NMS outside the graph; or, with ``postprocess=True`` (ONNX), the detections themselves:
  ``num_detections``, ``boxes``, ``scores``, ``labels`` (:mod:`.onnx_postprocess`).
- Multi-task (LR-ASPP + SSDLite, :class:`MultiTaskExport`): ``logits``, ``boxes`` and ``scores``
  as above, from one backbone pass (``tools/quantize.py``'s int8 file, the one the tools run,
  outputs the raw tensors instead: :class:`MultiTaskExport`).

ONNX files take any height and width (``H``, ``W`` dynamic; SSDLite's default boxes are computed
in the graph from its feature-map sizes); an LR-ASPP with the paper's pool takes any size from
784×784 up, where its window is fixed, or is exported at the given size when that is smaller
(:func:`min_input_size`). TorchScript files are traced at the
given size. An ONNX file records the model's config in its metadata (``metadata=``), so the tools
load it with ``--weights`` (:mod:`densemnv3.runtimes`).
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densemnv3.checkpoint.metadata import OUTPUT_NAMES, write_metadata
from densemnv3.errors import ExportCheckError, UserError
from densemnv3.inference.optimize import prepare_for_inference
from densemnv3.models import LRASPP, SSDLite
from densemnv3.utils.files import atomic_write

from .check import (
    BOX_TOLERANCE,
    SCORE_TOLERANCE,
    Format,
    check_detections,
    check_exported,
    quiet,
)
from .graphs import LRASPPExport, MultiTaskExport, SSDLiteExport, exportable
from .paths import check_output_path
from .sizes import min_input_size, second_size, size_metadata, trace_size

__all__ = [
    "ExportCheckError",
    "ExportReport",
    "export_model",
    "quiet",
    "require_onnx",
]


#: Largest max-abs difference between the exported file and PyTorch that passes the check.
TOLERANCE = 1e-3


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and how far the file is from PyTorch, per input."""

    path: Path
    size_bytes: int
    opset: int | None = None
    dynamic: bool = False
    outputs: str = "logits"
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return all(d <= self.tolerance for d in self.max_abs_diff.values())

    def summary(self) -> str:
        if self.outputs == "detections":
            what = (
                f"detections vs PyTorch's (boxes within {BOX_TOLERANCE:g} px, scores within "
                f"{SCORE_TOLERANCE:g}, same labels: "
            )
            found = ", ".join(
                f"{k}: {'same' if d == 0 else f'{d:g} differ'}"
                for k, d in self.max_abs_diff.items()
            )
            return what + found + ") -> " + ("OK" if self.ok else "FAILED")
        diffs = ", ".join(f"{k}: {d:.2e}" for k, d in self.max_abs_diff.items())
        verdict = "OK" if self.ok else "FAILED"
        return f"max abs diff vs PyTorch ({diffs}) -> {verdict} (tolerance {self.tolerance:g})"


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    fmt: Format,
    input_size: Sequence[int],
    opset: int | None = None,
    fuse_bn: bool = True,
    check_batches: Sequence[int] = (1, 3),
    tolerance: float = TOLERANCE,
    postprocess: bool = False,
    full_size_logits: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> ExportReport:
    """Export ``model`` (an LR-ASPP, SSDLite or multi-task model in PyTorch) to ``path`` and check
    the file.

    Runs on CPU (``model`` is moved there). A copy is put in eval mode with BatchNorm folded
    (``fuse_bn``) and exported; the check runs the written file (onnxruntime /
    ``torch.jit.load``) on random input at ``input_size`` and each of ``check_batches`` (and, for
    a dynamic ONNX file, at batch 2 at :func:`second_size`) and compares with the *unfolded*
    model, so it covers folding and export. ``postprocess`` (SSDLite, ONNX): the graph outputs
    detections, compared with the model's own. ``full_size_logits`` (LR-ASPP): the logits upsampled
    to the input size in the graph, not at stride 8. ``metadata`` (ONNX): recorded in the file
    (``config``, ``task``, ``arch`` make it loadable with ``--weights``).

    Raises :class:`ExportCheckError` if a difference exceeds ``tolerance``, :class:`UserError`
    if ``path`` cannot be written, the ONNX packages are missing or ``postprocess`` does not apply.
    """
    if fmt == "onnx":
        require_onnx()
    elif fmt != "torchscript":
        raise UserError(f"unknown export format {fmt!r}; use onnx or torchscript")
    if postprocess and not (fmt == "onnx" and isinstance(model, SSDLite)):
        raise UserError(
            "--postprocess puts SSDLite's NMS in an ONNX graph; it applies to a detection "
            "model exported with --format onnx"
        )
    path = check_output_path(path)
    reference = model.eval().cpu()
    module = prepare_for_inference(copy.deepcopy(model), fuse_bn=fuse_bn)
    if full_size_logits and not isinstance(model, LRASPP):
        raise UserError(
            "--full-size-logits applies to a segmentation model (LR-ASPP), whose file "
            "otherwise outputs its logits at stride 8"
        )
    net, form = exportable(module, full_size_logits=full_size_logits)
    ref_net, _ = exportable(reference, full_size_logits=full_size_logits)
    min_size = min_input_size(model, input_size) if fmt == "onnx" else None
    dynamic = min_size is not None
    with atomic_write(path) as tmp, quiet():
        if fmt == "onnx":
            export_onnx(net, tmp, input_size, OUTPUT_NAMES[form], opset=opset, min_size=min_size)
            if postprocess or metadata:
                import onnx

                proto = onnx.load(str(tmp))
                if postprocess:
                    _append_postprocess(proto, model)
                    form = "detections"
                write_metadata(
                    proto,
                    {
                        **(metadata or {}),
                        "outputs": form,
                        "precision": "fp32",
                        **size_metadata(input_size, min_size),
                    },
                )
                onnx.save(proto, str(tmp))
        else:
            example = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
            # Frozen: weights become constants; unfrozen, the traced SSDLite runs ~50x slower
            # under the default TorchScript executor (torch 2.14).
            traced = torch.jit.trace(net, example, check_trace=False)
            torch.jit.save(torch.jit.freeze(traced.eval()), str(tmp))
    report = ExportReport(
        path, path.stat().st_size, dynamic=dynamic, outputs=form, tolerance=tolerance
    )
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        report.opset = next(
            (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None
        )
    inputs = [(tuple(input_size), b) for b in check_batches]
    if dynamic:
        inputs.append((second_size(input_size, min_size), 2))
    if form == "detections":
        report.tolerance = 0
        report.max_abs_diff = check_detections(path, reference, inputs)
    else:
        report.max_abs_diff = check_exported(path, fmt, ref_net, inputs)
    if not report.ok:
        raise ExportCheckError(f"{path}: exported model disagrees with PyTorch: {report.summary()}")
    return report


def _append_postprocess(proto: Any, model: SSDLite) -> None:
    from .onnx_postprocess import append_ssd_postprocess

    append_ssd_postprocess(
        proto,
        num_classes=model.num_classes,
        score_thresh=model.score_thresh,
        nms_thresh=model.nms_thresh,
        topk_candidates=model.topk_candidates,
        detections_per_img=model.detections_per_img,
    )


# --------------------------------------------------------------------------- helpers


def require_onnx(what: str = "ONNX export") -> None:
    """A :class:`UserError` naming the install command if an ONNX package is missing."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise UserError(
                f"{what} needs the {name!r} package, which is not installed: "
                f"pip install densemnv3[export]"
            ) from None


def export_onnx(
    net: nn.Module,
    path: str | os.PathLike,
    input_size: Sequence[int],
    output_names: Sequence[str],
    *,
    opset: int | None = None,
    min_size: Sequence[int] | None = (32, 32),
    static: bool = False,
) -> None:
    """``torch.onnx.export`` (torch.export-based; the older TorchScript-based exporter mis-traces
    SSDLite's in-place flattening at some sizes) with a dynamic batch axis, and a dynamic height
    and width from ``min_size`` up (``None``: fixed at ``input_size``); weights in the file.
    ``static``: every dimension fixed, batch 1 at ``input_size``: a file to time, not to ship,
    exported in a fraction of the time (SSDLite at 256x512: 5 s against 23 s)."""
    size, batch_size, shapes = tuple(input_size), 1, {}
    if not static:
        # batch 2: torch.export specialises dimensions of size 1, which would fix the batch
        batch_size, axes = 2, {0: torch.export.Dim("batch")}
        if min_size is not None:
            axes[2] = torch.export.Dim("height", min=int(min_size[0]), max=16384)
            axes[3] = torch.export.Dim("width", min=int(min_size[1]), max=16384)
            wrapped = (LRASPPExport, SSDLiteExport, MultiTaskExport)
            size = trace_size(net.model if isinstance(net, wrapped) else net, size)
        shapes = {"dynamic_shapes": (axes,)}
    example = torch.randn(batch_size, 3, *size, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(
        net,
        (example,),
        str(path),
        input_names=["images"],
        output_names=list(output_names),
        opset_version=opset,
        dynamo=True,
        external_data=False,
        **shapes,
    )
