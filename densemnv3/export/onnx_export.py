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
import torch.nn.functional as F
from torch import Tensor, nn

from densemnv3.checkpoint.metadata import OUTPUT_NAMES, write_metadata
from densemnv3.errors import ExportCheckError, UserError
from densemnv3.inference.optimize import prepare_for_inference
from densemnv3.models import LRASPP, LRASPPSSDLite, SSDLite
from densemnv3.models.resize import resize_bilinear
from densemnv3.utils.files import atomic_write

from .check import (
    BOX_TOLERANCE,
    SCORE_TOLERANCE,
    Format,
    check_detections,
    check_exported,
    quiet,
)

__all__ = [
    "ExportCheckError",
    "ExportReport",
    "LRASPPExport",
    "MultiTaskExport",
    "SSDLiteExport",
    "check_output_path",
    "dynamic_size",
    "export_model",
    "exportable",
    "min_input_size",
    "output_file",
    "quiet",
    "require_onnx",
    "second_size",
    "size_metadata",
    "trace_size",
]


#: Largest max-abs difference between the exported file and PyTorch that passes the check.
TOLERANCE = 1e-3


class LRASPPExport(nn.Module):
    """An :class:`~densemnv3.models.LRASPP` for export: ``forward`` is its :meth:`~LRASPP.network`,
    the logits at stride 8 (``outputs: logits_raw``)."""

    def __init__(self, model: LRASPP) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.network(images)


class SSDLiteExport(nn.Module):
    """An :class:`~densemnv3.models.SSDLite` network without NMS, for export.

    ``outputs="decoded"``: ``forward(images)`` returns ``(boxes, scores)``: every default box
    decoded (xyxy input pixels, clipped to the image) and the softmax over classes, exactly what
    ``SSDLite.postprocess`` starts from. A deployment then does, per image, what
    ``SSDLite.postprocess`` does: drop the background column, keep the ``topk_candidates`` (300)
    best scores above ``score_thresh`` (0.001) per class,
    ``torchvision.ops.batched_nms(boxes, scores, labels, nms_thresh=0.55)`` and keep the
    ``detections_per_img`` (300) best — or export with ``postprocess=True``.

    ``outputs="raw"``: ``(cls_logits, bbox_regression, anchors)``, as ``SSDLite.predict_raw``
    (the int8 files, whose postprocess runs in float in PyTorch).

    Under ``torch.export`` the default boxes are computed in the graph from the feature-map sizes
    (``DefaultBoxes.generate``), so one file serves every input size.
    """

    def __init__(self, model: SSDLite, outputs: str = "decoded") -> None:
        super().__init__()
        if outputs not in ("decoded", "raw"):
            raise ValueError(f"outputs must be 'decoded' or 'raw', got {outputs!r}")
        self.model = model
        self.outputs = outputs

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        raw = self.model.predict_raw(images)
        if self.outputs == "raw":
            return raw
        return boxes_and_scores(self.model, *raw, images.shape[-2:])


class MultiTaskExport(nn.Module):
    """A multi-task model for export, one backbone pass.

    ``outputs="decoded"``: ``(logits, boxes, scores)`` — the logits at the input size, the
    detector's outputs as :class:`SSDLiteExport`'s, for a deployment of its own.
    ``outputs="raw"``: ``(logits, cls_logits, bbox_regression, anchors)`` as
    ``LRASPPSSDLite.network`` — the logits at the low tap's stride (8) — the file the tools run
    (:class:`~densemnv3.runtimes.ExportedMultiTask` upsamples and post-processes in PyTorch).
    """

    def __init__(self, model: LRASPPSSDLite, outputs: str = "decoded") -> None:
        super().__init__()
        if outputs not in ("decoded", "raw"):
            raise ValueError(f"outputs must be 'decoded' or 'raw', got {outputs!r}")
        self.model = model
        self.outputs = outputs

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        logits, *raw = self.model.network(images)
        if self.outputs == "raw":
            return (logits, *raw)
        size = images.shape[-2:]
        return (resize_bilinear(logits, size), *boxes_and_scores(self.model.det, *raw, size))


def boxes_and_scores(
    model: SSDLite,
    cls_logits: Tensor,
    bbox_regression: Tensor,
    anchors: Tensor,
    image_size: Sequence,
) -> tuple[Tensor, Tensor]:
    """Every default box decoded (xyxy, clipped to the ``image_size`` input) and the softmax
    over classes: what ``SSDLite.postprocess`` starts from."""
    boxes = model.box_coder.decode(bbox_regression, anchors)
    height, width = image_size
    limits = torch.where(torch.arange(4) % 2 == 0, width, height).to(boxes.dtype)
    boxes = torch.minimum(boxes.clamp(min=0), limits)
    return boxes, F.softmax(cls_logits, dim=-1)


def exportable(
    model: nn.Module, outputs: str | None = None, *, full_size_logits: bool = False
) -> tuple[nn.Module, str]:
    """The module to export for ``model`` and what it outputs (a key of ``OUTPUT_NAMES``):
    ``SSDLite`` → :class:`SSDLiteExport` (``outputs``: ``"decoded"`` or ``"raw"``), the multi-task
    model → :class:`MultiTaskExport` (``"multitask"`` or ``"multitask_raw"``), an LR-ASPP →
    :class:`LRASPPExport` (``"logits_raw"``; with ``full_size_logits`` the model itself,
    ``"logits"``), else the model."""
    if isinstance(model, LRASPPSSDLite):
        form = outputs or "decoded"
        return MultiTaskExport(model, form), "multitask_raw" if form == "raw" else "multitask"
    if isinstance(model, SSDLite):
        form = outputs or "decoded"
        return SSDLiteExport(model, form), form
    if isinstance(model, LRASPP) and not full_size_logits:
        return LRASPPExport(model), "logits_raw"
    return model, "logits"


def min_input_size(model: nn.Module, input_size: Sequence[int]) -> tuple[int, int] | None:
    """The smallest height and width an ONNX file of ``model`` traced at ``input_size`` takes
    (it then takes every larger size), or ``None``: the file takes ``input_size`` only.

    Dynamic sizes need the same operations at every size. The paper's LR-ASPP pool averages a
    49×49 window, clamped to maps smaller than that: a fixed window (one ``AveragePool``) for
    inputs whose stride-16 map is at least 49×49 (784×784 px, Cityscapes' 1024×2048 frames
    included), a different one below. So it is dynamic from there up when traced there, and
    fixed at ``input_size`` when traced below. Every other model takes any size from 32×32.
    """
    paper = _paper_pool(model)
    if paper is not None:
        pool, stride = paper
        low = tuple(k * stride for k in pool.kernel_size)
        return low if all(s >= m for s, m in zip(input_size, low)) else None
    return (32, 32)


def _paper_pool(model: nn.Module) -> tuple[nn.AvgPool2d, int] | None:
    """The paper pool of an LR-ASPP head (alone or in the multi-task model) and the stride of the
    map it pools, or ``None``."""
    head = (
        model.head
        if isinstance(model, LRASPP)
        else model.seg
        if isinstance(model, LRASPPSSDLite)
        else None
    )
    if head is None or head.pool != "paper":
        return None
    return head.scale[0], model.backbone.feature_info[model.high_tap].stride


def dynamic_size(model: nn.Module, input_size: Sequence[int] = (10**4, 10**4)) -> bool:
    """Whether an ONNX file of ``model`` traced at ``input_size`` takes other sizes too."""
    return min_input_size(model, input_size) is not None


def trace_size(model: nn.Module, input_size: Sequence[int]) -> tuple[int, int]:
    """The size to trace a dynamic export at: ``input_size`` or larger, so that every feature map
    (down to SSDLite's stride 512) and the paper pool's output have >= 2 cells (``torch.export``
    specialises dimensions of size 1, which would fix the size)."""
    low = (576, 576)
    paper = _paper_pool(model)
    if paper is not None:
        pool, stride = paper
        low = tuple((k + s) * stride for k, s in zip(pool.kernel_size, pool.stride))
    return max(int(input_size[0]), low[0]), max(int(input_size[1]), low[1])


def second_size(size: Sequence[int], min_size: Sequence[int] = (32, 32)) -> tuple[int, int]:
    """Another input size to check a dynamic file at: 3/4 of the height, 5/4 of the width (at
    least ``min_size``)."""
    return (
        max(int(min_size[0]), int(size[0]) * 3 // 4 // 16 * 16),
        max(int(min_size[1]), int(size[1]) * 5 // 4 // 16 * 16),
    )


def size_metadata(input_size: Sequence[int], min_size: Sequence[int] | None) -> dict[str, Any]:
    """What an ONNX file records about the sizes it takes (read by ``ExportedModel``)."""
    if min_size is None:
        return {"input_size": tuple(int(s) for s in input_size)}
    return {"input_size": "dynamic", "min_input_size": tuple(int(s) for s in min_size)}


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
            what = f"detections vs PyTorch's (boxes within {BOX_TOLERANCE:g} px, scores within {SCORE_TOLERANCE:g}, same labels: "
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
                f"{what} needs the {name!r} package, which is not installed: pip install densemnv3[export]"
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
    if static:
        example = torch.randn(1, 3, *input_size, generator=torch.Generator().manual_seed(0))
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["images"],
            output_names=list(output_names),
            opset_version=opset,
            dynamo=True,
            external_data=False,
        )
        return
    batch = torch.export.Dim("batch")
    axes: dict[int, Any] = {0: batch}
    size = tuple(input_size)
    if min_size is not None:
        axes.update(
            {
                2: torch.export.Dim("height", min=int(min_size[0]), max=16384),
                3: torch.export.Dim("width", min=int(min_size[1]), max=16384),
            }
        )
        model = (
            net.model if isinstance(net, (LRASPPExport, SSDLiteExport, MultiTaskExport)) else net
        )
        size = trace_size(model, size)
    # batch 2: torch.export specialises dimensions of size 1, which would fix the batch
    example = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(
        net,
        (example,),
        str(path),
        input_names=["images"],
        output_names=list(output_names),
        dynamic_shapes=(axes,),
        opset_version=opset,
        dynamo=True,
        external_data=False,
    )


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a writable file name (its folder is created); a :class:`UserError` otherwise."""
    path = Path(path)
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{path}: {blocker} is a file, not a folder; choose another --out")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"{path}: cannot create its folder ({err.strerror}); choose another --out"
        ) from None
    if path.is_dir():
        raise UserError(
            f"{path}: is a folder; --out must be a file name, e.g. {path / 'model.onnx'}"
        )
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{path.parent}: folder is not writable; choose another --out")
    return path


#: File name suffixes of each format; the first is added to an ``--out`` name without one.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "onnx": (".onnx",),
    "torchscript": (".pt", ".pth", ".ts", ".torchscript", ".ptl"),
    "executorch": (".pte",),
}
#: What each format's file is called in messages.
_FORMAT_NAMES = {"onnx": "an ONNX", "torchscript": "a TorchScript", "executorch": "an ExecuTorch"}
#: Suffixes that name a model format: an ``--out`` ending in another format's is an error.
_MODEL_SUFFIXES = {
    *SUFFIXES["onnx"],
    *SUFFIXES["torchscript"],
    *SUFFIXES["executorch"],
    ".ckpt",
    ".bin",
    ".safetensors",
    ".tflite",
    ".engine",
    ".pb",
    ".xml",
}


def output_file(path: str | os.PathLike, fmt: str) -> Path:
    """The file ``--out path`` names for a ``fmt`` model, checked by :func:`check_output_path`:
    ``path`` when it ends in one of the format's :data:`SUFFIXES`; ``path`` with the format's
    suffix added when it ends in none or in one that names no model format (``model_int8`` ->
    ``model_int8.onnx``); a :class:`UserError` when its suffix is another format's (``m.pt``)."""
    path = Path(path)
    suffix, own = path.suffix.lower(), SUFFIXES[fmt]
    if path.is_dir():
        return check_output_path(path)  # raises: a folder
    if suffix in _MODEL_SUFFIXES and suffix not in own:
        raise UserError(
            f"{path}: {_FORMAT_NAMES[fmt]} file's name ends in {' or '.join(own)}, not {path.suffix}; "
            f"choose --out {path.with_suffix(own[0])}"
        )
    if suffix not in own:
        path = path.with_name(path.name + own[0])
    return check_output_path(path)
