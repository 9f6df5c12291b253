"""Export a trained model to ONNX or TorchScript, checked against PyTorch on random input.

What is exported (input ``images``: a normalised ``(N, 3, H, W)`` float batch, N dynamic):

- LR-ASPP: ``logits`` ``(N, num_classes, H, W)``.
- SSDLite: the network without NMS (:class:`SSDLiteExport`): ``boxes`` ``(N, A, 4)`` decoded xyxy
  in input pixels, clipped to the image, and ``scores`` ``(N, A, num_classes)`` softmax (column 0
  is the background). NMS runs outside the exported graph; see :class:`SSDLiteExport`.
- Multi-task (LR-ASPP + SSDLite, :class:`MultiTaskExport`): ``logits``, ``boxes`` and ``scores``
  as above, from one backbone pass.

``H`` and ``W`` are fixed at export time (SSDLite's default boxes and the LR-ASPP paper pool
depend on them): export at the size you will run.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densemnv3.errors import ExportCheckError, UserError
from densemnv3.models import LRASPPSSDLite, SSDLite
from densemnv3.models.resize import resize_bilinear

from .optimize import prepare_for_inference

__all__ = [
    "ExportCheckError",
    "ExportReport",
    "MultiTaskExport",
    "SSDLiteExport",
    "check_exported",
    "check_output_path",
    "export_model",
    "exportable",
    "require_onnx",
]

Format = Literal["onnx", "torchscript"]

#: Largest max-abs difference between the exported file and PyTorch that passes the check.
TOLERANCE = 1e-3
ONNX_INSTALL_HINT = "pip install densemnv3[export]"


class SSDLiteExport(nn.Module):
    """An :class:`~densemnv3.models.SSDLite` network without NMS, for export.

    ``forward(images)`` returns ``(boxes, scores)``: every default box decoded (xyxy input pixels,
    clipped to the image) and the softmax over classes, exactly what ``SSDLite.postprocess``
    starts from. A deployment then does, per image, what ``SSDLite.postprocess`` does: drop the
    background column, keep the ``topk_candidates`` (300) best scores above ``score_thresh``
    (0.001) per class, ``torchvision.ops.batched_nms(boxes, scores, labels, nms_thresh=0.55)``
    and keep the ``detections_per_img`` (300) best.

    The default boxes come from ``SSDLite.predict_raw`` (computed once per input size, so a
    constant of the exported graph).
    """

    def __init__(self, model: SSDLite) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return boxes_and_scores(self.model, *self.model.predict_raw(images), images.shape[-2:])


class MultiTaskExport(nn.Module):
    """A multi-task model for export: ``(logits, boxes, scores)`` of one backbone pass — the
    logits at the input size, the detector's outputs as :class:`SSDLiteExport`'s."""

    def __init__(self, model: LRASPPSSDLite) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, *raw = self.model.network(images)
        size = images.shape[-2:]
        return (resize_bilinear(logits, size), *boxes_and_scores(self.model.det, *raw, size))


def boxes_and_scores(model: SSDLite, cls_logits: Tensor, bbox_regression: Tensor, anchors: Tensor,
                     image_size) -> tuple[Tensor, Tensor]:
    """Every default box decoded (xyxy, clipped to the ``image_size`` input) and the softmax
    over classes: what ``SSDLite.postprocess`` starts from."""
    boxes = model.box_coder.decode(bbox_regression, anchors)
    height, width = image_size
    limits = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    boxes = torch.minimum(boxes.clamp(min=0), limits)
    return boxes, F.softmax(cls_logits, dim=-1)


def exportable(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The module to export for ``model`` and its output names (``SSDLite`` → :class:`SSDLiteExport`,
    the multi-task model → :class:`MultiTaskExport`)."""
    if isinstance(model, LRASPPSSDLite):
        return MultiTaskExport(model), ["logits", "boxes", "scores"]
    if isinstance(model, SSDLite):
        return SSDLiteExport(model), ["boxes", "scores"]
    return model, ["logits"]


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and how far the file is from PyTorch, per batch size."""

    path: Path
    size_bytes: int
    opset: int | None = None
    max_abs_diff: dict[int, float] = field(default_factory=dict)
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return all(d <= self.tolerance for d in self.max_abs_diff.values())

    def summary(self) -> str:
        diffs = ", ".join(f"batch {b}: {d:.2e}" for b, d in self.max_abs_diff.items())
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
) -> ExportReport:
    """Export ``model`` (an LR-ASPP, SSDLite or multi-task model in PyTorch) to ``path`` and check
    the file.

    Runs on CPU (``model`` is moved there). A copy is put in eval mode with BatchNorm folded
    (``fuse_bn``) and exported; the check runs
    the written file (onnxruntime / ``torch.jit.load``) on random input at each of
    ``check_batches`` and compares with the *unfolded* model, so it covers folding and export.
    Raises :class:`ExportCheckError` if a difference exceeds ``tolerance``, :class:`UserError`
    if ``path`` cannot be written or the ONNX packages are missing.
    """
    if fmt == "onnx":
        require_onnx()
    elif fmt != "torchscript":
        raise UserError(f"unknown export format {fmt!r}; use onnx or torchscript")
    path = check_output_path(path)
    reference = model.eval().cpu()
    module = prepare_for_inference(copy.deepcopy(model), fuse_bn=fuse_bn)
    net, output_names = exportable(module)
    ref_net, _ = exportable(reference)
    # Export at batch 2: torch.export specialises dimensions of size 1, which would fix the batch.
    example = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
    with _atomic_path(path) as tmp, _quiet():
        if fmt == "onnx":
            _export_onnx(net, example, tmp, output_names, opset)
        else:
            # Frozen: weights become constants; unfrozen, the traced SSDLite runs ~50x slower
            # under the default TorchScript executor (torch 2.14).
            traced = torch.jit.trace(net, example, check_trace=False)
            torch.jit.save(torch.jit.freeze(traced.eval()), str(tmp))
    report = ExportReport(path, path.stat().st_size, tolerance=tolerance)
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        report.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    report.max_abs_diff = check_exported(path, fmt, ref_net, input_size, check_batches)
    if not report.ok:
        raise ExportCheckError(f"{path}: exported model disagrees with PyTorch: {report.summary()}")
    return report


def check_exported(
    path: str | os.PathLike,
    fmt: Format,
    reference: nn.Module,
    input_size: Sequence[int],
    batches: Sequence[int] = (1, 3),
) -> dict[int, float]:
    """Max abs difference of every output of the file at ``path`` vs ``reference``, per batch size."""
    run = _onnx_runner(path) if fmt == "onnx" else _torchscript_runner(path)
    generator = torch.Generator().manual_seed(1)
    diffs = {}
    for batch in batches:
        images = torch.randn(batch, 3, *input_size, generator=generator)
        with torch.no_grad():
            expected = reference(images)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = run(images)
        if len(got) != len(expected):
            raise ExportCheckError(f"{path}: {len(got)} outputs, expected {len(expected)}")
        diff = 0.0
        for g, e in zip(got, expected):
            if tuple(g.shape) != tuple(e.shape):
                raise ExportCheckError(
                    f"{path}: at batch {batch} an output has shape {tuple(g.shape)}, expected "
                    f"{tuple(e.shape)} (is the batch axis dynamic?)"
                )
            diff = max(diff, float((g.float() - e.float()).abs().max()))
        diffs[batch] = diff
    return diffs


# --------------------------------------------------------------------------- helpers


def require_onnx() -> None:
    """A :class:`UserError` naming the install command if an ONNX package is missing."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise UserError(
                f"ONNX export needs the {name!r} package, which is not installed: {ONNX_INSTALL_HINT}"
            ) from None


def _export_onnx(net: nn.Module, example: Tensor, path: Path, output_names: list[str], opset: int | None) -> None:
    """``torch.onnx.export`` (torch.export-based; the older TorchScript-based exporter mis-traces
    SSDLite's in-place flattening at some sizes) with a dynamic batch axis, weights in the file."""
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        net, (example,), str(path), input_names=["images"], output_names=output_names,
        dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, external_data=False,
    )


def _onnx_runner(path: str | os.PathLike):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images: Tensor) -> tuple[Tensor, ...]:
        return tuple(torch.from_numpy(o) for o in session.run(None, {name: images.numpy()}))

    return run


def _torchscript_runner(path: str | os.PathLike):
    with _quiet():
        module = torch.jit.load(str(path), map_location="cpu")

    def run(images: Tensor) -> tuple[Tensor, ...]:
        # The graph as saved, without the executor's per-shape profiling and re-optimisation
        # (seconds per new batch size on CPU); the numbers are the same.
        with torch.no_grad(), torch.jit.optimized_execution(False):
            out = module(images)
        return out if isinstance(out, tuple) else (out,)

    return run


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a writable file name (its folder is created); a :class:`UserError` otherwise."""
    path = Path(path)
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{path}: {blocker} is a file, not a folder; choose another --out")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{path}: cannot create its folder ({err.strerror}); choose another --out") from None
    if path.is_dir():
        raise UserError(f"{path}: is a folder; --out must be a file name, e.g. {path / 'model.onnx'}")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{path.parent}: folder is not writable; choose another --out")
    return path


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temp file next to ``path`` that replaces it when the block succeeds."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise UserError(f"{path}: cannot write ({err.strerror}); choose another --out") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the tracer's and exporters' warnings and progress lines (the check is the judge)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")) as devnull:
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            devnull.close()
