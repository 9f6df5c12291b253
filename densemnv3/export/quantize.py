"""Post-training static int8 quantization: an LR-ASPP, SSDLite or multi-task model as an ONNX QDQ
file for onnxruntime (chosen over torchao's PT2E flow by measurement: BENCHMARKS.md, int8).

The fp32 network is exported to ONNX with a dynamic height and width, rewritten where int8
kernels need it (:mod:`.int8_graph`), and quantized by onnxruntime's ``quantize_static`` in the
QDQ format: weights int8 per output channel in 7 bits (per-tensor weights collapse MobileNetV3;
8 bits overflow the 16-bit sums of CPUs without VNNI), activations uint8 per tensor, their ranges
the :data:`PERCENTILE` of their values over the calibration images (rare outliers left out).
The file runs in any ONNX runtime and, in onnxruntime, on int8 kernels. What stays in float:
the LR-ASPP's stride-8 logits (the tools take the labels of their upsampling); SSDLite's default
boxes and whole postprocess (the file outputs ``cls_logits``, ``bbox_regression`` and
``anchors``; :class:`~densemnv3.runtimes.ExportedDetector` runs the PyTorch model's
``ssd_postprocess`` on them); the squeeze-excitation gates' hard-sigmoid.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from densemnv3.checkpoint.state import non_finite
from densemnv3.errors import ExportCheckError, UserError
from densemnv3.inference.optimize import prepare_for_inference
from densemnv3.models import LRASPP, LRASPPSSDLite, SSDLite
from densemnv3.runtimes import (
    OUTPUT_NAMES,
    TASK_OF_OUTPUTS,
    engine_class,
    exported_model,
    read_metadata,
    write_metadata,
)
from densemnv3.utils.files import atomic_write

from .check import quiet
from .graphs import exportable
from .int8_graph import FORMS, float_nodes, fuse_activations, int8_friendly
from .onnx_export import export_onnx, require_onnx
from .paths import check_output_path
from .sizes import min_input_size, size_metadata

__all__ = [
    "QuantizeReport",
    "agreement",
    "calibration_order",
    "export_for_quantization",
    "quantize_model",
    "quantize_onnx",
]

#: The int8 file passes its check when, on the check images, its segmentation labels agree with
#: fp32's on at least this fraction of pixels, and its outputs' relative RMS error is at most
#: ``REL_RMS_TOLERANCE`` (||int8 - fp32|| / ||fp32||: logits; SSDLite: class logits and box deltas).
PIXEL_AGREEMENT, REL_RMS_TOLERANCE = 0.9, 0.35
#: Activation ranges: this percentile of the calibration values; images histogrammed at once.
PERCENTILE, CHUNK = 99.999, 8


@dataclass
class QuantizeReport:
    """What :func:`quantize_model` wrote and how close the int8 file is to the fp32 model."""

    path: Path
    size_bytes: int
    calibration_images: int
    min_size: (
        tuple[int, int] | None
    )  # the file takes every size from this up; None: input_size only
    check: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.check.get("pixel_agreement", 1.0) >= PIXEL_AGREEMENT and all(
            v <= REL_RMS_TOLERANCE for k, v in self.check.items() if k.startswith("rel_rms")
        )

    def summary(self) -> str:
        parts = [f"{k} {v:.4f}" for k, v in self.check.items()]
        bars = f"pixel agreement >= {PIXEL_AGREEMENT:g}, rel RMS <= {REL_RMS_TOLERANCE:g}"
        return (
            f"int8 vs fp32 PyTorch: {', '.join(parts)} -> {'OK' if self.ok else 'FAILED'} ({bars})"
        )


def quantize_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    calibration: Iterable[Tensor],
    num_images: int,
    input_size: Sequence[int],
    check_images: Sequence[Tensor] = (),
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    runtime: str = "onnxruntime",
) -> QuantizeReport:
    """Quantize ``model`` (an LR-ASPP, SSDLite or multi-task model in PyTorch, fp32) to an int8 ONNX
    file at ``path``.

    ``calibration`` yields ``num_images`` normalised images ``(3, H, W)`` or ``(1, 3, H, W)``
    (the data pipeline's eval transform: what the model will see), in a fixed order, so the file
    is the same for the same images; a progress bar counts them. ``input_size`` is the size the
    graph is traced at (other sizes run when the model exports with a dynamic size, see
    :func:`~densemnv3.export.sizes.min_input_size`). ``check_images`` (``(1, 3, H, W)``) are
    run through the int8 file and the fp32 model and compared (:func:`agreement`); outside the
    tolerance :class:`ExportCheckError` is raised after the file is written. ``metadata`` (config,
    task, arch) is recorded so the tools load the file with ``--weights``. ``runtime``: the
    runtime the graph is shaped for (:data:`~.int8_graph.FORMS`; any ONNX runtime runs either),
    recorded as ``int8_form``; the check runs the file there (onnxruntime where it is missing).
    """
    if runtime not in FORMS:
        raise UserError(f"int8 files are shaped for one of {', '.join(FORMS)}, not {runtime!r}")
    if num_images < 1:
        raise UserError(f"--calib-images must be at least 1, got {num_images}")
    path = check_output_path(path)
    reference = model.eval().cpu()
    bad = non_finite(reference.state_dict())
    if bad:  # calibration would measure ranges of NaN
        first, counts = next(iter(bad.items()))
        raise UserError(
            f"cannot quantize a model whose weights hold NaN or inf ({len(bad)} tensors, "
            f"first {first}: {counts}); use a checkpoint of a run that did not diverge"
        )
    with tempfile.TemporaryDirectory(prefix="densemnv3-quantize-") as tmp:
        prepared, int8 = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        form = export_for_quantization(reference, prepared, input_size, runtime=runtime)
        quantize_onnx(prepared, int8, calibration, num_images, progress=progress, runtime=runtime)
        import onnx

        proto = onnx.load(str(int8))
        min_size = min_input_size(reference, input_size)
        write_metadata(
            proto,
            {
                **(metadata or {}),
                "outputs": form,
                "precision": "int8",
                **size_metadata(input_size, min_size),
                "calibration_images": num_images,
                "int8_form": runtime,
            },
        )
        with atomic_write(path) as out:
            onnx.save(proto, str(out))
    report = QuantizeReport(path, path.stat().st_size, num_images, min_size)
    if check_images:
        engine = engine_class(runtime)
        quantized = exported_model(
            path,
            {"task": TASK_OF_OUTPUTS[form], **read_metadata(path)},
            reference,
            engine if engine.installed() else engine_class("onnxruntime"),
        )
        report.check = agreement(quantized, reference, check_images)
        if not report.ok:
            raise ExportCheckError(
                f"{path}: the int8 model is too far from fp32: {report.summary()}"
            )
    return report


def export_for_quantization(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: Sequence[int],
    *,
    static: bool = False,
    runtime: str = "onnxruntime",
) -> str:
    """Write ``model``'s fp32 graph to ``path`` as :func:`quantize_onnx` takes it (BatchNorm folded,
    SSDLite and the multi-task model with raw outputs, dynamic height and width where the model
    allows; for onnxruntime rewritten by :func:`int8_friendly`); return what it outputs
    (``"logits_raw"``, ``"raw"`` or ``"multitask_raw"``). ``static``: every dimension fixed,
    batch 1 (a file to time: :func:`~.onnx_export.export_onnx`)."""
    if not isinstance(model, (LRASPP, SSDLite, LRASPPSSDLite)):
        raise UserError(
            f"int8 quantization supports LR-ASPP, SSDLite and multi-task models, not "
            f"{type(model).__name__}"
        )
    require_onnx("int8 quantization")
    import onnx

    net, form = exportable(prepare_for_inference(copy.deepcopy(model).eval().cpu()), outputs="raw")
    with quiet():
        export_onnx(
            net,
            path,
            input_size,
            OUTPUT_NAMES[form],
            static=static,
            min_size=None if static else min_input_size(model, input_size),
        )
    if runtime == "onnxruntime":
        proto = onnx.load(str(path))
        int8_friendly(proto)
        onnx.save(proto, str(path))
    return form


def quantize_onnx(
    source: str | os.PathLike,
    target: str | os.PathLike,
    calibration: Iterable[Tensor],
    num_images: int,
    *,
    progress: bool = True,
    runtime: str = "onnxruntime",
) -> None:
    """Quantize the fp32 graph at ``source`` (from :func:`export_for_quantization`) to ``target``:
    QDQ, int8 weights per channel, uint8 activations with ranges from ``num_images`` images of
    ``calibration`` (the same images in the same order give the same file); the nodes of
    :func:`float_nodes` stay in float. ``runtime`` ``"openvino"``: each convolution's activation
    fused (:func:`~.int8_graph.fuse_activations`)."""
    import onnx

    keep_float = float_nodes(onnx.load(str(source), load_external_data=False))
    _quantize_static(
        Path(source), Path(target), _Reader(calibration, num_images, progress), keep_float
    )
    if runtime == "openvino":
        proto = onnx.load(str(target))
        fuse_activations(proto)
        onnx.save(proto, str(target))


class _Reader:
    """onnxruntime's ``CalibrationDataReader`` protocol over ``images``, with a progress bar."""

    def __init__(self, images: Iterable[Tensor], total: int, progress: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            desc="calibration",
            unit="img",
            disable=None if progress else True,
            dynamic_ncols=True,
            leave=False,
        )
        self._images = iter(images)
        self._total = self._left = total

    def __len__(self) -> int:
        return self._total

    def set_range(self, start_index: int, end_index: int) -> None:
        """The next chunk of images (chunks come in order: the images are read once)."""
        self._left = end_index - start_index

    def get_next(self) -> dict | None:
        image = next(self._images, None) if self._left > 0 else None
        if image is None:
            self._bar.close()
            return None
        self._left -= 1
        self._bar.update()
        image = image if image.dim() == 4 else image[None]
        return {"images": image.to("cpu", torch.float32).contiguous().numpy()}


def _quantize_static(source: Path, target: Path, reader: _Reader, keep_float: list[str]) -> None:
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    # The percentile calibrator keeps every intermediate tensor of the images it is given until
    # it histograms them: give it chunks of at most CHUNK images (ORT's option for chunks is
    # named after MinMax but drives any calibrator; the chunks must divide the image count).
    chunk = max(d for d in range(1, CHUNK + 1) if len(reader) % d == 0)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing": int8_friendly is this model's
    onnxruntime.set_default_logger_severity(3)
    try:
        with quiet():  # the calibrator prints its histogram settings
            quantize_static(
                str(source),
                str(target),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                # 7-bit weights: x86 CPUs without VNNI multiply u8 by s8 in pairs summed in 16
                # bits, which 8-bit weights overflow (0.82 pixel agreement with fp32 instead of
                # above 0.9 on an AVX2-only host); a file must be right on every CPU it meets
                reduce_range=True,
                calibrate_method=CalibrationMethod.Percentile,
                nodes_to_exclude=keep_float,
                extra_options={"CalibStridedMinMax": chunk, "CalibPercentile": PERCENTILE},
            )
    except ValueError as err:  # numpy.histogram, from the calibrator: a range it cannot bin
        if "bins" not in str(err):
            raise
        raise UserError(
            "int8 calibration found an activation whose values on the calibration "
            "images are all (almost) equal, which cannot be given an int8 range; "
            "quantize a trained checkpoint, or calibrate on more images "
            "(--calib-images)"
        ) from None
    finally:
        root.setLevel(level)
        onnxruntime.set_default_logger_severity(2)


def calibration_order(total: int, count: int, seed: int = 0) -> list[int]:
    """``count`` indices of ``range(total)`` in a seeded random order: the calibration images. The
    same count gives the same images; a larger count adds images to a smaller one's."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return order[:count].tolist()


@torch.no_grad()
def agreement(
    quantized: nn.Module, reference: nn.Module, images: Sequence[Tensor]
) -> dict[str, float]:
    """How close ``quantized`` (an int8 ``ExportedModel``) is to ``reference`` (the fp32 model) on
    ``images``: segmentation ``pixel_agreement`` (argmax) and ``rel_rms`` of the logits;
    detection ``rel_rms_cls`` and ``rel_rms_box`` (class logits, box deltas); the multi-task
    model all three (its logits at stride 8, as the graph outputs them)."""
    errors: dict[str, list[float]] = {}
    agree, pixels = 0, 0
    for image in images:
        image = image if image.dim() == 4 else image[None]
        if isinstance(reference, SSDLite):
            pairs = list(
                zip(
                    ("cls", "box"),
                    quantized.predict_raw(image)[:2],
                    reference.predict_raw(image)[:2],
                )
            )
        elif isinstance(reference, LRASPPSSDLite):
            pairs = list(
                zip(("", "cls", "box"), quantized.network(image)[:3], reference.network(image)[:3])
            )
        else:
            pairs = [("", quantized(image), reference(image))]
        if pairs[0][0] == "":
            got, expected = pairs[0][1:]
            agree += int((got.argmax(1) == expected.argmax(1)).sum())
            pixels += expected[:, 0].numel()
        for name, got, expected in pairs:
            num, den = float(((got - expected) ** 2).sum()), float((expected**2).sum())
            errors.setdefault(name, []).extend([num, den])
    check = {
        f"rel_rms{'_' + name if name else ''}": (sum(v[::2]) / max(sum(v[1::2]), 1e-30)) ** 0.5
        for name, v in errors.items()
    }
    if pixels:
        check = {"pixel_agreement": agree / pixels, **check}
    return check
