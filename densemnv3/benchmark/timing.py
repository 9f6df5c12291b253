"""Interleaved timing: the functions of a case called in turn, call by call, so that load
changes hit all of them alike (CUDA calls timed with events); and the record every timed case
starts from."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_interleaved(
    fns: dict[str, Callable[[], object]], iters: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each function (and ``"<name>_min"``, the fastest call),
    alternating them call by call (and the order each repetition) so that load changes hit all
    of them alike."""
    names = list(fns)
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                fns[name]()
        times: dict[str, list[float]] = {name: [] for name in names}
        for i in range(max(iters, 1)):
            for name in names if i % 2 == 0 else names[::-1]:
                times[name].append(time_call(fns[name], device))
    medians = {name: statistics.median(t) for name, t in times.items()}
    return medians | {f"{name}_min": min(t) for name, t in times.items()}


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``: wall clock on the CPU, CUDA events on a GPU."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(args) -> None:
    """Mark a new step for Inductor's CUDA graphs (``--compile`` in a mode that captures them)."""
    if (
        args.compile
        and args.compile_mode in ("reduce-overhead", "max-autotune")
        and args.device.startswith("cuda")
    ):
        torch.compiler.cudagraph_mark_step_begin()


def stepped(fn: Callable, args) -> Callable:
    """``fn`` preceded by :func:`step`."""

    def call():
        step(args)
        return fn()

    return call


def timed_record(
    case: str, size: str, batch: int, precision: str, seconds: dict[str, float]
) -> dict:
    """The fields of every timed case, from :func:`time_interleaved`'s ``ours`` and ``tv``."""
    ours_s, tv_s = seconds["ours"], seconds["tv"]
    return {
        "case": case,
        "input": size,
        "batch": batch,
        "precision": precision,
        "ours_ms": ours_s * 1e3,
        "tv_ms": tv_s * 1e3,
        "ours_img_s": batch / ours_s,
        "tv_img_s": batch / tv_s,
        "ratio": tv_s / ours_s,
        "ours_min_ms": seconds["ours_min"] * 1e3,
        "tv_min_ms": seconds["tv_min"] * 1e3,
    }
