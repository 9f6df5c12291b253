#!/usr/bin/env python
"""Speed of densemnv3 vs torchvision on the same weights and inputs, measured interleaved.

``python tools/benchmark.py [--model lraspp_large|lraspp_small|ssdlite_large|ssdlite_small|
data_seg|data_det|all] [--device cpu|cuda] [--batch-sizes 1 8] [--sizes 512x1024 1024x2048]
[--precision fp32 fp16 bf16] [--threads 2] [--iters N] [--warmup N] [--json out.json]
[--memory-format nchw|channels_last] [--compile [--compile-mode MODE]] [--cuda-graphs]
[--variants default fp16+graphs bf16+compile ...] [--tv-same-options] [--quick]
[--det-score-thresh T] [--det-nms auto|per_image|batched]``

Ours runs with the device's inference defaults (``densemnv3.inference.settings``: CUDA fp16 NCHW,
CPU fp32 channels_last) unless the options say otherwise; ``--variants`` times several combinations in one
run (each ``+``-joined from a precision, ``nchw``/``channels_last``, ``compile``, ``graphs``;
``default`` is the device's defaults), each against torchvision eager fp32 and each checked against
torchvision's fp32 output within its precision's tolerance (exit code 1 if one is outside).

Model cases: torchvision's model (``lraspp_mobilenet_v3_large``, ``ssdlite320_mobilenet_v3_large``
and the Small equivalents assembled the way torchvision assembles the Large ones) is built with
random weights and calibrated BatchNorm statistics; the same state dict is loaded into ours, so
the work is identical. Ours runs the inference path (``prepare_for_inference``: BatchNorm folded,
plus the options asked for); torchvision runs as its users run it (eager, fp32, NCHW) unless
``--tv-same-options``. SSDLite is timed end to end (forward + postprocess + NMS) at 320x320:
torchvision gets [0, 1] images (its resize is then a no-op), ours the same images normalised; the
network alone is timed too. Every case prints the max abs difference of ours (in its precision)
vs torchvision fp32 on the same input (SSDLite: class logits and box deltas).

Data cases: one sample of decode + training augmentation. ``data_seg``: a 1024x2048 PNG + label
through ``seg_train_transform((512, 1024))`` vs a torchvision-references-style PIL pipeline
(random resize 0.5-2, pad, crop, flip, ColorJitter, to tensor, normalise); ours reads the pair from
the decoded-sample cache (``data.decoded_cache``), and the same pipeline decoding the PNGs is timed
too (``ours_uncached_ms``). ``data_det``: a
480x640 image + boxes through ``det_train_transform(320)`` vs torchvision references' SSDLite
``transforms.v2`` pipeline (+ resize 320, normalise). Both run one thread, as a loader worker.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from densemnv3 import models  # noqa: E402
from densemnv3.errors import UserError  # noqa: E402
from densemnv3.inference.optimize import (  # noqa: E402
    compile_for_inference,
    cuda_graph_network,
    prepare_for_inference,
)
from densemnv3.inference.settings import (  # noqa: E402
    InferenceSettings,
    add_inference_arguments,
    variants_from_args,
)
from densemnv3.models import load_state_dict_checked  # noqa: E402
from densemnv3.utils.cli import add_set_argument, run_main  # noqa: E402

MODEL_CASES = ("lraspp_large", "lraspp_small", "ssdlite_large", "ssdlite_small")
DATA_CASES = ("data_seg", "data_det")
TRAIN_CASES = ("train_seg",)
TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "lraspp_cityscapes.py"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: max abs difference / max |torchvision fp32 output| that passes, per precision of ours.
REL_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 1e-1}
SEG_CLASSES, DET_CLASSES, DET_SIZE = 19, 91, (320, 320)


# --------------------------------------------------------------------------- models


def torchvision_model(case: str, num_classes: int) -> nn.Module:
    """torchvision's model for ``case``; for the Small variants, which torchvision has no builder
    for, the same assembly its Large builders use (its own, private, helpers)."""
    import torchvision.models as tvm

    if case == "lraspp_large":
        return tvm.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    if case == "ssdlite_large":
        return tvm.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    if case == "lraspp_small":
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.models.segmentation.lraspp import LRASPP

        features = tvm.mobilenet_v3_small(dilated=True).features
        stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
        low, high = stages[-4], stages[-1]  # as torchvision's _lraspp_mobilenetv3
        backbone = IntermediateLayerGetter(features, {str(low): "low", str(high): "high"})
        return LRASPP(backbone, features[low].out_channels, features[high].out_channels, num_classes)
    if case == "ssdlite_small":
        from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
        from torchvision.models.detection.ssd import SSD
        from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor

        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        backbone = _mobilenet_extractor(tvm.mobilenet_v3_small(norm_layer=norm, reduced_tail=True), 6, norm)
        anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
        with torch.no_grad():
            channels = [f.shape[1] for f in backbone.eval()(torch.zeros(1, 3, *DET_SIZE)).values()]
        head = SSDLiteHead(channels, anchors.num_anchors_per_location(), num_classes, norm)
        return SSD(backbone, anchors, DET_SIZE, num_classes, head=head, score_thresh=0.001, nms_thresh=0.55,
                   detections_per_img=300, topk_candidates=300, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    raise UserError(f"unknown model case {case!r}; choose from {', '.join(MODEL_CASES)}")


def case_of(model_name: str) -> str:
    """The model case of a builder name, e.g. ``lraspp_mobilenet_v3_large`` -> ``lraspp_large``."""
    head = "ssdlite" if model_name.startswith("ssdlite") else "lraspp"
    size = "small" if model_name.endswith("small") else "large" if model_name.endswith("large") else None
    if not model_name.startswith(("lraspp", "ssdlite")) or size is None:
        raise UserError(f"model.name {model_name!r}: torchvision has no counterpart to compare with")
    return f"{head}_{size}"


def our_model(case: str, num_classes: int) -> nn.Module:
    builders = {
        "lraspp_large": models.lraspp_mobilenet_v3_large, "lraspp_small": models.lraspp_mobilenet_v3_small,
        "ssdlite_large": models.ssdlite320_mobilenet_v3_large, "ssdlite_small": models.ssdlite320_mobilenet_v3_small,
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


def _tv_network(tv: nn.Module, x: Tensor):
    """torchvision SSD's network without its transform and postprocess."""
    return tv.head(list(tv.backbone(x).values()))


def build_pair(
    case: str, device: torch.device, calibration: Tensor, config=None
) -> tuple[nn.Module, nn.Module, bool]:
    """(torchvision's model, ours, same_weights) in eval mode; BatchNorm statistics calibrated on
    ``calibration`` (normalised images). Ours is the builder's default model, or the model of
    ``config`` (a :class:`~densemnv3.config.Config`), which keeps its own weights when
    torchvision's do not fit it."""
    from densemnv3.errors import CheckpointError

    detection = case.startswith("ssdlite")
    num_classes = config.model.num_classes if config else DET_CLASSES if detection else SEG_CLASSES
    tv = torchvision_model(case, num_classes).to(device).eval()
    calibrate_bn_(tv, (lambda: _tv_network(tv, calibration)) if detection else (lambda: tv(calibration)))
    if config is None:
        ours = our_model(case, num_classes)
    else:
        from densemnv3.models import build_model

        ours = build_model(config.model)
    try:
        load_state_dict_checked(ours, tv.state_dict())
        same_weights = True
    except CheckpointError:
        same_weights = False
    return tv, ours.to(device).eval(), same_weights


def optimize_ours(ours: nn.Module, x: Tensor, args, dtype: torch.dtype) -> tuple[nn.Module, float]:
    """Ours on the inference path with the options asked for, and the compile time (s)."""
    ours = prepare_for_inference(
        ours, fuse_bn=not args.no_fuse, channels_last=args.channels_last,
        dtype=None if dtype == torch.float32 else dtype,
    )
    seconds = 0.0
    with torch.inference_mode():
        if args.cuda_graphs and not args.compile:  # with --compile, Inductor captures the graphs
            ours = cuda_graph_network(ours, x)
        if args.compile:
            ours = compile_for_inference(ours, mode=args.compile_mode)
            start = time.perf_counter()
            _step(args)
            ours(x)
            _sync(x.device)
            seconds = time.perf_counter() - start
    return ours, seconds


def bench_model(case: str, size: tuple[int, int], batch: int, precision: str, args, device: torch.device) -> dict:
    """Params, FLOPs, interleaved latency of ours vs torchvision, and their output difference."""
    detection = case.startswith("ssdlite")
    size = DET_SIZE if detection else size
    dtype = DTYPES[precision]
    gen = torch.Generator().manual_seed(0)
    calibration = torch.randn(2, 3, *(size if detection else (min(size[0], 256), min(size[1], 512))), generator=gen)
    tv, ours, same_weights = build_pair(case, device, calibration.to(device), args.cfg)
    params = sum(p.numel() for p in ours.parameters())
    if detection:  # torchvision takes [0, 1] images and normalises them itself
        tv.score_thresh = ours.score_thresh = args.det_score_thresh
        ours.nms_impl = args.det_nms
        images01 = torch.rand(batch, 3, *size, generator=gen).to(device)
        x = (images01 - 0.5) / 0.5
    else:
        x = torch.randn(batch, 3, *size, generator=gen).to(device)
    gflops = _gflops_per_image(ours, x[:1])
    with torch.inference_mode():
        if detection:
            out = _tv_network(tv, x)
            reference = [out["cls_logits"], out["bbox_regression"]]
        else:
            reference = [tv(x)["out"]]

    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x_ours = x.to(dtype=dtype).contiguous(memory_format=memory_format)
    ours, compile_seconds = optimize_ours(ours, x_ours, args, dtype)
    with torch.inference_mode():
        _step(args)
        got = ours.predict_raw(x_ours)[:2] if detection else [ours(x_ours)]
        got = [t.float().clone() for t in got]
    tv_dtype, tv_format = torch.float32, torch.contiguous_format
    if args.tv_same_options and detection and dtype == torch.bfloat16:
        raise UserError("--tv-same-options: torchvision's SSD postprocess cannot run in bf16 (its NMS "
                        "has no bfloat16 kernel); use fp16 or drop --tv-same-options")
    if args.tv_same_options:
        tv_dtype, tv_format = dtype, memory_format
        tv.to(dtype=tv_dtype, memory_format=tv_format)
    x_tv = x.to(dtype=tv_dtype).contiguous(memory_format=tv_format)

    fns = {"ours": _stepped(lambda: ours(x_ours), args)}
    if detection and dtype != torch.float32:
        fns["ours"] = _stepped(lambda: _detect_fp32_postprocess(ours, x_ours), args)
    if detection:
        tv_images = list(images01.to(dtype=tv_dtype))
        fns.update(tv=lambda: tv(tv_images), ours_net=_stepped(lambda: ours.predict_raw(x_ours), args),
                   tv_net=lambda: _tv_network(tv, x_tv))
    else:
        fns["tv"] = lambda: tv(x_tv)["out"]
    seconds = time_interleaved(fns, args.iters, args.warmup, device)

    diff = max(float((g - r.float()).abs().max()) for g, r in zip(got, reference))
    scale = max(float(r.float().abs().max()) for r in reference)
    tolerance = REL_TOLERANCE[precision]
    if precision == "fp32" and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        tolerance = 5e-3  # cuDNN runs fp32 convolutions in TF32 (10-bit mantissa) by default
    record = _record(case, f"{size[0]}x{size[1]}", batch, precision, seconds)
    record.update(
        params=params, gflops_per_image=gflops, max_abs_diff=diff, ref_max_abs=scale,
        rel_diff=diff / max(scale, 1e-12), tolerance=tolerance, compile_seconds=compile_seconds,
        ours_options={
            "fuse_bn": not args.no_fuse, "channels_last": args.channels_last, "precision": precision,
            "memory_format": "channels_last" if args.channels_last else "nchw",
            "compile": (args.compile_mode if device.type == "cuda" else "freezing") if args.compile else None,
            "cuda_graphs": args.cuda_graphs,
        },
        tv_options={"precision": precision if args.tv_same_options else "fp32",
                    "channels_last": args.channels_last and args.tv_same_options},
    )
    # Only the builders' defaults are torchvision's architecture; a config may change it.
    record["check_ok"] = record["rel_diff"] <= tolerance if same_weights and args.cfg is None else None
    record["same_weights"] = same_weights
    if args.cfg is not None:
        record["ours_options"]["config"] = args.config
    if detection:
        probs = reference[0].float().softmax(-1)[..., 1:]
        per_class = (probs > args.det_score_thresh).sum(1).clamp(max=tv.topk_candidates)
        record["candidates_per_image"] = float(per_class.sum(-1).float().mean())
        record["ours_options"]["score_thresh"] = record["tv_options"]["score_thresh"] = args.det_score_thresh
        record["ours_options"]["nms_impl"] = _resolved_nms_impl(args.det_nms, device)
        record.update(ours_net_ms=seconds["ours_net"] * 1e3, tv_net_ms=seconds["tv_net"] * 1e3,
                      net_ratio=seconds["tv_net"] / seconds["ours_net"])
    return record


def _resolved_nms_impl(impl: str, device: torch.device) -> str:
    if impl != "auto":
        return impl
    return "per_image" if device.type == "cpu" else "batched"  # SSDLite's choice by device


def _detect_fp32_postprocess(model: nn.Module, x: Tensor):
    """SSDLite in reduced precision: network in ``x``'s dtype, postprocess in fp32 (torchvision's
    NMS has no bfloat16 kernel, and fp16 box corners are coarse: 0.25 px at 320)."""
    cls_logits, bbox_regression, anchors = model.predict_raw(x)
    return model.postprocess(cls_logits.float(), bbox_regression.float(), anchors.float(), x.shape[-2:])


def _gflops_per_image(model: nn.Module, x: Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return counter.get_total_flops() / x.shape[0] / 1e9


def _step(args) -> None:
    if args.compile and args.compile_mode in ("reduce-overhead", "max-autotune") and args.device.startswith("cuda"):
        torch.compiler.cudagraph_mark_step_begin()


def _stepped(fn: Callable, args) -> Callable:
    def call():
        _step(args)
        return fn()

    return call


# --------------------------------------------------------------------------- data


def bench_data(case: str, args) -> dict:
    """One training sample: decode + augmentation, ours vs torchvision-references style."""
    import cv2

    threads = torch.get_num_threads()
    cv2_threads = cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fns, size = (_seg_pipelines if case == "data_seg" else _det_pipelines)(Path(tmp), args.quick)
            seconds = time_interleaved(fns, args.iters, args.warmup, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
    record = _record(case, size, 1, "uint8->fp32", seconds)
    record.update(ours_options={"threads": 1}, tv_options={"threads": 1})
    if "ours_uncached" in seconds:  # ours reads the decoded cache; the same pipeline decoding PNGs
        record["ours_options"]["decoded_cache"] = True
        record.update(ours_uncached_ms=seconds["ours_uncached"] * 1e3,
                      ours_uncached_min_ms=seconds["ours_uncached_min"] * 1e3)
    return record


def _seg_pipelines(root: Path, quick: bool):
    import random

    import numpy as np
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision import transforms as T

    from densemnv3.data.cache import write_decoded_cache
    from densemnv3.data.cityscapes import CityscapesSegmentation
    from densemnv3.data.labels import ID_TO_TRAIN_ID
    from densemnv3.data.synthetic import make_synthetic
    from densemnv3.data.transforms import IMAGENET_MEAN, IMAGENET_STD, seg_train_transform

    full, crop = ((128, 256), (64, 128)) if quick else ((1024, 2048), (512, 1024))
    make_synthetic(root, train=2, val=1, size=full, progress=False)
    dataset = CityscapesSegmentation(root, "train", seg_train_transform(crop))
    cache = write_decoded_cache(dataset, root / "decoded", progress=False)
    cached = CityscapesSegmentation(root, "train", seg_train_transform(crop), decoded_cache=cache)
    jitter = T.ColorJitter(0.3, 0.3, 0.3, 0.05)
    lut = torch.as_tensor(ID_TO_TRAIN_ID.astype(np.int64))
    calls = iter(range(10**9))

    def pad(img, fill):
        pad_h, pad_w = max(crop[0] - img.size[1], 0), max(crop[1] - img.size[0], 0)
        return TF.pad(img, [0, 0, pad_w, pad_h], fill=fill) if pad_h or pad_w else img

    def reference():  # torchvision references/segmentation/transforms.py, composed as its presets
        image_path, label_path = dataset.samples[next(calls) % len(dataset)]
        image, target = Image.open(image_path).convert("RGB"), Image.open(label_path)
        short = random.randint(full[0] // 2, full[0] * 2)
        image = TF.resize(image, short)
        target = TF.resize(target, short, interpolation=T.InterpolationMode.NEAREST)
        image, target = pad(image, 0), pad(target, 255)
        box = T.RandomCrop.get_params(image, crop)
        image, target = TF.crop(image, *box), TF.crop(target, *box)
        if random.random() < 0.5:
            image, target = TF.hflip(image), TF.hflip(target)
        if random.random() < 0.5:
            image = jitter(image)
        image = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
        target = torch.as_tensor(np.array(target), dtype=torch.int64)
        return image, torch.where(target == 255, target, lut[target])

    fns = {"ours": lambda: cached[next(calls) % len(cached)], "tv": reference,
           "ours_uncached": lambda: dataset[next(calls) % len(dataset)]}
    return fns, f"{full[0]}x{full[1]}->{crop[0]}x{crop[1]}"


def _det_pipelines(root: Path, quick: bool):
    from PIL import Image
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from densemnv3.data.coco import CocoDetection
    from densemnv3.data.synthetic import make_synthetic
    from densemnv3.data.transforms import det_train_transform

    full, out = ((120, 160), 96) if quick else ((480, 640), 320)
    make_synthetic(root, train=2, val=1, size=full, progress=False)
    dataset = CocoDetection(root, root / "annotations" / "instances_train.json", det_train_transform(out))
    raw = CocoDetection(root, root / "annotations" / "instances_train.json")
    pipeline = v2.Compose([  # torchvision references/detection/presets.py, "ssdlite"
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill={tv_tensors.Image: (127, 127, 127), "others": 0}),
        v2.RandomIoUCrop(),
        v2.RandomHorizontalFlip(p=0.5),
        v2.Resize((out, out)),
        v2.SanitizeBoundingBoxes(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([0.5] * 3, [0.5] * 3),
    ])
    targets = [raw[i][1] for i in range(len(raw))]  # boxes (xyxy pixels) and labels, decoded once
    calls = iter(range(10**9))

    def reference():
        index = next(calls) % len(raw)
        image = Image.open(raw.image_path(raw.ids[index])).convert("RGB")
        target = {
            "boxes": tv_tensors.BoundingBoxes(targets[index]["boxes"], format="XYXY",
                                              canvas_size=(image.height, image.width)),
            "labels": targets[index]["labels"],
        }
        return pipeline(image, target)

    return {"ours": lambda: dataset[next(calls) % len(dataset)], "tv": reference}, f"{full[0]}x{full[1]}->{out}x{out}"


# --------------------------------------------------------------------------- training


def bench_train(args, device: torch.device) -> dict:
    """Training images/s of a segmentation config on the device alone vs fed by its loader."""
    from densemnv3.config import load_config
    from densemnv3.engine.throughput import training_throughput
    from densemnv3.tasks import build_task

    cfg = args.cfg or load_config(TRAIN_CONFIG, args.overrides)
    cfg.data.synthetic = None
    cfg.data.workers = cfg.data.workers if args.workers is None else args.workers
    size = tuple(int(v) for v in args.synthetic_size.lower().split("x"))
    if args.quick:
        cfg.data.crop_size, cfg.data.batch_size = (size[0] // 2, size[1] // 2), 2
    with tempfile.TemporaryDirectory() as tmp:
        cfg.data.root = args.data_root or _synthetic_root(Path(tmp), size, args.synthetic_images)
        variants = {"loader": {}}
        if args.decoded_cache:
            variants["cached"] = {"decoded_cache": _decoded_cache(cfg, Path(tmp) / "decoded")}
        rates = training_throughput(cfg, build_task, device=str(device), steps=args.iters,
                                    warmup=args.warmup, loader_variants=variants)
    amp = cfg.train.amp and device.type == "cuda"
    crop = "x".join(str(v) for v in cfg.data.crop_size)
    return {"case": "train_seg", "input": f"{'synthetic ' + args.synthetic_size if not args.data_root else args.data_root}"
            f" -> {crop}", "precision": "amp fp16" if amp else "fp32", "config": str(args.config or TRAIN_CONFIG),
            "channels_last": cfg.train.channels_last, "decoded_cache": cfg.data.decoded_cache, **rates}


def _synthetic_root(tmp: Path, size: tuple[int, int], images: int) -> str:
    from densemnv3.data.synthetic import make_synthetic

    return str(make_synthetic(tmp / "synthetic", train=images, val=1, size=size, progress=False))


def _decoded_cache(cfg, out: Path) -> str:
    from densemnv3.data.cache import write_decoded_cache
    from densemnv3.data.cityscapes import CityscapesSegmentation

    dataset = CityscapesSegmentation(cfg.data.root, cfg.data.train_split, skip_bad=cfg.data.skip_bad)
    return str(write_decoded_cache(dataset, out, progress=False))


def format_train(r: dict) -> str:
    """One line per loader variant: images/s on the device alone, fed by the loader, ratio."""
    lines = []
    for name in ("loader", "cached"):
        if f"{name}_img_s" in r:
            lines.append(
                f"{r['case']} {r['input']} batch {r['batch']} {r['precision']}, {r['workers']} workers"
                f"{', decoded cache' if name == 'cached' or r['decoded_cache'] else ''}: on-device step "
                f"{r['device_img_s']:.1f} img/s, loader-fed {r[f'{name}_img_s']:.1f} img/s, "
                f"ratio {r[f'{name}_ratio']:.2f}"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- timing, report


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
                times[name].append(_time_call(fns[name], device))
    medians = {name: statistics.median(t) for name, t in times.items()}
    return medians | {f"{name}_min": min(t) for name, t in times.items()}


def _time_call(fn: Callable[[], object], device: torch.device) -> float:
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _record(case: str, size: str, batch: int, precision: str, seconds: dict[str, float]) -> dict:
    ours_s, tv_s = seconds["ours"], seconds["tv"]
    return {
        "case": case, "input": size, "batch": batch, "precision": precision,
        "ours_ms": ours_s * 1e3, "tv_ms": tv_s * 1e3,
        "ours_img_s": batch / ours_s, "tv_img_s": batch / tv_s, "ratio": tv_s / ours_s,
        "ours_min_ms": seconds["ours_min"] * 1e3, "tv_min_ms": seconds["tv_min"] * 1e3,
    }


def format_table(results: list[dict]) -> str:
    """A markdown table of the results (ratio = ours throughput / torchvision throughput)."""
    head = ("| case | input | batch | precision | ours ms | torchvision ms | ours img/s | torchvision img/s "
            "| ratio | GFLOPs/img | params M | max abs diff (rel) | notes |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        gflops = f"{r['gflops_per_image']:.2f}" if "gflops_per_image" in r else "-"
        params = f"{r['params'] / 1e6:.3f}" if "params" in r else "-"
        diff = "-"
        if "max_abs_diff" in r:
            flag = {True: "", False: " MISMATCH", None: " not the same model"}[r["check_ok"]]
            diff = f"{r['max_abs_diff']:.1e} ({r['rel_diff']:.1e}{flag})"
        lines.append(
            f"| {r['case']} | {r['input']} | {r['batch']} | {r['precision']} | {r['ours_ms']:.1f} | {r['tv_ms']:.1f} "
            f"| {r['ours_img_s']:.2f} | {r['tv_img_s']:.2f} | {r['ratio']:.2f}x | {gflops} | {params} | {diff} "
            f"| {_notes(r)} |"
        )
        if "ours_net_ms" in r:
            lines.append(
                f"| {r['case']} (network only) | {r['input']} | {r['batch']} | {r['precision']} "
                f"| {r['ours_net_ms']:.1f} | {r['tv_net_ms']:.1f} | {r['batch'] / r['ours_net_ms'] * 1e3:.2f} "
                f"| {r['batch'] / r['tv_net_ms'] * 1e3:.2f} | {r['net_ratio']:.2f}x | | | | no postprocess |"
            )
    return "\n".join(lines)


def _notes(r: dict) -> str:
    notes = []
    options = r.get("ours_options", {})
    on = [k for k in ("channels_last", "cuda_graphs") if options.get(k)]
    if options.get("compile"):
        on.append(f"compile={options['compile']} ({r['compile_seconds']:.0f} s)")
    if options.get("fuse_bn") is False:
        on.append("no BN folding")
    if "ours_uncached_ms" in r:
        on.append(f"decoded cache (decoding the PNGs: {r['ours_uncached_ms']:.1f} ms)")
    if options.get("config"):
        on.insert(0, f"{options['config']}" + ("" if r.get("same_weights") else " (own weights)"))
    if on:
        notes.append("ours: " + ", ".join(on))
    if r.get("tv_options", {}).get("precision", "fp32") != "fp32" or r.get("tv_options", {}).get("channels_last"):
        notes.append("torchvision: same options")
    if "candidates_per_image" in r:
        notes.append(f"{r['candidates_per_image']:.0f} candidates/img above {options['score_thresh']:g}")
    if options.get("nms_impl"):
        notes.append(f"{options['nms_impl']} NMS")
    return "; ".join(notes)


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torchvision

    info = {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["lraspp_large"], choices=(*MODEL_CASES, *DATA_CASES, *TRAIN_CASES, "all"))
    parser.add_argument("--config", help="ours = this config's model (--model then names only data cases)")
    add_set_argument(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="(default 1)")
    parser.add_argument("--sizes", nargs="+", default=None,
                        help="HxW of the LR-ASPP input (default 512x1024; SSDLite always runs at 320x320)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per model (default 10, CUDA 30)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 2, CUDA 10)")
    parser.add_argument("--json", help="also write the results here")
    add_inference_arguments(parser, multi_precision=True)
    parser.add_argument("--variants", nargs="+", metavar="SPEC",
                        help="combinations to time, e.g. default fp16+graphs fp16+compile bf16+compile+graphs")
    parser.add_argument("--no-fuse", action="store_true", help="ours without BatchNorm folding")
    parser.add_argument("--compile-mode", default=None,
                        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                        help="torch.compile mode on CUDA (default: max-autotune with --cuda-graphs, else "
                             "max-autotune-no-cudagraphs; CPU uses Inductor freezing instead)")
    parser.add_argument("--tv-same-options", action="store_true",
                        help="give torchvision ours' precision and memory format too")
    parser.add_argument(
        "--det-score-thresh", type=float, default=0.001,
        help="SSDLite score threshold of both models (torchvision's 0.001: with random weights every "
             "class of every box passes, the heaviest postprocess; 0.5: none does, the lightest)",
    )
    parser.add_argument("--det-nms", default="auto", choices=("auto", "per_image", "batched"),
                        help="ours' SSDLite NMS path (auto: per_image on CPU, batched on GPUs)")
    parser.add_argument("--data-root", help="train_seg: a Cityscapes root (default: a synthetic one)")
    parser.add_argument("--synthetic-size", default=None, help="train_seg: HxW of the synthetic images "
                        "(default 1024x2048)")
    parser.add_argument("--synthetic-images", type=int, default=16, help="train_seg: synthetic train images")
    parser.add_argument("--workers", type=int, default=None, help="train_seg: loader workers (default: config's)")
    parser.add_argument("--decoded-cache", action="store_true",
                        help="train_seg: also time the loader reading a decoded cache of the root, built in a "
                             "temporary folder (~8 MB per 1024x2048 image)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 iteration (a smoke test)")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or (["64x128"] if args.quick else ["512x1024"])
    args.batch_sizes = args.batch_sizes or [1]
    args.synthetic_size = args.synthetic_size or ("64x128" if args.quick else "1024x2048")
    if args.quick:
        args.iters = 1 if args.iters is None else args.iters
        args.warmup = 1 if args.warmup is None else args.warmup
    cuda = args.device.startswith("cuda")
    args.iters = args.iters if args.iters is not None else (30 if cuda else 10)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    return args


def main(argv: list[str] | None = None) -> int:
    from densemnv3.utils.device import resolve_device

    args = parse_args(argv)
    device = torch.device(resolve_device(args.device))
    variants = variants_from_args(args, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sizes = []
    for text in args.sizes:
        try:
            h, w = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise UserError(f"--sizes {text!r}: expected HxW, e.g. 512x1024") from None
        sizes.append((h, w))
    cases = [*MODEL_CASES, *DATA_CASES] if "all" in args.model else list(dict.fromkeys(args.model))
    args.cfg = None
    if args.config:
        from densemnv3.config import load_config

        args.cfg = load_config(args.config, args.overrides)
        inference = [] if set(cases) <= set(TRAIN_CASES) else [case_of(args.cfg.model.name)]
        cases = inference + [c for c in cases if c in (*DATA_CASES, *TRAIN_CASES)]
    info = machine_info(device)
    print(f"{info.get('gpu', info['cpu'])}, {info['threads']} threads, torch {info['torch']}; "
          f"{args.iters} timed calls after {args.warmup} warm-up, interleaved", flush=True)
    results = []
    for case in cases:
        if case in TRAIN_CASES:
            results.append(bench_train(args, device))
            print(format_train(results[-1]), flush=True)
            continue
        if case in DATA_CASES:
            results.append(bench_data(case, args))
            print(format_table(results[-1:]).splitlines()[-1], flush=True)
            continue
        for size in sizes if case.startswith("lraspp") else sizes[:1]:
            for batch in args.batch_sizes:
                for settings in variants:
                    print(settings.describe(), flush=True)
                    results.append(bench_model(case, size, batch, settings.precision,
                                               _with_settings(args, settings), device))
                    print("\n".join(format_table(results[-1:]).splitlines()[2:]), flush=True)
    print()
    inference_and_data = [r for r in results if r["case"] not in TRAIN_CASES]
    print("\n".join([format_table(inference_and_data)] * bool(inference_and_data)
                    + [format_train(r) for r in results if r["case"] in TRAIN_CASES]))
    if args.json:
        options = {k: v for k, v in vars(args).items() if k != "cfg"}
        report = {"machine": info, "args": options, "results": results}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    outside = [r for r in results if r.get("check_ok") is False]
    if outside:
        print(f"{len(outside)} configuration(s) outside their precision's tolerance of fp32 (MISMATCH above)")
    return 1 if outside else 0


def _with_settings(args, settings: InferenceSettings) -> argparse.Namespace:
    """``args`` with one variant's precision, memory format, compile and CUDA graphs."""
    mode = args.compile_mode or settings.compile_mode
    return argparse.Namespace(**{**vars(args), "precision": [settings.precision], "channels_last": settings.channels_last,
                                 "compile": settings.compile, "cuda_graphs": settings.cuda_graphs, "compile_mode": mode})


if __name__ == "__main__":
    run_main(main)
