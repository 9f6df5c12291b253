"""ONNX files written by densemnv3, run by onnxruntime behind the interface of the PyTorch model.

``tools/quantize.py`` (int8) and ``tools/export.py`` (fp32) record in the file's metadata the
config the model was trained with and what the graph outputs, so ``--weights model.onnx`` works
in the eval tools, the Predictor, ``demo_video.py`` and the benchmark as a checkpoint does:

- :class:`OnnxSegmenter`: ``model(images)`` returns logits ``(N, C, H, W)``, as :class:`LRASPP`.
- :class:`OnnxDetector`: ``model(images)`` returns one dict of ``boxes``/``scores``/``labels`` per
  image, as :class:`SSDLite` in eval mode. A graph with raw outputs (``cls_logits``,
  ``bbox_regression``, ``anchors``: the int8 files) is post-processed here in float32 by the
  same :func:`~densemnv3.models.heads.postprocess.ssd_postprocess` as the PyTorch model; a graph
  exported with its postprocess inside (``--postprocess``) returns its own detections.

The graph runs on the CPU (onnxruntime's CPU execution provider, with torch's thread count);
inputs on another device are copied to the CPU and the outputs back.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from densemnv3.errors import UserError

from .heads.postprocess import Detections, ssd_postprocess

__all__ = ["METADATA_PREFIX", "OnnxDetector", "OnnxModel", "OnnxSegmenter", "ONNX_INSTALL_HINT",
           "onnx_model", "read_metadata", "write_metadata"]

METADATA_PREFIX = "densemnv3."
ONNX_INSTALL_HINT = "pip install densemnv3[export]"
#: What a graph outputs, by the ``outputs`` metadata value.
OUTPUT_NAMES = {
    "logits": ("logits",),
    "decoded": ("boxes", "scores"),
    "raw": ("cls_logits", "bbox_regression", "anchors"),
    "detections": ("num_detections", "boxes", "scores", "labels"),
    "multitask": ("logits", "boxes", "scores"),
}


def write_metadata(proto: Any, values: Mapping[str, Any]) -> None:
    """Record ``values`` in an ``onnx.ModelProto``'s ``metadata_props`` under ``densemnv3.*``.
    Strings are stored as they are, anything else as its ``repr`` (read back with
    :func:`ast.literal_eval`: dicts, lists, tuples, numbers keep their types, nothing runs)."""
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key = METADATA_PREFIX + key
        entry.value = value if isinstance(value, str) else repr(value)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``densemnv3.*`` metadata of the ONNX file at ``path`` (empty for another file).
    Raises :class:`OSError`/:class:`ValueError`-like errors of ``onnx`` for unreadable files."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    values: dict[str, Any] = {}
    for entry in proto.metadata_props:
        if entry.key.startswith(METADATA_PREFIX):
            key = entry.key[len(METADATA_PREFIX):]
            try:
                values[key] = ast.literal_eval(entry.value)
            except (ValueError, SyntaxError):
                values[key] = entry.value
    return values


def require_onnxruntime(what: str = "running an ONNX model") -> None:
    """A :class:`UserError` naming the install command when onnxruntime is missing."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError(f"{what} needs the 'onnxruntime' package, which is not installed: "
                        f"{ONNX_INSTALL_HINT}") from None


class OnnxModel(nn.Module):
    """An ONNX file of ``task`` run by onnxruntime; ``precision`` is ``"int8"`` or ``"fp32"``.

    The session is created at the first call, with ``torch.get_num_threads()`` intra-op threads
    (so ``torch.set_num_threads`` and the tools' ``--threads`` apply to it too).
    """

    runtime = "onnxruntime"

    def __init__(self, path: str | os.PathLike, metadata: Mapping[str, Any]) -> None:
        super().__init__()
        self.path = Path(path)
        self.outputs = str(metadata.get("outputs", ""))
        self.precision = str(metadata.get("precision", "fp32"))
        fixed, low = metadata.get("input_size"), metadata.get("min_input_size")
        self.fixed_size = tuple(fixed) if isinstance(fixed, (tuple, list)) else None
        self.min_size = tuple(low) if isinstance(low, (tuple, list)) else None
        self._session = None
        self._threads = 0
        self.threads: int | None = None  # onnxruntime's intra-op threads; None: torch's count

    def extra_repr(self) -> str:
        size = "x".join(map(str, self.fixed_size)) if self.fixed_size else "dynamic H, W"
        return f"{self.path.name}, {self.precision}, outputs={self.outputs}, {size}"

    def session(self):
        """The onnxruntime session (re-created if its thread count changed)."""
        threads = self.threads or torch.get_num_threads()
        if self._session is None or threads != self._threads:
            require_onnxruntime()
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            self._threads = threads
        return self._session

    def run(self, images: Tensor) -> tuple[Tensor, ...]:
        """The graph's outputs for a normalised ``(N, 3, H, W)`` batch, on ``images``' device."""
        if images.dim() != 4:
            raise ValueError(f"expected a (N, 3, H, W) batch, got shape {tuple(images.shape)}")
        if self.fixed_size and tuple(images.shape[-2:]) != self.fixed_size:
            h, w = self.fixed_size
            raise UserError(f"{self.path} takes {h}x{w} inputs only (it was exported at a fixed size), "
                            f"got {images.shape[-2]}x{images.shape[-1]}; resize to it "
                            f"(--set data.eval_resize=[{h},{w}])")
        if self.min_size and any(s < m for s, m in zip(images.shape[-2:], self.min_size)):
            h, w = self.min_size
            raise UserError(f"{self.path} takes inputs of at least {h}x{w} (pool='paper' has a fixed window "
                            f"from there up), got {images.shape[-2]}x{images.shape[-1]}; resize to a larger "
                            f"size (--set data.eval_resize=[H,W])")
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self.session().run(None, {"images": x})
        return tuple(torch.from_numpy(o).to(images.device) for o in outputs)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_session"] = None  # sessions do not pickle or deep-copy; made again on first use
        return state


class OnnxSegmenter(OnnxModel):
    """Segmentation logits ``(N, C, H, W)`` from an ONNX LR-ASPP."""

    def forward(self, images: Tensor) -> Tensor:
        return self.run(images)[0]


class OnnxDetector(OnnxModel):
    """Detections from an ONNX SSDLite; the postprocess settings are ``template``'s (the
    :class:`~densemnv3.models.SSDLite` its config builds), changeable as on the model itself."""

    def __init__(self, path: str | os.PathLike, metadata: Mapping[str, Any], template: nn.Module) -> None:
        super().__init__(path, metadata)
        if self.outputs not in ("raw", "detections"):
            raise UserError(f"{path}: an SSDLite ONNX file without NMS (outputs boxes and scores), which "
                            f"the tools cannot score; export with --postprocess, or use tools/quantize.py's file")
        self.box_coder = template.box_coder
        self.num_classes = template.num_classes
        for name in ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates", "nms_prefix",
                     "nms_impl"):
            setattr(self, name, getattr(template, name))

    def predict_raw(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(cls_logits, bbox_regression, anchors)`` as :meth:`SSDLite.predict_raw` (raw graphs)."""
        if self.outputs != "raw":
            raise UserError(f"{self.path}: has its postprocess inside; it gives detections only")
        return self.run(images)

    def forward(self, images: Tensor) -> Detections:
        if self.outputs == "detections":
            count, boxes, scores, labels = self.run(images)
            return [{"boxes": b[:n], "scores": s[:n], "labels": lab[:n]}
                    for n, b, s, lab in zip(count.tolist(), boxes, scores, labels)]
        cls_logits, bbox_regression, anchors = self.run(images)
        return ssd_postprocess(
            cls_logits, bbox_regression, anchors, images.shape[-2:], self.box_coder,
            score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
            detections_per_img=self.detections_per_img, topk_candidates=self.topk_candidates,
            nms_prefix=self.nms_prefix, impl=self.nms_impl,
        )


def onnx_model(path: str | os.PathLike, metadata: Mapping[str, Any], template: nn.Module) -> OnnxModel:
    """The wrapper of ``path`` for its task; ``template`` is the PyTorch model its config builds."""
    if metadata.get("task") == "detection":
        return OnnxDetector(path, metadata, template)
    return OnnxSegmenter(path, metadata)
