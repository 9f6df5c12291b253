"""How an exported file is checked: run in its runtime (onnxruntime / ``torch.jit.load``) on
random images and compared with PyTorch — every output within a max abs difference, or, for a
graph with SSDLite's postprocess inside, every detection matched."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from densemnv3.errors import ExportCheckError

__all__ = [
    "BOX_TOLERANCE",
    "SCORE_TOLERANCE",
    "Format",
    "check_detections",
    "check_exported",
    "check_finite_outputs",
    "quiet",
    "unmatched",
]

Format = Literal["onnx", "torchscript"]

#: Detections (``postprocess=True``) match PyTorch's when boxes are this close (pixels), scores
#: this close and labels equal.
BOX_TOLERANCE, SCORE_TOLERANCE = 1e-2, 1e-4


def _inputs(inputs: Sequence[tuple[tuple[int, int], int]]) -> Iterator[tuple[str, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    for size, batch in inputs:
        yield (
            f"{size[0]}x{size[1]} batch {batch}",
            torch.randn(batch, 3, *size, generator=generator),
        )


def check_finite_outputs(
    path: str | os.PathLike, where: str, expected: Sequence[Tensor], got: Sequence[Tensor]
) -> None:
    """An :class:`ExportCheckError` when PyTorch's outputs (``expected``) or the file's (``got``)
    hold NaN or inf: a comparison of two non-finite outputs proves nothing."""
    for side, tensors in (("PyTorch's", expected), ("the file's", got)):
        bad = sum(int((~torch.isfinite(t)).sum()) for t in tensors if t.is_floating_point())
        if bad:
            cause = (
                "the model's weights or its BatchNorm statistics hold NaN or inf"
                if side == "PyTorch's"
                else "the file computes NaN or inf where PyTorch does not"
            )
            raise ExportCheckError(
                f"{path}: {side} outputs hold {bad} non-finite values at {where} "
                f"({cause}); the file cannot be trusted"
            )


def check_exported(
    path: str | os.PathLike,
    fmt: Format,
    reference: nn.Module,
    inputs: Sequence[tuple[tuple[int, int], int]],
) -> dict[str, float]:
    """Max abs difference of every output of the file at ``path`` vs ``reference``, per input
    (``(size, batch)`` pairs of random images)."""
    run = _onnx_runner(path) if fmt == "onnx" else _torchscript_runner(path)
    diffs = {}
    for name, images in _inputs(inputs):
        with torch.no_grad():
            expected = reference(images)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = run(images)
        if len(got) != len(expected):
            raise ExportCheckError(f"{path}: {len(got)} outputs, expected {len(expected)}")
        check_finite_outputs(path, name, expected, got)
        diff = 0.0
        for g, e in zip(got, expected):
            if tuple(g.shape) != tuple(e.shape):
                raise ExportCheckError(
                    f"{path}: at {name} an output has shape {tuple(g.shape)}, expected "
                    f"{tuple(e.shape)} (are the batch, height and width dynamic?)"
                )
            diff = max(diff, float((g.float() - e.float()).abs().max()))
        diffs[name] = diff
    return diffs


def check_detections(
    path: str | os.PathLike, model: nn.Module, inputs: Sequence[tuple[tuple[int, int], int]]
) -> dict[str, float]:
    """Per input, how many of PyTorch's detections the file's do not match (and vice versa): a
    match has the same label, a box within ``BOX_TOLERANCE`` px and a score within
    ``SCORE_TOLERANCE``."""
    run = _onnx_runner(path)
    counts = {}
    for name, images in _inputs(inputs):
        with torch.no_grad():
            expected = model(images)
        count, boxes, scores, labels = run(images)
        check_finite_outputs(
            path, name, [t for d in expected for t in (d["boxes"], d["scores"])], [boxes, scores]
        )
        misses = 0
        for i, exp in enumerate(expected):
            n = int(count[i])
            misses += unmatched(
                exp, {"boxes": boxes[i, :n], "scores": scores[i, :n], "labels": labels[i, :n]}
            )
        counts[name] = float(misses)
    return counts


def unmatched(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    box_tol: float = BOX_TOLERANCE,
    score_tol: float = SCORE_TOLERANCE,
) -> int:
    """Detections of ``a`` with no partner in ``b`` plus those of ``b`` left over (greedy one-to-one
    matching: same label, boxes within ``box_tol``, scores within ``score_tol``; order free, as
    detections of equal score may come in either order)."""
    close = (
        ((a["boxes"][:, None].float() - b["boxes"][None].float()).abs().amax(-1) <= box_tol)
        & ((a["scores"][:, None].float() - b["scores"][None].float()).abs() <= score_tol)
        & (a["labels"][:, None] == b["labels"][None].to(a["labels"].dtype))
    )
    used = torch.zeros(len(b["scores"]), dtype=torch.bool)
    missing = 0
    for row in close:
        free = (row & ~used).nonzero()
        if len(free):
            used[free[0, 0]] = True
        else:
            missing += 1
    return missing + int((~used).sum())


def _onnx_runner(path: str | os.PathLike):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images: Tensor) -> tuple[Tensor, ...]:
        return tuple(torch.from_numpy(o) for o in session.run(None, {name: images.numpy()}))

    return run


def _torchscript_runner(path: str | os.PathLike):
    with quiet():
        module = torch.jit.load(str(path), map_location="cpu")

    def run(images: Tensor) -> tuple[Tensor, ...]:
        # The graph as saved, without the executor's per-shape profiling and re-optimisation
        # (seconds per new batch size on CPU); the numbers are the same.
        with torch.no_grad(), torch.jit.optimized_execution(False):
            out = module(images)
        return out if isinstance(out, tuple) else (out,)

    return run


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the tracer's and exporters' warnings and progress lines (the check is the judge)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")) as devnull:
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            devnull.close()
