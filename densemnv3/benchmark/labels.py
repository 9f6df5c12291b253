"""``--model label_map``: stride-8 scores to a label map at the frame size, ours vs torchvision's.

The Predictor turns LR-ASPP's (and the multi-task model's) stride-8 logits into a label map at
the frame size with :func:`~densemnv3.inference.upsample.upsampled_labels`; torchvision's LR-ASPP
upsamples its logits to the input size in its forward and its users take ``argmax(1)``. Both are
timed interleaved on the same 19-class scores, at each ``--sizes`` frame size (scores at 1/8 of
it), for scores with regions of several sizes (noise on a coarse grid of every 64th, 32nd and 16th
pixel, upsampled, plus a little noise: the share of cells on a class boundary grows with the grid),
and the labels are compared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from densemnv3.inference.upsample import agreeing_cells, upsampled_labels

from .reference import SEG_CLASSES
from .timing import time_interleaved

__all__ = ["bench_label_map", "format_label_map"]

#: Region sizes of the scores, in frame pixels: one coarse-grid cell of noise per this many.
REGIONS = (64, 32, 16)


def smooth_scores(
    classes: int, height: int, width: int, region: int, seed: int = 0
) -> torch.Tensor:
    """``(1, classes, height, width)`` scores with regions about ``region / 8`` cells across."""
    g = torch.Generator().manual_seed(seed)
    coarse = (
        torch.randn(
            1, classes, max(height * 8 // region, 2), max(width * 8 // region, 2), generator=g
        )
        * 4
    )
    return F.interpolate(coarse, size=(height, width), mode="bilinear") + 0.1 * torch.randn(
        1, classes, height, width, generator=g
    )


def bench_label_map(sizes: list[tuple[int, int]], args) -> list[dict]:
    """A record per frame size (printed as it comes): median ms of ours and torchvision's way per
    region size, with the boundary share and the label agreement."""
    records = []
    for size in sizes:
        records.append(_label_map_record(size, args))
        print(format_label_map(records[-1]), flush=True)
    return records


def _label_map_record(size: tuple[int, int], args) -> dict:
    rows = []
    low = (size[0] // 8, size[1] // 8)
    for region in REGIONS:
        logits = smooth_scores(SEG_CLASSES, *low, region)
        fns = {
            "torchvision": lambda x=logits: F.interpolate(
                x, size=size, mode="bilinear", align_corners=False
            ).argmax(1),
            "ours": lambda x=logits: upsampled_labels(x, size),
        }
        seconds = time_interleaved(fns, args.iters, args.warmup, torch.device("cpu"))
        same = (torch.from_numpy(fns["ours"]()).long() == fns["torchvision"]()).float().mean()
        boundary = 1 - float(agreeing_cells(logits.argmax(1)[0].to(torch.uint8).numpy()).mean())
        rows.append(
            {
                "region": region,
                "boundary_share": boundary,
                "tv_ms": seconds["torchvision"] * 1e3,
                "ours_ms": seconds["ours"] * 1e3,
                "ratio": seconds["ours"] / seconds["torchvision"],
                "agreement": float(same),
            }
        )
    return {
        "case": "label_map",
        "input": f"{size[0]}x{size[1]}",
        "scores": f"{SEG_CLASSES}x{low[0]}x{low[1]}",
        "threads": torch.get_num_threads(),
        "rows": rows,
    }


def format_label_map(r: dict) -> str:
    lines = [
        f"label map at {r['input']} from {r['scores']} scores, {r['threads']} threads "
        f"(torchvision: F.interpolate(...).argmax(1))",
        "| regions (px) | boundary cells | torchvision ms | ours ms | x torchvision "
        "| same labels |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row['region']} | {row['boundary_share']:.2f} | {row['tv_ms']:.1f} "
        f"| {row['ours_ms']:.1f} | {row['ratio']:.2f} | {row['agreement']:.5f} |"
        for row in r["rows"]
    ]
    return "\n".join(lines)
