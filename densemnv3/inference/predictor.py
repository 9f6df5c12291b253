"""One call from OpenCV frames to predictions at frame resolution.

:class:`Predictor` wraps a segmentation (LR-ASPP), detection (SSDLite) or multi-task (both on
one backbone pass) model with the pre-processing its config trained it with. Frames go to the
device as uint8 (a quarter of the bytes of float32); the BGR→RGB swap, the resize and the
normalization run there, batched over the frames of equal size. Precision, memory format,
compile and CUDA graphs default to what runs fastest on the device
(:mod:`densemnv3.inference.settings`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densemnv3.config import TASKS, Config, EvalConfig, load_config
from densemnv3.data.labels import THING_NAMES, detection_class_names
from densemnv3.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    detector_input_size,
    normalize_table,
)
from densemnv3.errors import UserError
from densemnv3.utils.device import torch_threads

from .eval_modes import is_plain, passes, seg_scores
from .frames import as_frame_list, normalized_cpu
from .networks import MultiTaskNetwork, SegmentationLogits, thresholded
from .optimize import accelerated, prepare_for_inference
from .results import boxes_in_frame, frame_labels, frame_probabilities
from .settings import PRECISIONS, InferenceSettings, resolve_inference

__all__ = ["PRECISIONS", "Predictor"]

_DET_MEAN = (0.5, 0.5, 0.5)
_DET_STD = (0.5, 0.5, 0.5)

Frame = np.ndarray
SegResult = np.ndarray
DetResult = dict[str, Any]
MultiTaskResult = dict[str, Any]


class Predictor:
    """Predictions for OpenCV BGR uint8 frames with a segmentation, detection or multi-task model.

    ``predictor(frame)`` takes one frame ``(H, W, 3)`` (also ``(H, W)`` grayscale or ``(H, W, 4)``
    BGRA) or a list / ``(N, H, W, 3)`` batch of them (any sizes) and returns, per frame:

    - segmentation: an ``(H, W)`` uint8 map of train ids at the frame's resolution. The network
      sees the frame resized to ``cfg.data.eval_resize`` when that is set (else the full frame);
      the logits are upsampled once, to the frame size.
    - detection: ``{"boxes": (K, 4) float32 xyxy frame pixels, "scores": (K,) float32,
      "labels": (K,) int64, "class_names": [K names]}`` with ``scores >= score_threshold``.
    - multi-task: ``{"segmentation": <as segmentation>, "detections": <as detection>}`` from one
      network pass on the frame at ``cfg.data.eval_resize`` (else the full frame), normalised
      as the segmentation model's (ImageNet mean/std).

    The options left as ``None`` take the device's defaults (:func:`inference_defaults`): on
    CUDA fp16, NCHW, no compile, no CUDA graphs; on CPU fp32, channels_last.
    ``predictor.settings`` holds the resolved choice and ``predictor.settings.describe()`` says it
    in one line. :meth:`from_checkpoint` builds one from a checkpoint alone.

    Args:
        model: the network; it is put in eval mode on ``device`` and prepared by
            ``prepare_for_inference`` (BatchNorm folded into the convolutions: the module is
            changed in place).
        cfg: the config the model was trained with (task, ``data.eval_resize``,
            ``data.image_size``, ``data.label_mapping``, ``data.root``).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``.
        precision: ``fp32``, ``fp16`` (CUDA only) or ``bf16``. Segmentation casts the network
            to it; detection runs it under ``torch.autocast``. An exported ``model`` (``--weights
            model.int8.onnx`` / ``model.pte``, loaded by :func:`~densemnv3.load.load_model`)
            runs in its runtime on the CPU, in the precision it was loaded with.
        memory_format: ``nchw`` or ``channels_last``; ``channels_last=True/False`` says the same.
        compile: ``torch.compile`` the network (the first frames of each size compile it).
        cuda_graphs: replay the network from a CUDA graph captured on the first batch of each
            input shape (segmentation, up to 4 shapes) or on the first batch (detection); other
            shapes run eagerly.
        class_names: detection names indexed by label (0 = background). ``None`` finds them with
            :func:`detection_class_names`.
        score_threshold: detections scored lower are dropped (0.3 suits display).
        fuse_bn: passed to ``prepare_for_inference``.
        test_time: segmentation by sliding windows, scales, flips (:func:`seg_scores`; crop
            default ``data.crop_size``) instead of one pass; whole/no-TTA (or None): one pass.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: Config,
        *,
        device: str | torch.device = "auto",
        precision: str | None = None,
        memory_format: str | None = None,
        channels_last: bool | None = None,
        compile: bool | None = None,
        cuda_graphs: bool | None = None,
        class_names: Sequence[str] | None = None,
        score_threshold: float = 0.3,
        fuse_bn: bool = True,
        test_time: EvalConfig | None = None,
    ) -> None:
        if cfg.task not in TASKS:
            raise UserError(f"task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
        self.cfg = cfg
        self.task = cfg.task
        runtime = getattr(model, "runtime", "torch")
        if runtime != "torch":  # an exported file: the precision it was loaded with
            if precision not in (None, model.precision, model.compute_precision, model.asked):
                raise UserError(
                    f"{model.path} is an {model.precision} file run by {runtime} in "
                    f"{model.compute_precision}; choose its precision when loading it "
                    f"(load_model(..., precision=...)), or drop --precision {precision}"
                )
            precision, device = model.compute_precision, "cpu" if str(device) == "auto" else device
            memory_format = memory_format or "nchw"  # what the runtime reads without a copy
        elif precision == "int8":
            raise UserError(
                "int8 runs a quantized file: python tools/quantize.py --weights CKPT, then "
                "--weights CKPT.int8.onnx (without --precision)"
            )
        self.settings: InferenceSettings = resolve_inference(
            device,
            precision=precision,
            memory_format=memory_format,
            channels_last=channels_last,
            compile=compile,
            cuda_graphs=cuda_graphs,
            runtime=runtime,
        )
        if runtime != "torch":
            self.settings = replace(self.settings, engine=f"{model.describe()}; {model.route}")
        self.settings.apply_backend_flags()
        self.device = self.settings.device
        self.precision = self.settings.precision
        self.channels_last = self.settings.channels_last
        self.score_threshold = float(score_threshold)
        self.memory_format = self.settings.torch_memory_format

        # segmentation casts the network (no per-call weight casts); detection keeps fp32 weights
        # under autocast, so its postprocess sees what it always saw
        cast = (
            self.task == "segmentation"
            and self.settings.dtype != torch.float32
            and runtime == "torch"
        )
        model = prepare_for_inference(
            model.to(self.device),
            fuse_bn=fuse_bn,
            channels_last=self.channels_last,
            dtype=self.settings.dtype if cast else None,
        )
        self.model = model
        self._input_dtype = self.settings.dtype if cast else torch.float32
        self.num_classes = int(getattr(model, "num_classes", 0))
        network = {"segmentation": SegmentationLogits, "multitask": MultiTaskNetwork}.get(self.task)
        self._network = accelerated(network(model) if network else model, self.settings)

        if self.task != "detection":
            resize = cfg.data.eval_resize
            self.input_size = tuple(int(s) for s in resize) if resize else None
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            self.class_names = list(class_names) if class_names is not None else None
            if self.task == "multitask" and class_names is None:  # det_format's, or Cityscapes'
                self.class_names = ["__background__", *(cfg.data.det_classes or THING_NAMES)]
        else:
            self.input_size = detector_input_size(cfg.data.image_size)
            mean, std = _DET_MEAN, _DET_STD
            self.class_names = (
                list(class_names)
                if class_names is not None
                else detection_class_names(cfg, self.num_classes)
            )
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        # CPU: uint8 RGB -> normalised float in one lookup per pixel (OpenCV), the values of
        # evaluation's transform bit for bit
        self._lut = normalize_table(mean, std)[None]
        self.threads = torch.get_num_threads()  # the CPU budget of a frame: see use_threads
        #: Label maps below the frame size: "logits" (as evaluation) or "labels" (the demo's
        #: --input-size), see :func:`~densemnv3.inference.results.frame_labels`.
        self.label_upsample = "logits"
        self.test_time = None if test_time is None or is_plain(test_time) else test_time
        self._resize_noted = self.task == "detection"  # a detector resizes frames anyway

    def use_threads(self, threads: int) -> None:
        """Give a frame's CPU work ``threads`` threads in all: the network's runtime and the
        label map's argmax get them; with onnxruntime torch keeps one (only the light pre- and
        post-processing is torch's there), so torch's idle OpenMP workers never spin beside the
        runtime's. Process-wide (torch's thread count): for applications such as the demo."""
        if threads < 1:
            raise UserError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        if self.settings.runtime == "torch":
            torch.set_num_threads(threads)
        else:
            self.model.threads = threads
            torch.set_num_threads(1)

    @classmethod
    def from_checkpoint(
        cls,
        weights: str | os.PathLike,
        config: str | os.PathLike | Config | None = None,
        *,
        device: str | torch.device = "auto",
        overrides: Sequence[str] = (),
        runtime: str = "auto",
        threads: int | None = None,
        measure_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """The model a checkpoint describes (``last.pt``/``best.pt`` record their config), with
        its weights, wrapped; ``config`` is needed only for files that record none (torchvision
        checkpoints) and is checked against the recorded one (see
        :func:`densemnv3.load.load_model`). An exported file runs in ``runtime`` (``auto``:
        the fastest installed here, measured with ``threads`` threads at ``measure_size`` — default
        the config's evaluation size —, which :meth:`use_threads` then gives the frame's
        work).
        ``kwargs`` (``precision``, ``memory_format``, ``test_time``, ...) go to
        :class:`Predictor`."""
        from densemnv3.load import load_model

        cfg = load_config(config, overrides) if isinstance(config, (str, os.PathLike)) else config
        loaded = load_model(
            cfg,
            weights,
            overrides=overrides,
            runtime=runtime,
            precision=kwargs.get("precision"),
            threads=threads,
            size=measure_size,
        )
        predictor = cls(loaded.model, loaded.cfg, device=device, **kwargs)
        if threads is not None:
            predictor.use_threads(threads)
        return predictor

    @classmethod
    def from_config(
        cls, config_path: str | os.PathLike, weights: str | os.PathLike, **kwargs: Any
    ) -> Predictor:
        """:meth:`from_checkpoint` with the config first, as the tools take them."""
        return cls.from_checkpoint(weights, config_path, **kwargs)

    @torch.inference_mode()
    def __call__(
        self,
        frames: Frame | Sequence[Frame],
        *,
        score_threshold: float | None = None,
        probabilities: bool = False,
    ) -> SegResult | DetResult | MultiTaskResult | list:
        """Predictions for one frame, or a list for a list / batch of frames;
        ``score_threshold`` (detection) overrides the predictor's for this call.
        ``probabilities`` (segmentation, multi-task): each result is a dict with the label map
        under ``"segmentation"`` (and ``"detections"``) and the per-pixel class probabilities
        ``(C, H, W)`` float16 under ``"probabilities"``.

        Frames of one size run as one batch; on the CPU a segmentation batch runs in up to
        ``threads`` slices side by side (label maps too), sharing the threads: cores kept busy."""
        batch, single = as_frame_list(frames)
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        if probabilities and self.task == "detection":
            raise UserError("probabilities: a detection model gives boxes, not per-pixel classes")
        results: list[Any] = [None] * len(batch)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(batch):
            groups.setdefault(frame.shape[:2], []).append(i)
        for size, indices in groups.items():
            note = getattr(self.model, "resize_note", None)
            note = None if self._resize_noted or note is None else note(*size)
            if note:  # a fixed-size exported file: said once
                print(note, flush=True)
                self._resize_noted = True
            sliced = self.task == "segmentation" and self.settings.runtime == "torch"
            streams = self._slices(len(indices)) if sliced else 1
            slices = [list(s) for s in np.array_split(indices, streams)]
            run = lambda ids: self._run([batch[i] for i in ids], threshold, probabilities)  # noqa: E731
            if streams == 1:
                out = run(indices)
            else:
                with torch_threads(max(1, self.threads // streams)):
                    out = [r for part in self._pool().map(run, slices) for r in part]
            for i, result in zip(indices, out):
                results[i] = result
        return results[0] if single else results

    def predict_files(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        batch_size: int = 1,
        workers: int = 2,
        **kwargs: Any,
    ) -> Iterator[tuple[str, Any]]:
        """``(path, result)`` for each image file of ``paths``, in order, decoded by ``workers``
        threads ahead of the network, ``batch_size`` at a time; an unreadable file raises
        :class:`~densemnv3.errors.DataError` naming it. ``kwargs`` go to :meth:`__call__`.
        :func:`densemnv3.inference.batch.predict_files` also gives the frames, the files it could
        not read and the stage times (``densemnv3 predict`` is made of it)."""
        from .batch import predict_files

        for item in predict_files(
            self, paths, batch_size=batch_size, workers=workers, strict=True, **kwargs
        ):
            yield item.path, item.result

    def _run(self, frames: list[Frame], threshold: float, probabilities: bool) -> list:
        """The results of ``frames`` (all of one size), one network batch."""
        stacked = frames[0][None] if len(frames) == 1 else np.stack(frames)
        pixels = torch.from_numpy(stacked).to(self.device, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            if self.task == "segmentation":
                return self._segment(pixels, probabilities)
            if self.task == "detection":
                return self._detect(pixels, threshold)
            return self._segment_and_detect(pixels, threshold, probabilities)

    def _slices(self, frames: int) -> int:
        """Slices a batch of ``frames`` runs in side by side on the CPU: up to one per thread
        (PyTorch's segmentation network sliced whole; an exported file's runtime slices its
        network itself, and its label maps are sliced here)."""
        cpu = self.device.type == "cpu" and not self.settings.compile
        return max(1, min(frames, self.threads)) if cpu else 1

    def _pool(self) -> ThreadPoolExecutor:
        if getattr(self, "_executor", None) is None or self._executor._max_workers < self.threads:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="densemnv3-slice")
        return self._executor

    def preprocess(self, pixels: Tensor) -> Tensor:
        """``(N, H, W, 3)`` uint8 BGR on the device → the network's normalized float RGB input
        ``(N, 3, h, w)`` at ``input_size`` (the frame size when that is None)."""
        if self.device.type == "cpu" and self._input_dtype == torch.float32:
            return normalized_cpu(pixels, self.input_size, self._lut, self.memory_format)
        x = pixels.permute(0, 3, 1, 2).flip(1).float()
        size = self.input_size or tuple(pixels.shape[1:3])
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = x.div_(255).sub_(self._mean).div_(self._std).to(self._input_dtype)
        return x.contiguous(memory_format=self.memory_format)

    # ------------------------------------------------------------------ tasks
    def _segment(self, pixels: Tensor, probabilities: bool = False) -> list:
        x = self.preprocess(pixels)
        return self._maps(self._network, x, tuple(pixels.shape[1:3]), probabilities)

    def _maps(
        self,
        network: Callable[[Tensor], Tensor],
        x: Tensor,
        frame_size: tuple[int, int],
        probabilities: bool,
    ) -> list:
        """The label maps of ``network(x)`` at the frame size (with test-time augmentation when
        set), with their class probabilities when asked for."""
        averaged = False
        if self.test_time is not None:
            crop = self.test_time.crop or self.cfg.data.crop_size
            scores = seg_scores(network, x, frame_size, self.test_time, crop=crop)
            averaged = passes(self.test_time) > 1
        else:
            scores = network(x)
        upsample = self.label_upsample if self.test_time is None else "logits"
        labels = lambda s: frame_labels(  # noqa: E731
            s, frame_size, network_size=self.input_size, upsample=upsample, threads=self.threads
        )
        streams = self._slices(len(scores)) if self.settings.runtime != "torch" else 1
        if streams > 1:  # the network ran whole
            parts = self._pool().map(labels, scores.tensor_split(streams))
            labels = [lab for part in parts for lab in part]
        else:
            labels = labels(scores)
        if not probabilities:
            return labels
        probs = frame_probabilities(scores, frame_size, averaged=averaged)
        return [{"segmentation": lab, "probabilities": p} for lab, p in zip(labels, probs)]

    def _detect(self, pixels: Tensor, threshold: float) -> list[DetResult]:
        x = self.preprocess(pixels)
        return self._in_frame(
            thresholded(self.model, threshold, lambda: self._network(x)), pixels, x, threshold
        )

    def _segment_and_detect(
        self, pixels: Tensor, threshold: float, probabilities: bool = False
    ) -> list[MultiTaskResult]:
        x = self.preprocess(pixels)
        logits, cls_logits, bbox_regression, anchors = self._network(x)
        det = self.model.det
        detections = thresholded(
            det,
            threshold,
            lambda: det.postprocess(
                cls_logits.float(), bbox_regression.float(), anchors.float(), x.shape[-2:]
            ),
        )
        size = tuple(pixels.shape[1:3])
        network = (lambda _: logits) if self.test_time is None else lambda i: self._network(i)[0]
        maps = self._maps(network, x, size, probabilities)
        return [
            (m if probabilities else {"segmentation": m}) | {"detections": boxes}
            for m, boxes in zip(maps, self._in_frame(detections, pixels, x, threshold))
        ]

    def _in_frame(
        self, detections: list[dict[str, Tensor]], pixels: Tensor, x: Tensor, threshold: float
    ) -> list[DetResult]:
        size = tuple(pixels.shape[1:3])
        return boxes_in_frame(detections, size, tuple(x.shape[-2:]), threshold, self._name)

    def _name(self, label: int) -> str:
        names = self.class_names
        return names[label] if names is not None and 0 <= label < len(names) else f"class {label}"

    def _autocast(self) -> contextlib.AbstractContextManager:
        exported = self.settings.runtime != "torch"  # the runtime's precision: the rest stays fp32
        if exported or self.settings.dtype == torch.float32 or self._input_dtype != torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.settings.dtype)

    def __repr__(self) -> str:
        return (
            f"Predictor(task={self.task!r}, model={type(self.model).__name__}, "
            f"device={str(self.device)!r}, precision={self.precision!r}, "
            f"memory_format={self.settings.memory_format!r}, compile={self.settings.compile}, "
            f"cuda_graphs={self.settings.cuda_graphs}, input_size={self.input_size})"
        )
