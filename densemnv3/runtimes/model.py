"""Exported files behind the interface of the PyTorch models, whichever engine runs them.

:class:`ExportedSegmenter` returns logits ``(N, C, H, W)`` as :class:`LRASPP` does (``network``:
the graph's own, at stride 8 for ``outputs: logits_raw``); :class:`ExportedDetector` one dict of
``boxes``/``scores``/``labels`` per image as :class:`SSDLite` in eval mode, post-processing a raw
graph (the int8 and ``.pte`` files) in float32 with the PyTorch model's
:func:`~densemnv3.models.heads.postprocess.ssd_postprocess`; :class:`ExportedMultiTask` a
:class:`MultiTaskOutput` from the raw tensors of one pass, with ``network`` and
``det.postprocess`` for the Predictor.

The engine (:mod:`.engines`) is made at the first call with ``threads`` intra-op threads (None:
torch's count, so ``torch.set_num_threads`` and the tools' ``--threads`` apply), and made again
when that changes. Inputs on another device are copied to the CPU and the outputs back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from densemnv3.checkpoint.metadata import OUTPUT_NAMES
from densemnv3.checkpoint.signature import output_mismatch
from densemnv3.errors import UserError
from densemnv3.models.detection import SSDLite
from densemnv3.models.heads.postprocess import Detections
from densemnv3.models.multitask import MultiTaskOutput
from densemnv3.models.resize import resize_bilinear

from .engines import Engine

#: graphs with their postprocess inside: run whole, never split over engines
NMS_OUTPUTS = ("detections",)

__all__ = [
    "ExportedDetector",
    "ExportedModel",
    "ExportedMultiTask",
    "ExportedSegmenter",
    "SSDPostprocess",
    "exported_model",
]


class ExportedModel(nn.Module):
    """An exported file of a task run by ``engine`` (an :class:`Engine` class).

    ``precision`` is the file's (``"fp32"`` or ``"int8"``); ``compute_precision`` what the engine
    computes in (OpenVINO: bf16 for an fp32 file where the CPU has it), given ``asked`` (the
    user's ``--precision``, None for the engine's default).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        metadata: Mapping[str, Any],
        engine: type[Engine],
        asked: str | None = None,
        template: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.engine_class = engine
        self.runtime = engine.name
        self.route = (
            f"--runtime {self.runtime}"  # how the engine was chosen (load_exported says more)
        )
        self.outputs = str(metadata.get("outputs", ""))
        self.precision = str(metadata.get("precision", "fp32"))
        self.asked = asked
        self.compute_precision = engine.compute_precision(self.precision, asked)
        fixed, low = metadata.get("input_size"), metadata.get("min_input_size")
        self.fixed_size = tuple(fixed) if isinstance(fixed, (tuple, list)) else None
        self.min_size = tuple(low) if isinstance(low, (tuple, list)) else None
        self.metadata = dict(metadata)  # what its outputs' shapes must be (run checks them)
        self._engines: dict[int, Engine] = {}  # by stream count, for one thread budget
        self._budget = 0
        self.threads: int | None = None  # the engines' intra-op threads; None: torch's count
        self.adopt(template)

    def adopt(self, template: nn.Module | None) -> None:
        """Take what the wrapper needs of ``template``, the PyTorch model the file's config
        builds (the postprocess settings of a detector), and check the file's outputs."""

    def extra_repr(self) -> str:
        size = "x".join(map(str, self.fixed_size)) if self.fixed_size else "dynamic H, W"
        return f"{self.path.name}, {self.precision}, {self.runtime}, outputs={self.outputs}, {size}"

    def engine(self, streams: int = 1) -> Engine:
        """The engine running the file: a batch whole (``streams=1``), or ``streams`` slices of
        it side by side sharing the thread budget. Made at first use, again when the budget
        changes; one whole and one split engine kept (compiled copies of a model cost memory)."""
        threads = self.threads or torch.get_num_threads()
        if threads != self._budget:
            self.release()  # free the old ones first
            self._budget = threads
        if streams not in self._engines:
            if streams > 1:
                self._engines = {n: e for n, e in self._engines.items() if n == 1}
            self._engines[streams] = self.engine_class(
                self.path, threads, self.precision, self.asked, streams
            )
        return self._engines[streams]

    def release(self) -> None:
        """Free the engines (made again at the next call)."""
        self._engines, self._budget = {}, 0

    def streams(self, batch: int) -> int:
        """Slices a batch of ``batch`` images is run in, side by side, each with its share of the
        threads: ``min(batch, threads)`` for an engine that splits and a file whose outputs are
        per image or shared (a network's tensors, not a graph's NMS), else 1: a depthwise network
        on a few cores runs slices side by side faster than the batch on all of them (BENCHMARKS.md,
        SSDLite batch 8)."""
        if (
            not self.engine_class.splits
            or self.outputs not in OUTPUT_NAMES
            or self.outputs in NMS_OUTPUTS
        ):
            return 1
        return max(1, min(batch, self.threads or torch.get_num_threads()))

    def describe(self) -> str:
        """The engine in a few words, e.g. ``openvino 2026.4.1, precision hint bf16 (...)``."""
        return self.engine().describe()

    def check_size(self, height: int, width: int) -> None:
        """A :class:`UserError` for an input size the file does not take."""
        if self.fixed_size and (height, width) != self.fixed_size:
            h, w = self.fixed_size
            raise UserError(
                f"{self.path} takes {h}x{w} inputs only (it was exported at a fixed size), "
                f"got {height}x{width}; resize to it (--set data.eval_resize=[{h},{w}])"
            )
        if self.min_size and (height < self.min_size[0] or width < self.min_size[1]):
            h, w = self.min_size
            raise UserError(
                f"{self.path} takes inputs of at least {h}x{w} (pool='paper' has a fixed window "
                f"from there up), got {height}x{width}; resize to a larger size "
                f"(--set data.eval_resize=[H,W])"
            )

    def resize_note(self, height: int, width: int) -> str | None:
        """The note a tool prints, once, when it resizes ``height`` x ``width`` frames to the
        size a fixed-size file takes (None: the file takes them as they are)."""
        if not self.fixed_size or (height, width) == self.fixed_size:
            return None
        h, w = self.fixed_size
        return (
            f"note: {self.path} takes {h}x{w} inputs only (exported at a fixed size): the "
            f"{height}x{width} frames are resized to it, its predictions scaled back to the "
            f"frame (export at the frames' size, tools/export.py --input-size {height} "
            f"{width}, to run them as they are)"
        )

    def run(self, images: Tensor) -> tuple[Tensor, ...]:
        """The graph's outputs for a normalised ``(N, 3, H, W)`` batch, on ``images``' device;
        a :class:`UserError` where their shapes are not those its metadata implies (a graph of
        another model that passed the check at open: a full-size output declared at stride 8)."""
        if images.dim() != 4:
            raise ValueError(f"expected a (N, 3, H, W) batch, got shape {tuple(images.shape)}")
        self.check_size(*images.shape[-2:])
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        count = self.streams(len(x))
        if count > 1:
            parts = self.engine(count).run_streams(np.array_split(x, count))
            shared = [name == "anchors" for name in OUTPUT_NAMES[self.outputs]]
            outputs = [o[0] if one else np.concatenate(o) for one, o in zip(shared, zip(*parts))]
        elif self.engine_class.batch is None or len(x) == self.engine_class.batch:
            outputs = self.engine().run(x)
        else:  # a file of a fixed batch (a .pte: 1): image by image, outputs joined on the batch
            # (an output without a batch axis, SSDLite's anchors (A, 4), is the same for each)
            engine = self.engine()
            parts = [engine.run(x[i : i + 1]) for i in range(len(x))]
            outputs = [np.concatenate(o) if o[0].shape[:1] == (1,) else o[0] for o in zip(*parts)]
        problem = output_mismatch(self.metadata, x.shape, [o.shape for o in outputs])
        if problem:
            raise UserError(
                f"{self.path}: its graph is not the model its densemnv3 metadata "
                f"describes: {problem}; export the checkpoint again with "
                f"tools/export.py"
            )
        return tuple(torch.from_numpy(o).to(images.device) for o in outputs)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # sessions and threads do not pickle or deep-copy; made again on first use
        state.update(_engines={}, _budget=0)
        return state


class ExportedSegmenter(ExportedModel):
    """Segmentation logits ``(N, C, H, W)`` from an exported LR-ASPP."""

    def adopt(self, template: nn.Module | None) -> None:
        self.num_classes = int(getattr(template, "num_classes", 0))

    def network(self, images: Tensor) -> Tensor:
        """The graph's logits: at stride 8 (``outputs: logits_raw``, as :meth:`LRASPP.network`)
        or at the input size (``logits``: a file exported with ``--full-size-logits``)."""
        return self.run(images)[0]

    def forward(self, images: Tensor) -> Tensor:
        logits = self.network(images)
        size = images.shape[-2:]
        return logits if logits.shape[-2:] == size else resize_bilinear(logits, size)


class _SSDSettings:
    """SSDLite's postprocess (the model's own method) with the settings of a template
    :class:`~densemnv3.models.SSDLite`, changeable as on the model itself (``score_thresh``,
    ``nms_thresh``, ...)."""

    postprocess = SSDLite.postprocess

    def _take_settings(self, template: nn.Module) -> None:
        self.box_coder = template.box_coder
        self.num_classes = template.num_classes
        for name in SSDLite.postprocess_settings:
            setattr(self, name, getattr(template, name))


class SSDPostprocess(_SSDSettings, nn.Module):
    """The detection part of an exported multi-task model: its postprocess alone (no weights)."""

    def __init__(self, template: nn.Module) -> None:
        nn.Module.__init__(self)
        self._take_settings(template)


class ExportedDetector(_SSDSettings, ExportedModel):
    """Detections from an exported SSDLite; the postprocess settings are ``template``'s (the
    :class:`~densemnv3.models.SSDLite` its config builds), changeable as on the model itself."""

    def adopt(self, template: nn.Module | None) -> None:
        if self.outputs not in ("raw", "detections"):
            raise UserError(
                f"{self.path}: an SSDLite file without NMS (outputs boxes and scores), which "
                f"the tools cannot score; export with --postprocess, "
                f"or use tools/quantize.py's file"
            )
        self._take_settings(template)

    def predict_raw(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(cls_logits, bbox_regression, anchors)`` as :meth:`SSDLite.predict_raw` (raw
        graphs)."""
        if self.outputs != "raw":
            raise UserError(f"{self.path}: has its postprocess inside; it gives detections only")
        return self.run(images)

    def forward(self, images: Tensor) -> Detections:
        if self.outputs == "detections":
            count, boxes, scores, labels = self.run(images)
            return [
                {"boxes": b[:n], "scores": s[:n], "labels": lab[:n]}
                for n, b, s, lab in zip(count.tolist(), boxes, scores, labels)
            ]
        return self.postprocess(*self.run(images), images.shape[-2:])


class ExportedMultiTask(ExportedModel):
    """Segmentation logits and detections of one pass of an exported multi-task model; ``det``
    post-processes with ``template.det``'s settings (``template``: the
    :class:`~densemnv3.models.LRASPPSSDLite` its config builds)."""

    def adopt(self, template: nn.Module | None) -> None:
        if self.outputs != "multitask_raw":
            raise UserError(
                f"{self.path}: a multi-task file of decoded boxes and scores without NMS, which "
                f"the tools do not run; use tools/quantize.py's file or a .pte (--format "
                f"executorch), or give the tools the checkpoint it was exported from"
            )
        self.det = SSDPostprocess(template.det)
        self.num_classes = template.num_classes
        self.det_num_classes = template.det_num_classes

    def network(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(logits at stride 8, cls_logits, bbox_regression, anchors)``, as
        :meth:`LRASPPSSDLite.network`."""
        return self.run(images)

    def forward(self, images: Tensor) -> MultiTaskOutput:
        logits, *raw = self.run(images)
        size = images.shape[-2:]
        return MultiTaskOutput(resize_bilinear(logits, size), self.det.postprocess(*raw, size))


def exported_model(
    path: str | os.PathLike,
    metadata: Mapping[str, Any],
    template: nn.Module,
    engine: type[Engine],
    asked: str | None = None,
) -> ExportedModel:
    """The wrapper of ``path`` for its task, run by ``engine``; ``template`` is the PyTorch model
    its config builds."""
    wrapper = {"detection": ExportedDetector, "multitask": ExportedMultiTask}.get(
        str(metadata.get("task")), ExportedSegmenter
    )
    return wrapper(path, metadata, engine, asked, template)
