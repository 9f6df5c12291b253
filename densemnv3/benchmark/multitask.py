"""The multi-task cases: one multi-task forward (LR-ASPP + SSDLite on one backbone pass) against
the segmentation model and the detection model run one after the other, on the same input, timed
interleaved in the same run.

Each side is the model's eval forward on the inference path (``prepare_for_inference`` with the
options asked for): the segmentation logits at the input size and the detections after NMS. The
single-task models are the shipped builders' defaults (``lraspp_mobilenet_v3_*``: dilated last
stage; ``ssdlite320_mobilenet_v3_*``: reduced tail), the multi-task model the builder's default
or the ``--config``'s. All get random weights with BatchNorm statistics calibrated on random
images, 19 segmentation classes and 9 detection classes (the Cityscapes things); at the default
score threshold (0.001) every class of every box is a candidate, the same postprocess on both
sides. ``ratio`` is multi-task time ÷ (segmentation + detection) time.
"""

from __future__ import annotations

import torch
from torch import nn

from densemnv3.config import ModelConfig
from densemnv3.inference.optimize import prepare_for_inference
from densemnv3.models import build_model

from .models import DTYPES, calibrate_bn_, gflops_per_image
from .timing import time_interleaved

MULTITASK_CASES = ("multitask_large", "multitask_small")
SEG_CLASSES, DET_CLASSES = 19, 9


def multitask_case_of(model_name: str) -> str | None:
    """The multi-task case of a builder name (``multitask_mobilenet_v3_small`` ->
    ``multitask_small``)."""
    if not model_name.startswith("multitask"):
        return None
    return "multitask_small" if model_name.endswith("small") else "multitask_large"


def build_models(case: str, config=None) -> dict[str, tuple[ModelConfig, nn.Module]]:
    """The multi-task model (the builder's default, or ``config``'s) and the two single-task
    models of ``case``, with random weights, and their model configs."""
    size = case.removeprefix("multitask_")
    multitask = (
        config.model
        if config is not None
        else ModelConfig(
            name=f"multitask_mobilenet_v3_{size}",
            num_classes=SEG_CLASSES,
            options={"det_num_classes": DET_CLASSES},
        )
    )
    seg = ModelConfig(name=f"lraspp_mobilenet_v3_{size}", num_classes=multitask.num_classes)
    det = ModelConfig(
        name=f"ssdlite320_mobilenet_v3_{size}",
        num_classes=multitask.options.get("det_num_classes", DET_CLASSES),
    )
    return {
        name: (cfg, build_model(cfg))
        for name, cfg in (("multitask", multitask), ("seg", seg), ("det", det))
    }


def bench_multitask(
    case: str, size: tuple[int, int], batch: int, precision: str, args, device: torch.device
) -> dict:
    """Median ms of the multi-task forward and of the two single-task forwards one after the
    other (and of each alone), their ratio, params and GFLOPs."""
    gen = torch.Generator().manual_seed(0)
    calibration = torch.randn(2, 3, min(size[0], 256), min(size[1], 512), generator=gen).to(device)
    x = torch.randn(batch, 3, *size, generator=gen).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    dtype = DTYPES[precision]
    nets, info = {}, {}
    for name, (cfg, model) in build_models(case, args.cfg).items():
        model = model.to(device)
        calibrate_bn_(model, lambda m=model: m(calibration))
        if name != "seg":
            (model.det if name == "multitask" else model).score_thresh = args.det_score_thresh
        info[name] = {
            "model": cfg.name,
            "options": dict(cfg.options),
            "params": sum(p.numel() for p in model.parameters()),
            "gflops_per_image": gflops_per_image(model, x[:1]),
        }
        nets[name] = prepare_for_inference(
            model,
            fuse_bn=not args.no_fuse,
            channels_last=args.channels_last,
            dtype=None if dtype == torch.float32 else dtype,
        )
    x = x.to(dtype=dtype).contiguous(memory_format=memory_format)
    fns = {
        "multitask": lambda: nets["multitask"](x),
        "separate": lambda: (nets["seg"](x), nets["det"](x)),
        "seg": lambda: nets["seg"](x),
        "det": lambda: nets["det"](x),
    }
    seconds = time_interleaved(fns, args.iters, args.warmup, device)
    ms = {name: seconds[name] * 1e3 for name in fns}
    return {
        "case": case,
        "input": f"{size[0]}x{size[1]}",
        "batch": batch,
        "precision": precision,
        "multitask_ms": ms["multitask"],
        "separate_ms": ms["separate"],
        "seg_ms": ms["seg"],
        "det_ms": ms["det"],
        "ratio": ms["multitask"] / ms["separate"],
        "multitask_min_ms": seconds["multitask_min"] * 1e3,
        "separate_min_ms": seconds["separate_min"] * 1e3,
        "models": info,
        "config": args.config if args.cfg else None,
        "ours_options": {
            "fuse_bn": not args.no_fuse,
            "channels_last": args.channels_last,
            "precision": precision,
            "score_thresh": args.det_score_thresh,
        },
    }


def format_multitask(r: dict) -> str:
    """One line: the multi-task forward against the two single-task forwards, run in turn."""
    return (
        f"{r['case']} {r['input']} batch {r['batch']} {r['precision']}: multi-task "
        f"{r['multitask_ms']:.1f} ms; segmentation {r['seg_ms']:.1f} ms + detection "
        f"{r['det_ms']:.1f} ms, run one after the other {r['separate_ms']:.1f} ms; ratio "
        f"{r['ratio']:.2f} (multi-task / both)"
    )
