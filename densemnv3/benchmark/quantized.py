"""The int8 model cases: ours quantized to int8 (onnxruntime, ``tools/quantize.py``'s route),
timed against our fp32 inference path and torchvision fp32, all three interleaved in one run.

The weights are the fp32 case's (torchvision's random weights with calibrated BatchNorm, loaded
into ours); the int8 file is calibrated on a few random images of the timed size, which gives
the int8 kernels the same work as a trained model's (SSDLite: at ``--det-score-thresh 0.001``
every class of every box is a candidate, in both precisions). The record adds
``ours_fp32_ms`` and ``int8_speedup`` (our fp32 time / int8 time) to the fp32 case's fields;
``max_abs_diff`` is int8 vs torchvision fp32 on the same input, and the check is on the relative
RMS difference ``rel_rms`` (||int8 - fp32|| / ||fp32||, as ``tools/quantize.py`` checks): int8
rounding moves single outputs by several steps, so the max difference says little.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch

from densemnv3.export.quantize import REL_RMS_TOLERANCE, quantize_model
from densemnv3.inference.optimize import prepare_for_inference
from densemnv3.runtimes import engine_class, exported_model, read_metadata

from .models import build_pair, gflops_per_image
from .reference import DET_SIZE, tv_network
from .timing import time_interleaved, timed_record

CALIBRATION_IMAGES = 4


def bench_int8(case: str, size: tuple[int, int], batch: int, args, device: torch.device) -> dict:
    """Params, FLOPs, interleaved latency of ours int8 vs ours fp32 vs torchvision fp32."""
    detection = case.startswith("ssdlite")
    size = DET_SIZE if detection else size
    gen = torch.Generator().manual_seed(0)
    calibration = torch.randn(
        2, 3, *(size if detection else (min(size[0], 256), min(size[1], 512))), generator=gen
    )
    tv, ours, same_weights = build_pair(case, device, calibration, args.cfg)
    params = sum(p.numel() for p in ours.parameters())
    if detection:  # torchvision takes [0, 1] images and normalises them itself
        tv.score_thresh = ours.score_thresh = args.det_score_thresh
        ours.nms_impl = args.det_nms
        images01 = torch.rand(batch, 3, *size, generator=gen)
        x = (images01 - 0.5) / 0.5
    else:
        x = torch.randn(batch, 3, *size, generator=gen)
    gflops = gflops_per_image(ours, x[:1])
    with torch.inference_mode():
        out = tv_network(tv, x) if detection else tv(x)
        reference = [out["cls_logits"], out["bbox_regression"]] if detection else [out["out"]]
    fp32 = prepare_for_inference(copy.deepcopy(ours), channels_last=True)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory(prefix="densemnv3-bench-int8-") as tmp:
        path = Path(tmp) / "int8.onnx"
        start = time.perf_counter()
        images = (torch.randn(1, 3, *size, generator=gen) for _ in range(CALIBRATION_IMAGES))
        quantize_model(
            ours,
            path,
            calibration=images,
            num_images=CALIBRATION_IMAGES,
            input_size=size,
            progress=False,
            metadata={"task": "detection" if detection else "segmentation"},
        )
        quantize_seconds = time.perf_counter() - start
        int8 = exported_model(path, read_metadata(path), ours, engine_class("onnxruntime"))
        with torch.inference_mode():
            got = list(int8.predict_raw(x)[:2]) if detection else [int8(x)]
        fns = {"ours": lambda: int8(x), "ours_fp32": lambda: fp32(x_cl)}
        if detection:
            tv_images = list(images01)
            fns.update(
                tv=lambda: tv(tv_images),
                ours_net=lambda: int8.predict_raw(x),
                tv_net=lambda: tv_network(tv, x),
            )
        else:
            fns["tv"] = lambda: tv(x)["out"]
        seconds = time_interleaved(fns, args.iters, args.warmup, device)

    diff = max(float((g - r).abs().max()) for g, r in zip(got, reference))
    scale = max(float(r.abs().max()) for r in reference)
    rel_rms = max(float((g - r).norm() / r.norm().clamp(min=1e-12)) for g, r in zip(got, reference))
    record = timed_record(case, f"{size[0]}x{size[1]}", batch, "int8", seconds)
    record.update(
        params=params,
        gflops_per_image=gflops,
        max_abs_diff=diff,
        ref_max_abs=scale,
        rel_diff=diff / max(scale, 1e-12),
        rel_rms=rel_rms,
        tolerance=REL_RMS_TOLERANCE,
        compile_seconds=0.0,
        quantize_seconds=quantize_seconds,
        ours_fp32_ms=seconds["ours_fp32"] * 1e3,
        ours_fp32_min_ms=seconds["ours_fp32_min"] * 1e3,
        int8_speedup=seconds["ours_fp32"] / seconds["ours"],
        ours_options={
            "precision": "int8",
            "runtime": "onnxruntime",
            "fp32_path": "folded BN, channels_last",
        },
        tv_options={"precision": "fp32", "channels_last": False},
    )
    record["check_ok"] = rel_rms <= REL_RMS_TOLERANCE if same_weights and args.cfg is None else None
    record["same_weights"] = same_weights
    if detection:
        probs = reference[0].softmax(-1)[..., 1:]
        per_class = (probs > args.det_score_thresh).sum(1).clamp(max=tv.topk_candidates)
        record["candidates_per_image"] = float(per_class.sum(-1).float().mean())
        record["ours_options"]["score_thresh"] = record["tv_options"]["score_thresh"] = (
            args.det_score_thresh
        )
        record["ours_options"]["nms_impl"] = "per_image" if args.det_nms == "auto" else args.det_nms
        record.update(
            ours_net_ms=seconds["ours_net"] * 1e3,
            tv_net_ms=seconds["tv_net"] * 1e3,
            net_ratio=seconds["tv_net"] / seconds["ours_net"],
        )
    return record
