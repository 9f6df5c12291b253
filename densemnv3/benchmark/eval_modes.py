"""What sliding windows and test-time augmentation cost, against the forwards they are made of.

``--model seg_test_time --sizes 1024x2048``: LR-ASPP-MobileNetV3-Large (random weights,
calibrated BatchNorm, our inference path) predicting a frame at the label size through
:func:`~densemnv3.inference.eval_modes.seg_scores`, interleaved:

- ``whole``: one pass (the eval tools' default);
- ``slide``: windows of half the frame each way (at 1024x2048: 512x1024 every 341x683, mmseg's
  Cityscapes setting) against the forwards inside it (clocked call by call, ``slide_forwards``) and
  ``windows``, the same windows' forwards run one by one with nothing else in memory;
- ``flip`` and ``ms_flip`` (scales 0.5-1.75 + flip) against ``ms_flip_forwards``, its forwards
  alone (per scale an image and its mirror: one batch of two below
  :data:`~densemnv3.inference.eval_modes.MIRROR_APART_PIXELS` on the CPU, else two forwards).

Each reference drops every output as it comes, as the modes do.

torchvision has neither mode; mmsegmentation's are the reference for what they compute.
"""

from __future__ import annotations

import statistics
import time

import torch

from densemnv3.config import EvalConfig, TTAConfig
from densemnv3.inference.eval_modes import (
    MIRROR_APART_PIXELS,
    seg_scores,
    slide_geometry,
    slide_windows,
)
from densemnv3.inference.optimize import prepare_for_inference
from densemnv3.models.resize import resize_bilinear

from .models import calibrate_bn_, our_model
from .reference import SEG_CLASSES
from .timing import sync, time_interleaved

CASE = "seg_test_time"
#: mmsegmentation's Cityscapes test-time scales
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def bench_test_time(sizes: list[tuple[int, int]], args, device: torch.device) -> list[dict]:
    """A record per size, each printed as it is measured."""
    records = []
    for size in sizes:
        records.append(bench_size(size, args, device))
        print(format_test_time(records[-1]), flush=True)
    return records


def bench_size(size: tuple[int, int], args, device: torch.device) -> dict:
    """Median ms of each mode and of the forwards it runs, at ``size`` (batch 1)."""
    crop = (size[0] // 2, size[1] // 2)
    gen = torch.Generator().manual_seed(0)
    model = our_model("lraspp_large", SEG_CLASSES).to(device)
    calibrate_bn_(model, lambda: model(torch.randn(2, 3, 256, 512, generator=gen).to(device)))
    model = prepare_for_inference(model, channels_last=args.channels_last)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(1, 3, *size, generator=gen).to(device).contiguous(memory_format=memory_format)
    modes = {
        "whole": EvalConfig(),
        "slide": EvalConfig(mode="slide", crop=crop),
        "flip": EvalConfig(tta=TTAConfig(flip=True)),
        "ms_flip": EvalConfig(tta=TTAConfig(SCALES, True)),
    }
    crop, stride = slide_geometry(modes["slide"])
    windows = [x[..., y1:y2, x1:x2] for y1, y2, x1, x2 in slide_windows(*size, crop, stride)]
    scaled = [
        x if s == 1.0 else resize_bilinear(x, (int(size[0] * s + 0.5), int(size[1] * s + 0.5)))
        for s in SCALES
    ]
    forwards = []
    for s in scaled:
        mirror = s.flip(-1)
        apart = device.type == "cpu" and s.shape[-2] * s.shape[-1] >= MIRROR_APART_PIXELS
        forwards += [s, mirror] if apart else [torch.cat([s, mirror])]
    forwards = [f.contiguous(memory_format=memory_format) for f in forwards]

    def each(inputs: list[torch.Tensor]) -> None:
        for t in inputs:
            model(t)

    fns = {name: (lambda cfg=cfg: seg_scores(model, x, size, cfg)) for name, cfg in modes.items()}
    fns["windows"] = lambda: each(windows)
    fns["ms_flip_forwards"] = lambda: each(forwards)
    seconds = time_interleaved(fns, args.iters, args.warmup, device)
    ms = {name: 1000 * seconds[name] for name in fns}
    ms["slide_forwards"], ms["ms_flip_forwards_inside"] = (
        _inside(model, lambda m, cfg=modes[name]: seg_scores(m, x, size, cfg), args.iters, device)
        for name in ("slide", "ms_flip")
    )
    return {
        "case": CASE,
        "input": f"{size[0]}x{size[1]}",
        "crop": f"{crop[0]}x{crop[1]}",
        "stride": f"{stride[0]}x{stride[1]}",
        "windows_count": len(windows),
        "scales": list(SCALES),
        **{f"{name}_ms": value for name, value in ms.items()},
        "slide_over_windows": ms["slide"] / ms["windows"],
        "slide_over_its_forwards": ms["slide"] / ms["slide_forwards"],
        "ms_flip_over_forwards": ms["ms_flip"] / ms["ms_flip_forwards"],
    }


def _inside(model, mode, iters: int, device: torch.device) -> float:
    """Median ms per call of ``mode(timed)`` spent in the forwards it makes (``timed``: ``model``
    with its calls clocked): what the mode's own windows or passes cost where they run."""
    spent = []

    def timed(t: torch.Tensor) -> torch.Tensor:
        sync(device)
        start = time.perf_counter()
        out = model(t)
        sync(device)
        spent[-1] += time.perf_counter() - start
        return out

    with torch.inference_mode():
        for _ in range(max(iters, 1)):
            spent.append(0.0)
            mode(timed)
    return 1000 * statistics.median(spent)


def format_test_time(r: dict) -> str:
    """The modes' times, each beside the forwards it runs."""
    return (
        f"{r['case']} {r['input']}: whole {r['whole_ms']:.0f} ms; slide {r['crop']} every "
        f"{r['stride']} ({r['windows_count']} windows) {r['slide_ms']:.0f} ms against "
        f"{r['windows_ms']:.0f} ms for its windows alone ({r['slide_over_windows']:.2f}x), "
        f"{r['slide_forwards_ms']:.0f} ms for the forwards inside it "
        f"({r['slide_over_its_forwards']:.2f}x); flip {r['flip_ms']:.0f} ms; {len(r['scales'])} "
        f"scales + flip {r['ms_flip_ms']:.0f} ms against {r['ms_flip_forwards_ms']:.0f} ms for its "
        f"forwards alone ({r['ms_flip_over_forwards']:.2f}x)"
    )
