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

from .models import add_detection_fields, output_difference, random_case
from .reference import tv_network
from .timing import time_interleaved, timed_record

CALIBRATION_IMAGES = 4


def bench_int8(case: str, size: tuple[int, int], batch: int, args, device: torch.device) -> dict:
    """Params, FLOPs, interleaved latency of ours int8 vs ours fp32 vs torchvision fp32."""
    setup = random_case(case, size, batch, args, device)
    detection, size, tv, ours, x = setup.detection, setup.size, setup.tv, setup.ours, setup.x
    fp32 = prepare_for_inference(copy.deepcopy(ours), channels_last=True)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory(prefix="densemnv3-bench-int8-") as tmp:
        path = Path(tmp) / "int8.onnx"
        start = time.perf_counter()
        images = (torch.randn(1, 3, *size, generator=setup.gen) for _ in range(CALIBRATION_IMAGES))
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
            tv_images = list(setup.images01)
            fns.update(
                tv=lambda: tv(tv_images),
                ours_net=lambda: int8.predict_raw(x),
                tv_net=lambda: tv_network(tv, x),
            )
        else:
            fns["tv"] = lambda: tv(x)["out"]
        seconds = time_interleaved(fns, args.iters, args.warmup, device)

    rel_rms = max(
        float((g - r).norm() / r.norm().clamp(min=1e-12)) for g, r in zip(got, setup.reference)
    )
    record = timed_record(case, f"{size[0]}x{size[1]}", batch, "int8", seconds)
    record.update(
        params=setup.params,
        gflops_per_image=setup.gflops,
        **output_difference(got, setup.reference),
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
    check = setup.same_weights and args.cfg is None
    record["check_ok"] = rel_rms <= REL_RMS_TOLERANCE if check else None
    record["same_weights"] = setup.same_weights
    if detection:  # on the CPU, where "auto" NMS is per image
        add_detection_fields(record, setup, seconds, args, device)
    return record
