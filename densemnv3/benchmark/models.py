"""The model cases: ours against torchvision on the same weights and inputs.

torchvision's model (:mod:`.reference`) gets random weights and BatchNorm statistics calibrated
on random images; its state dict is loaded into ours, so the work is identical. Ours runs the
inference path (``prepare_for_inference`` plus the options asked for), torchvision as its users
run it (eager, fp32, NCHW) unless ``--tv-same-options``. A record holds params, FLOPs, both
latencies and the max abs difference of ours (in its precision) vs torchvision fp32.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from densemnv3 import models
from densemnv3.errors import CheckpointError, UserError
from densemnv3.inference.optimize import (
    compile_for_inference,
    cuda_graph_network,
    prepare_for_inference,
)
from densemnv3.inference.settings import InferenceSettings
from densemnv3.models import build_model, load_state_dict_checked

from .reference import DET_CLASSES, DET_SIZE, SEG_CLASSES, torchvision_model, tv_network
from .timing import step, stepped, sync, time_interleaved, timed_record

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: max abs difference / max |torchvision fp32 output| that passes, per precision of ours.
REL_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 1e-1}


def parse_sizes(texts: list[str]) -> list[tuple[int, int]]:
    """``--sizes``: each ``HxW`` as (H, W)."""
    sizes = []
    for text in texts:
        try:
            h, w = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise UserError(f"--sizes {text!r}: expected HxW, e.g. 512x1024") from None
        sizes.append((h, w))
    return sizes


def case_of(model_name: str) -> str:
    """The model case of a builder name, e.g. ``lraspp_mobilenet_v3_large`` -> ``lraspp_large``."""
    head = "ssdlite" if model_name.startswith("ssdlite") else "lraspp"
    size = (
        "small"
        if model_name.endswith("small")
        else "large"
        if model_name.endswith("large")
        else None
    )
    if not model_name.startswith(("lraspp", "ssdlite")) or size is None:
        raise UserError(
            f"model.name {model_name!r}: torchvision has no counterpart to compare with"
        )
    return f"{head}_{size}"


def our_model(case: str, num_classes: int) -> nn.Module:
    """Ours for ``case``: its builder's default model."""
    builders = {
        "lraspp_large": models.lraspp_mobilenet_v3_large,
        "lraspp_small": models.lraspp_mobilenet_v3_small,
        "ssdlite_large": models.ssdlite320_mobilenet_v3_large,
        "ssdlite_small": models.ssdlite320_mobilenet_v3_small,
    }
    return builders[case](num_classes=num_classes)


def calibrate_bn_(model: nn.Module, forward: Callable[[], object]) -> None:
    """Give every BatchNorm the statistics of ``forward()``'s activations instead of (0, 1), so
    activations keep a realistic scale through the network and fp16/bf16 diffs mean something."""
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    with torch.no_grad():
        for _ in range(2):
            forward()
    for m in norms:
        m.eval()


def build_pair(
    case: str, device: torch.device, calibration: Tensor, config=None
) -> tuple[nn.Module, nn.Module, bool]:
    """(torchvision's model, ours, same_weights) in eval mode; BatchNorm statistics calibrated on
    ``calibration`` (normalised images). Ours is the builder's default model, or the model of
    ``config`` (a :class:`~densemnv3.config.Config`), which keeps its own weights when
    torchvision's do not fit it."""
    detection = case.startswith("ssdlite")
    num_classes = config.model.num_classes if config else DET_CLASSES if detection else SEG_CLASSES
    tv = torchvision_model(case, num_classes).to(device).eval()
    calibrate_bn_(
        tv, (lambda: tv_network(tv, calibration)) if detection else (lambda: tv(calibration))
    )
    ours = our_model(case, num_classes) if config is None else build_model(config.model)
    try:
        load_state_dict_checked(ours, tv.state_dict())
        same_weights = True
    except CheckpointError:
        same_weights = False
    return tv, ours.to(device).eval(), same_weights


def random_pair(
    case: str, size: tuple[int, int], device: torch.device, gen: torch.Generator, config=None
) -> tuple[tuple[int, int], nn.Module, nn.Module, bool]:
    """The size ``case`` runs at (SSDLite: always :data:`DET_SIZE`) and :func:`build_pair`'s
    (torchvision's model, ours, same_weights), BatchNorm calibrated on two random images drawn
    from ``gen`` (LR-ASPP's at most 256x512)."""
    detection = case.startswith("ssdlite")
    size = DET_SIZE if detection else size
    calibration = torch.randn(
        2, 3, *(size if detection else (min(size[0], 256), min(size[1], 512))), generator=gen
    )
    return size, *build_pair(case, device, calibration.to(device), config)


@dataclass
class RandomCase:
    """A model case ready to time, from :func:`random_case`."""

    detection: bool  # an SSDLite case
    size: tuple[int, int]  # the input's H, W (SSDLite: always DET_SIZE)
    tv: nn.Module  # torchvision's model, eval mode
    ours: nn.Module  # ours, eval mode, not yet on the inference path
    same_weights: bool  # ours holds torchvision's weights
    x: Tensor  # the batch, normalised
    images01: Tensor | None  # SSDLite: the same images in [0, 1], as torchvision takes them
    reference: list[Tensor]  # torchvision fp32 on ``x`` (SSDLite: class logits and box deltas)
    params: int  # ours'
    gflops: float  # ours', per image
    gen: torch.Generator  # where the draws above left it, for any more


def random_case(
    case: str, size: tuple[int, int], batch: int, args, device: torch.device
) -> RandomCase:
    """:func:`random_pair`'s models and a random batch of ``batch`` images at ``size`` on
    ``device``, drawn from one generator seeded 0; SSDLite with ``--det-score-thresh`` and
    ``--det-nms``."""
    detection = case.startswith("ssdlite")
    gen = torch.Generator().manual_seed(0)
    size, tv, ours, same_weights = random_pair(case, size, device, gen, args.cfg)
    params = sum(p.numel() for p in ours.parameters())
    images01 = None
    if detection:  # torchvision takes [0, 1] images and normalises them itself
        tv.score_thresh = ours.score_thresh = args.det_score_thresh
        ours.nms_impl = args.det_nms
        images01 = torch.rand(batch, 3, *size, generator=gen).to(device)
        x = (images01 - 0.5) / 0.5
    else:
        x = torch.randn(batch, 3, *size, generator=gen).to(device)
    gflops = gflops_per_image(ours, x[:1])
    with torch.inference_mode():
        out = tv_network(tv, x) if detection else tv(x)
        reference = [out["cls_logits"], out["bbox_regression"]] if detection else [out["out"]]
    return RandomCase(
        detection, size, tv, ours, same_weights, x, images01, reference, params, gflops, gen
    )


def add_detection_fields(
    record: dict, setup: RandomCase, seconds: dict[str, float], args, device: torch.device
) -> None:
    """An SSDLite record's fields: the candidates per image (class scores over the threshold, at
    most torchvision's top-k per class), both models' score threshold, ours' NMS path, and the
    network-alone times."""
    probs = setup.reference[0].float().softmax(-1)[..., 1:]
    per_class = (probs > args.det_score_thresh).sum(1).clamp(max=setup.tv.topk_candidates)
    record["candidates_per_image"] = float(per_class.sum(-1).float().mean())
    record["ours_options"]["score_thresh"] = record["tv_options"]["score_thresh"] = (
        args.det_score_thresh
    )
    record["ours_options"]["nms_impl"] = resolved_nms_impl(args.det_nms, device)
    record.update(
        ours_net_ms=seconds["ours_net"] * 1e3,
        tv_net_ms=seconds["tv_net"] * 1e3,
        net_ratio=seconds["tv_net"] / seconds["ours_net"],
    )


def output_difference(got: list[Tensor], reference: list[Tensor]) -> dict[str, float]:
    """``max_abs_diff``: the largest absolute difference of ``got`` from ``reference`` (matching
    lists of outputs), ``ref_max_abs``: the largest magnitude of the reference, and ``rel_diff``:
    the one over the other."""
    diff = max(float((g - r.float()).abs().max()) for g, r in zip(got, reference))
    scale = max(float(r.float().abs().max()) for r in reference)
    return {"max_abs_diff": diff, "ref_max_abs": scale, "rel_diff": diff / max(scale, 1e-12)}


def optimize_ours(ours: nn.Module, x: Tensor, args, dtype: torch.dtype) -> tuple[nn.Module, float]:
    """Ours on the inference path with the options asked for, and the compile time (s)."""
    ours = prepare_for_inference(
        ours,
        fuse_bn=not args.no_fuse,
        channels_last=args.channels_last,
        dtype=None if dtype == torch.float32 else dtype,
    )
    seconds = 0.0
    with torch.inference_mode():
        if args.cuda_graphs and not args.compile:  # with --compile, Inductor captures the graphs
            ours = cuda_graph_network(ours, x)
        if args.compile:
            ours = compile_for_inference(ours, mode=args.compile_mode)
            start = time.perf_counter()
            step(args)
            ours(x)
            sync(x.device)
            seconds = time.perf_counter() - start
    return ours, seconds


def bench_model(
    case: str, size: tuple[int, int], batch: int, precision: str, args, device: torch.device
) -> dict:
    """Params, FLOPs, interleaved latency of ours vs torchvision, and their output difference."""
    dtype = DTYPES[precision]
    setup = random_case(case, size, batch, args, device)
    detection, tv, ours, x = setup.detection, setup.tv, setup.ours, setup.x

    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x_ours = x.to(dtype=dtype).contiguous(memory_format=memory_format)
    ours, compile_seconds = optimize_ours(ours, x_ours, args, dtype)
    with torch.inference_mode():
        step(args)
        got = ours.predict_raw(x_ours)[:2] if detection else [ours(x_ours)]
        got = [t.float().clone() for t in got]
    tv_dtype, tv_format = torch.float32, torch.contiguous_format
    if args.tv_same_options and detection and dtype == torch.bfloat16:
        raise UserError(
            "--tv-same-options: torchvision's SSD postprocess cannot run in bf16 (its NMS "
            "has no bfloat16 kernel); use fp16 or drop --tv-same-options"
        )
    if args.tv_same_options:
        tv_dtype, tv_format = dtype, memory_format
        tv.to(dtype=tv_dtype, memory_format=tv_format)
    x_tv = x.to(dtype=tv_dtype).contiguous(memory_format=tv_format)

    fns = {"ours": stepped(lambda: ours(x_ours), args)}
    if detection and dtype != torch.float32:
        fns["ours"] = stepped(lambda: detect_fp32_postprocess(ours, x_ours), args)
    if detection:
        tv_images = list(setup.images01.to(dtype=tv_dtype))
        fns.update(
            tv=lambda: tv(tv_images),
            ours_net=stepped(lambda: ours.predict_raw(x_ours), args),
            tv_net=lambda: tv_network(tv, x_tv),
        )
    else:
        fns["tv"] = lambda: tv(x_tv)["out"]
    seconds = time_interleaved(fns, args.iters, args.warmup, device)

    tolerance = REL_TOLERANCE[precision]
    if precision == "fp32" and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        tolerance = 5e-3  # cuDNN runs fp32 convolutions in TF32 (10-bit mantissa) by default
    record = timed_record(case, f"{setup.size[0]}x{setup.size[1]}", batch, precision, seconds)
    record.update(
        params=setup.params,
        gflops_per_image=setup.gflops,
        **output_difference(got, setup.reference),
        tolerance=tolerance,
        compile_seconds=compile_seconds,
        ours_options={
            "fuse_bn": not args.no_fuse,
            "channels_last": args.channels_last,
            "precision": precision,
            "memory_format": "channels_last" if args.channels_last else "nchw",
            "compile": (args.compile_mode if device.type == "cuda" else "freezing")
            if args.compile
            else None,
            "cuda_graphs": args.cuda_graphs,
        },
        tv_options={
            "precision": precision if args.tv_same_options else "fp32",
            "channels_last": args.channels_last and args.tv_same_options,
        },
    )
    # Only the builders' defaults are torchvision's architecture; a config may change it.
    record["check_ok"] = (
        record["rel_diff"] <= tolerance if setup.same_weights and args.cfg is None else None
    )
    record["same_weights"] = setup.same_weights
    if args.cfg is not None:
        record["ours_options"]["config"] = args.config
    if detection:
        add_detection_fields(record, setup, seconds, args, device)
    return record


def resolved_nms_impl(impl: str, device: torch.device) -> str:
    if impl != "auto":
        return impl
    return "per_image" if device.type == "cpu" else "batched"  # SSDLite's choice by device


def detect_fp32_postprocess(model: nn.Module, x: Tensor):
    """SSDLite in reduced precision: network in ``x``'s dtype, postprocess in fp32 (torchvision's
    NMS has no bfloat16 kernel, and fp16 box corners are coarse: 0.25 px at 320)."""
    cls_logits, bbox_regression, anchors = model.predict_raw(x)
    return model.postprocess(
        cls_logits.float(), bbox_regression.float(), anchors.float(), x.shape[-2:]
    )


def gflops_per_image(model: nn.Module, x: Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return counter.get_total_flops() / x.shape[0] / 1e9


def with_settings(args, settings: InferenceSettings) -> argparse.Namespace:
    """``args`` with one variant's precision, memory format, compile and CUDA graphs."""
    mode = args.compile_mode or settings.compile_mode
    return argparse.Namespace(
        **{
            **vars(args),
            "precision": [settings.precision],
            "channels_last": settings.channels_last,
            "compile": settings.compile,
            "cuda_graphs": settings.cuda_graphs,
            "compile_mode": mode,
        }
    )
