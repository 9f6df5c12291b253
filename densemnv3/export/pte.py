"""Export an LR-ASPP, SSDLite or multi-task model to an ExecuTorch ``.pte`` lowered to XNNPACK,
fp32 or int8, and check the file against PyTorch in ExecuTorch's own runtime.

The program takes one static ``(1, 3, H, W)`` input (phones run one frame at a time, and XNNPACK
plans its buffers for it) and outputs what the raw ONNX files do: LR-ASPP ``logits`` at stride 8
(at the input size with ``full_size_logits``), SSDLite ``cls_logits``, ``bbox_regression`` and
``anchors`` (decoded by :class:`~densemnv3.runtimes.ExportedDetector`), the multi-task model all
four. Its metadata is a constant method (:mod:`densemnv3.checkpoint.pte`), so the tools run it
with ``--weights model.pte``.

int8 follows ExecuTorch's XNNPACK route (torchao's PT2E ``prepare_pt2e`` with XNNPACK's quantizer:
weights per output channel, activations per tensor with histogram-observed ranges, then
``convert_pt2e``). Everything the quantizer annotates is int8, the classifiers included: keeping
them in float, as the int8 ONNX file does, made no measurable difference. The export runs under
``torch.no_grad()``: with gradients on, the LR-ASPP's final resize takes its training path
(:mod:`densemnv3.models.resize`), which ``prepare_pt2e`` cannot annotate.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densemnv3.errors import ExportCheckError, UserError
from densemnv3.inference.optimize import prepare_for_inference
from densemnv3.models import LRASPP, LRASPPSSDLite, SSDLite
from densemnv3.utils.files import atomic_write

from .check import quiet
from .graphs import exportable
from .paths import check_output_path
from .quantize import PIXEL_AGREEMENT, REL_RMS_TOLERANCE, agreement
from .sizes import size_metadata

__all__ = [
    "FP32_TOLERANCE",
    "ExecuTorchReport",
    "export_executorch",
    "lower_to_xnnpack",
    "require_executorch",
]

#: Largest max abs difference of an fp32 ``.pte``'s outputs from PyTorch's, relative to the output's
#: largest magnitude (at least 1), that passes the check. XNNPACK sums convolutions in another
#: order and approximates sigmoid and hard-swish in its own way, which stays well under this on
#: image-like inputs; a wrong export (a resize, a folded BatchNorm) is off by far more.
FP32_TOLERANCE = 1e-3
#: Random inputs the fp32 file is compared on (real images, when given, are added). They are
#: image-like: normal noise at 1/8 of the size, upsampled. On white noise an untrained network's
#: logits grow large through sums that cancel, and fp32 rounding alone (in any runtime) reaches
#: the tolerance, which says nothing about the export.
CHECK_RANDOM = 2


def require_executorch(what: str = "--format executorch") -> None:
    """A :class:`UserError` naming the install command when ExecuTorch is missing."""
    try:
        importlib.import_module("executorch")
    except ImportError:
        raise UserError(
            f"{what} needs the 'executorch' package, which is not installed: "
            f"pip install densemnv3[executorch]"
        ) from None


@dataclass
class ExecuTorchReport:
    """What :func:`export_executorch` wrote and how close the file is to PyTorch: fp32, the max abs
    difference per check input (relative, see :data:`FP32_TOLERANCE`); int8,
    :func:`~densemnv3.export.quantize.agreement`'s figures."""

    path: Path
    size_bytes: int
    precision: str
    outputs: str
    input_size: tuple[int, int]
    calibration_images: int = 0
    check: dict[str, float] = field(default_factory=dict)
    tolerance: float = FP32_TOLERANCE

    @property
    def ok(self) -> bool:
        if self.precision == "fp32":
            return all(d <= self.tolerance for d in self.check.values())
        return self.check.get("pixel_agreement", 1.0) >= PIXEL_AGREEMENT and all(
            v <= REL_RMS_TOLERANCE for k, v in self.check.items() if k.startswith("rel_rms")
        )

    def summary(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        if self.precision == "fp32":
            diffs = ", ".join(f"{k}: {d:.2e}" for k, d in self.check.items())
            return (
                f"max abs diff vs PyTorch over the largest |output| (at least 1) ({diffs}) "
                f"-> {verdict} "
                f"(tolerance {self.tolerance:g})"
            )
        figures = ", ".join(f"{k} {v:.4f}" for k, v in self.check.items())
        bars = f"pixel agreement >= {PIXEL_AGREEMENT:g}, rel RMS <= {REL_RMS_TOLERANCE:g}"
        return f"int8 vs fp32 PyTorch: {figures} -> {verdict} ({bars})"


def export_executorch(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: Sequence[int],
    metadata: Mapping[str, Any],
    int8: bool = False,
    calibration: Iterable[Tensor] | None = None,
    num_images: int = 0,
    check_images: Sequence[Tensor] = (),
    fuse_bn: bool = True,
    full_size_logits: bool = False,
    tolerance: float = FP32_TOLERANCE,
    progress: bool = False,
) -> ExecuTorchReport:
    """Write ``model`` (an LR-ASPP, SSDLite or multi-task model in PyTorch) to ``path`` as an
    XNNPACK ``.pte`` taking ``(1, 3, *input_size)`` and check it.

    ``metadata`` (``config``, ``task``, ``arch``) is recorded with ``outputs``, ``precision`` and
    ``input_size``. ``full_size_logits``: an LR-ASPP's logits upsampled in the program (as
    :func:`~.onnx_export.export_model`'s). ``int8``: calibrated on ``num_images`` normalised
    images from ``calibration`` (``(3, H, W)`` or ``(1, 3, H, W)``, resized to ``input_size``
    where they differ), in order.

    The check runs the written file in ExecuTorch: fp32 on :data:`CHECK_RANDOM` random image-like
    inputs and ``check_images`` against the *unfolded* model, every output within ``tolerance`` of
    its largest magnitude (:data:`FP32_TOLERANCE`); int8 on ``check_images`` (none given: the first
    two calibration images) by :func:`~densemnv3.export.quantize.agreement`. Outside raises
    :class:`ExportCheckError` (the file is kept, for inspection); another model or a missing
    ExecuTorch :class:`UserError`.
    """
    if not isinstance(model, (LRASPP, SSDLite, LRASPPSSDLite)):
        raise UserError(
            f"--format executorch exports LR-ASPP, SSDLite and multi-task models, not "
            f"{type(model).__name__}"
        )
    if int8 and (calibration is None or num_images < 1):
        raise UserError(
            f"--int8 calibrates on training images: --calib-images must be at least 1, "
            f"got {num_images}"
        )
    require_executorch("--format executorch" + (" --int8" if int8 else ""))
    from densemnv3.checkpoint.pte import pte_metadata_method

    size = (int(input_size[0]), int(input_size[1]))
    path = check_output_path(path)
    reference = model.eval().cpu()
    net, form = exportable(
        prepare_for_inference(copy.deepcopy(reference), fuse_bn=fuse_bn),
        outputs="raw",
        full_size_logits=full_size_logits,
    )
    images = None
    if int8:
        images = [_at_size(image, size) for _, image in zip(range(num_images), calibration)]
        if not images:
            raise UserError("--int8: no calibration images (the training split is empty)")
        num_images = len(images)
    values = {
        **metadata,
        "outputs": form,
        "precision": "int8" if int8 else "fp32",
        **size_metadata(size, None),
        **({"calibration_images": num_images} if int8 else {}),
    }
    program = lower_to_xnnpack(
        net,
        size,
        calibration=images,
        progress=progress,
        constant_methods=pte_metadata_method(values),
    )
    with atomic_write(path) as tmp:
        tmp.write_bytes(program.buffer)
    report = ExecuTorchReport(
        path,
        path.stat().st_size,
        values["precision"],
        form,
        size,
        calibration_images=num_images if int8 else 0,
        tolerance=tolerance,
    )
    checks = [_at_size(image, size) for image in check_images] or (images[:2] if int8 else [])
    report.check = (
        _int8_check(path, values, reference, checks)
        if int8
        else _fp32_check(
            path,
            exportable(reference, outputs="raw", full_size_logits=full_size_logits)[0],
            size,
            checks,
        )
    )
    if not report.ok:
        raise ExportCheckError(
            f"{path}: the ExecuTorch program disagrees with PyTorch: {report.summary()}"
        )
    return report


def lower_to_xnnpack(
    net: nn.Module,
    input_size: Sequence[int],
    *,
    calibration: Sequence[Tensor] | None = None,
    progress: bool = False,
    constant_methods: Mapping[str, Any] | None = None,
) -> Any:
    """``net`` exported at ``(1, 3, *input_size)`` (quantized to int8 on the ``calibration``
    images when given) and lowered to XNNPACK: the ``ExecutorchProgramManager`` (``.buffer`` is
    the ``.pte``)."""
    from densemnv3.checkpoint.pte import quiet_imports

    with quiet_imports():
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

    example = (torch.randn(1, 3, *input_size, generator=torch.Generator().manual_seed(0)),)
    net = net.eval().requires_grad_(False)
    with torch.no_grad(), quiet():
        exported = torch.export.export(net, example)
        if calibration is not None:
            exported = torch.export.export(
                _quantize(exported.module(), calibration, progress), example
            )
        edge = to_edge_transform_and_lower(
            exported,
            partitioner=[XnnpackPartitioner()],
            constant_methods=dict(constant_methods or {}),
        )
        return edge.to_executorch()


def _quantize(module: nn.Module, images: Sequence[Tensor], progress: bool) -> nn.Module:
    """PT2E static int8 of an exported ``module`` for XNNPACK: per-channel symmetric weights,
    per-tensor activations observed on ``images``."""
    from tqdm import tqdm

    from densemnv3.checkpoint.pte import quiet_imports

    with quiet_imports():
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True)
    )
    prepared = prepare_pt2e(module, quantizer)
    for image in tqdm(
        images,
        desc="calibration",
        unit="img",
        disable=None if progress else True,
        dynamic_ncols=True,
        leave=False,
    ):
        prepared(image)
    return convert_pt2e(prepared)


def _at_size(image: Tensor, size: tuple[int, int]) -> Tensor:
    """``image`` as a ``(1, 3, *size)`` float batch (bilinear where its size differs)."""
    image = (image if image.dim() == 4 else image[None]).to("cpu", torch.float32)
    if tuple(image.shape[-2:]) != size:
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    return image.contiguous()


@torch.no_grad()
def _fp32_check(
    path: Path, reference: nn.Module, size: tuple[int, int], images: Sequence[Tensor]
) -> dict[str, float]:
    """Per input, the max abs difference of the file's outputs from ``reference``'s, each relative
    to its output's largest magnitude (at least 1: logits near 0 are compared absolutely)."""
    generator = torch.Generator().manual_seed(1)
    low = (-(-size[0] // 8), -(-size[1] // 8))
    inputs = [
        (
            f"random #{i + 1}",
            F.interpolate(
                torch.randn(1, 3, *low, generator=generator),
                size=size,
                mode="bilinear",
                align_corners=False,
            ),
        )
        for i in range(CHECK_RANDOM)
    ]
    inputs += [(f"image #{i + 1}", image) for i, image in enumerate(images)]
    from densemnv3.runtimes.executorch_engine import ExecuTorchEngine

    engine = ExecuTorchEngine(path, torch.get_num_threads(), "fp32")
    diffs = {}
    for name, x in inputs:
        expected = reference(x)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = engine.run(x.numpy())
        if [tuple(g.shape) for g in got] != [tuple(e.shape) for e in expected]:
            raise ExportCheckError(
                f"{path}: outputs of shapes {[tuple(g.shape) for g in got]}, expected "
                f"{[tuple(e.shape) for e in expected]}"
            )
        diffs[name] = max(
            float((torch.from_numpy(g) - e).abs().max() / e.abs().max().clamp(min=1))
            for g, e in zip(got, expected)
        )
    return diffs


def _int8_check(
    path: Path, values: Mapping[str, Any], reference: nn.Module, images: Sequence[Tensor]
) -> dict[str, float]:
    """:func:`~densemnv3.export.quantize.agreement` of the int8 file, run as the tools run it."""
    from densemnv3.checkpoint.metadata import TASK_OF_OUTPUTS
    from densemnv3.runtimes.executorch_engine import ExecuTorchEngine
    from densemnv3.runtimes.model import exported_model

    quantized = exported_model(
        path, {"task": TASK_OF_OUTPUTS[values["outputs"]], **values}, reference, ExecuTorchEngine
    )
    return agreement(quantized, reference, images)
