"""Segmentation scores at test time: the whole image or sliding windows, over scales and flips.

Published Cityscapes numbers are mostly measured this way, so :func:`seg_scores` does what
mmsegmentation does, to compare with its tables:

- ``slide`` is ``EncoderDecoder.slide_inference``: ``crop`` windows every ``stride`` pixels, the
  last window of a row or column moved back to end at the image's edge; each window's logits are
  added at its place and divided by the number of windows over each pixel.
- ``tta`` is ``TestTimeAug`` + ``SegTTAModel``: the image at each scale, and mirrored with
  ``flip``; each pass's logits resized to the label size and mirrored back, then the softmax
  probabilities averaged. The mirrored copy runs in the same forward as the image (on the CPU,
  below :data:`MIRROR_APART_PIXELS`).

Without TTA the scores are the logits, so a plain whole pass scores exactly as the model's forward
resized to the labels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from densemnv3.config import EvalConfig, TTAConfig
from densemnv3.errors import ConfigError, did_you_mean
from densemnv3.models.resize import resize_bilinear

__all__ = [
    "describe",
    "is_plain",
    "parse_tta",
    "passes",
    "seg_scores",
    "slide_geometry",
    "slide_windows",
]

Model = Callable[[Tensor], Tensor]
Size = tuple[int, int]

#: Rows of the label-size scores turned into probabilities at a time on the CPU, so that they stay
#: in cache: far cheaper than ``softmax(1)``, flip and add over whole planes (BENCHMARKS.md, eval
#: modes).
BLOCK_ROWS = 8
#: From this many pixels an image and its mirror run as two forwards on the CPU, not one batch of
#: two: at large inputs the pair costs more than two single forwards (BENCHMARKS.md, eval modes).
MIRROR_APART_PIXELS = 512 * 1024
TTA_WORDS = ("off", "flip", "scales")
TTA_FORM = "off | flip | scales=S[,S...] [flip], e.g. --tta scales=0.5,0.75,1.0,1.25,1.5,1.75 flip"


@torch.no_grad()
def seg_scores(
    model: Model,
    images: Tensor,
    size: Sequence[int],
    cfg: EvalConfig,
    *,
    crop: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
) -> Tensor:
    """Class scores ``(N, C, *size)`` of ``images`` ``(N, 3, H, W)`` at ``size`` (the labels'
    ``(H, W)``) whose argmax is the prediction: the logits of one plain pass (scale 1.0, no
    flip), else the probabilities averaged over the passes.

    ``model`` maps images to logits ``(N, C, h, w)`` at any size; ``crop`` and ``stride`` (slide
    mode) default to ``cfg.crop`` and ``cfg.stride`` (see :func:`slide_geometry`).
    """
    scales, flip = _checked_scales(cfg.tta), cfg.tta.flip
    size = (int(size[0]), int(size[1]))
    run = model
    if cfg.mode == "slide":
        crop, stride = slide_geometry(cfg, crop, stride)
        run = lambda x: _slide(model, x, crop, stride)  # noqa: E731
    elif cfg.mode != "whole":
        raise ConfigError(f"eval.mode must be 'whole' or 'slide', got {cfg.mode!r}")
    if scales == (1.0,) and not flip:
        return _resized(run(images), size)
    total = None
    for i, scale in enumerate(scales):
        x = images if scale == 1.0 else resize_bilinear(images, _scaled(images.shape[-2:], scale))
        together = flip and (
            x.device.type != "cpu" or x.shape[-2] * x.shape[-1] < MIRROR_APART_PIXELS
        )
        runs = (
            [(torch.cat([x, x.flip(-1)]), False)]
            if together
            else [(x, False)] + [(x.flip(-1), True)] * flip
        )
        for j, (batch, mirrored) in enumerate(runs):
            logits = _resized(run(batch), size)
            if total is None:
                total = _empty_like_format(
                    logits, (len(images), logits.shape[1], *size), torch.float32
                )
            _add_probabilities(total, logits, passes(cfg), first=i == j == 0, mirrored=mirrored)
    return total


def is_plain(cfg: EvalConfig) -> bool:
    """Whether ``cfg`` is one pass over the whole image (no windows, scales or flips)."""
    return cfg.mode == "whole" and tuple(cfg.tta.scales) == (1.0,) and not cfg.tta.flip


def passes(cfg: EvalConfig) -> int:
    """Forward passes per image: scales x 2 with flip (windows not counted)."""
    return len(cfg.tta.scales) * (2 if cfg.tta.flip else 1)


def slide_geometry(
    cfg: EvalConfig, crop: Sequence[int] | None = None, stride: Sequence[int] | None = None
) -> tuple[Size, Size]:
    """The windows' size and step: ``crop`` (else ``cfg.crop``) and ``stride`` (else
    ``cfg.stride``, else 2/3 of the crop rounded: 341x683 for 512x1024, as mmseg's configs)."""
    crop = crop if crop is not None else cfg.crop
    if crop is None:
        raise ValueError("slide inference needs a crop size: pass crop= (e.g. data.crop_size)")
    crop = _checked_pair(crop, "eval.crop")
    stride = stride if stride is not None else cfg.stride
    if stride is None:
        return crop, ((2 * crop[0] + 1) // 3, (2 * crop[1] + 1) // 3)
    stride = _checked_pair(stride, "eval.stride")
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise ConfigError(
            f"eval.stride {stride} steps past eval.crop {crop}: the windows would "
            f"leave pixels out; use a stride of at most the crop (e.g. None: 2/3 of it)"
        )
    return crop, stride


def slide_windows(
    height: int, width: int, crop: Sequence[int], stride: Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """``(y1, y2, x1, x2)`` of each window over a ``height`` x ``width`` image, row by row."""
    return [
        (y1, y2, x1, x2)
        for y1, y2 in _spans(height, crop[0], stride[0])
        for x1, x2 in _spans(width, crop[1], stride[1])
    ]


def parse_tta(words: Sequence[str]) -> TTAConfig:
    """The ``--tta`` option's words: ``off``; or ``flip`` and/or ``scales=0.5,1.0,...``."""
    if not words:
        raise ConfigError(f"--tta needs a value: {TTA_FORM}")
    if list(words) == ["off"]:
        return TTAConfig()
    scales, flip = (1.0,), False
    for word in words:
        key, _, value = word.partition("=")
        if word == "flip":
            flip = True
        elif key == "scales" and _positive(read := _floats(value)):
            scales = read
        else:
            hint = "" if key in TTA_WORDS else did_you_mean(key, TTA_WORDS)
            raise ConfigError(
                f"--tta {' '.join(words)}: can't read {word!r}{hint}; expected {TTA_FORM}"
            )
    return TTAConfig(scales=scales, flip=flip)


def describe(
    cfg: EvalConfig, crop: Sequence[int] | None = None, stride: Sequence[int] | None = None
) -> str:
    """A few words for a log: ``whole``, ``whole, 6 scales 0.5-1.75 + flip``,
    ``slide 512x1024 every 341x683, flip``."""
    mode = "whole"
    if cfg.mode == "slide":
        crop, stride = slide_geometry(cfg, crop, stride)
        mode = f"slide {crop[0]}x{crop[1]} every {stride[0]}x{stride[1]}"
    scales, tta = _checked_scales(cfg.tta), []
    if len(scales) > 1:
        tta.append(f"{len(scales)} scales {min(scales):g}-{max(scales):g}")
    elif scales != (1.0,):
        tta.append(f"scale {scales[0]:g}")
    if cfg.tta.flip:
        tta.append("flip")
    return ", ".join([mode, " + ".join(tta)] if tta else [mode])


def _scaled(size: Sequence[int], scale: float) -> Size:
    """``size`` times ``scale``, rounded half up as mmcv's ``rescale_size``."""
    return (max(1, int(size[0] * scale + 0.5)), max(1, int(size[1] * scale + 0.5)))


def _spans(length: int, crop: int, stride: int) -> list[tuple[int, int]]:
    grids = max(length - crop + stride - 1, 0) // stride + 1
    ends = [min(i * stride + crop, length) for i in range(grids)]
    return [(max(end - crop, 0), end) for end in ends]


def _slide(model: Model, images: Tensor, crop: Size, stride: Size) -> Tensor:
    """mmseg's slide inference: the windows' logits averaged at their places (each adds its
    logits over the count of windows there); the first window over a pixel writes it, later ones
    add (no zero fill)."""
    height, width = images.shape[-2:]
    rows, cols = _spans(height, crop[0], stride[0]), _spans(width, crop[1], stride[1])
    if len(rows) == len(cols) == 1:  # the image fits in one window
        return model(images)
    logits, top = None, 0  # rows above ``top`` (and left of ``left``) hold earlier windows' logits
    for y1, y2 in rows:
        left = 0
        for x1, x2 in cols:
            window = _resized(model(images[..., y1:y2, x1:x2]), (y2 - y1, x2 - x1))
            if logits is None:
                logits = _empty_like_format(
                    window, (*window.shape[:2], height, width), window.dtype
                )
                share = _share(tuple(rows), tuple(cols), height, width).to(
                    logits.device, logits.dtype
                )
            below, right = max(top, y1), max(left, x1)
            w, part = (
                share[y1:y2, x1:x2],
                window,
            )  # each window adds its share: no division pass after
            logits[..., y1:below, x1:x2].addcmul_(part[..., : below - y1, :], w[: below - y1])
            logits[..., below:y2, x1:right].addcmul_(
                part[..., below - y1 :, : right - x1], w[below - y1 :, : right - x1]
            )
            torch.mul(
                part[..., below - y1 :, right - x1 :],
                w[below - y1 :, right - x1 :],
                out=logits[..., below:y2, right:x2],
            )
            del window, part  # freed before the next forward, whose output can take its memory
            left = x2
        top = y2
    return logits


def _empty_like_format(like: Tensor, shape: Sequence[int], dtype: torch.dtype) -> Tensor:
    """An empty tensor in ``like``'s memory format: channels-last logits (the CPU inference path's)
    copied into an NCHW buffer would be transposed, several times the cost of the copy
    (BENCHMARKS.md)."""
    channels_last = (
        like.dim() == 4
        and not like.is_contiguous()
        and like.is_contiguous(memory_format=torch.channels_last)
    )
    return torch.empty(
        shape,
        dtype=dtype,
        device=like.device,
        memory_format=torch.channels_last if channels_last else torch.contiguous_format,
    )


@functools.lru_cache(maxsize=4)
def _share(
    rows: tuple[tuple[int, int], ...], cols: tuple[tuple[int, int], ...], height: int, width: int
) -> Tensor:
    """``(height, width)``: one over the count of windows over each pixel (a dataset's frames
    share their size, so it is made once)."""
    return (_counts(rows, height)[:, None] * _counts(cols, width)).reciprocal_()


def _counts(spans: Sequence[tuple[int, int]], length: int) -> Tensor:
    count = torch.zeros(length)
    for start, end in spans:
        count[start:end] += 1
    return count


def _resized(logits: Tensor, size: Size) -> Tensor:
    return logits if tuple(logits.shape[-2:]) == size else resize_bilinear(logits, size)


def _add_probabilities(
    total: Tensor, logits: Tensor, passes: int, *, first: bool, mirrored: bool = False
) -> None:
    """``total += softmax(logits, 1) / passes`` (``total =`` when ``first``), mirrored back when
    ``mirrored``; the second half of a batch of twice ``total``'s is a mirror. On the CPU in
    blocks of rows."""
    n = len(total)
    rows = BLOCK_ROWS if total.device.type == "cpu" else total.shape[-2]
    for start in range(0, total.shape[-2], rows):
        block = logits[..., start : start + rows, :].float()
        exp = (block - block.amax(1, keepdim=True)).exp_()
        weight = exp.sum(1, keepdim=True).mul_(passes).reciprocal_()
        out = total[..., start : start + rows, :]
        parts = [(exp[:n], weight[:n], mirrored)] + [(exp[n:], weight[n:], True)] * (
            len(logits) > n
        )
        for k, (e, w, flipped) in enumerate(parts):
            e, w = (e.flip(-1), w.flip(-1)) if flipped else (e, w)
            if first and k == 0:
                torch.mul(e, w, out=out)
            else:
                out.addcmul_(e, w)


def _checked_scales(tta: TTAConfig) -> tuple[float, ...]:
    scales = tuple(float(s) for s in tta.scales)
    if not _positive(scales):
        raise ConfigError(
            f"eval.tta.scales must be one or more positive factors (1.0: the image "
            f"as it is), got {tta.scales!r}"
        )
    return scales


def _checked_pair(value: Sequence[int], key: str) -> Size:
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ConfigError(f"{key} must be two positive pixel counts (height, width), got {value!r}")
    return pair


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError:
        return ()


def _positive(scales: tuple[float, ...]) -> bool:
    return bool(scales) and all(math.isfinite(s) and s > 0 for s in scales)
