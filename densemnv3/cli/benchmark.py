"""Speed of densemnv3 vs torchvision on the same weights and inputs, measured interleaved.

``densemnv3 benchmark [--model lraspp_large|lraspp_small|ssdlite_large|ssdlite_small|
data_seg|data_det|demo|seg_test_time|label_map|all] [--routes] [--device cpu|cuda]
[--profile [--runtime R ...]] [--batch-sizes 1 8] [--sizes 512x1024 1024x2048]
[--precision fp32 fp16 bf16] [--threads 2]
[--iters N] [--warmup N] [--json out.json] [--memory-format nchw|channels_last]
[--compile [--compile-mode MODE]] [--cuda-graphs] [--variants default fp16+graphs bf16+compile ...]
[--tv-same-options] [--quick] [--det-score-thresh T] [--det-nms auto|per_image|batched]``

Ours runs with the device's inference defaults (``densemnv3.inference.settings``: CUDA fp16 NCHW,
CPU fp32 channels_last) unless the options say otherwise; ``--variants`` times several combinations
in one run (each ``+``-joined from a precision, ``nchw``/``channels_last``, ``compile``, ``graphs``;
``default`` is the device's defaults), each against torchvision eager fp32 and each checked against
torchvision's fp32 output within its precision's tolerance (exit code 1 if one is outside). ``int8``
(CPU) quantizes ours as ``tools/quantize.py`` does (onnxruntime, calibrated on a few random images)
and times it against our fp32 inference path and torchvision fp32, interleaved:
``--model lraspp_large --variants int8`` (``BENCHMARKS.md``).

Model cases: torchvision's model (``lraspp_mobilenet_v3_large``, ``ssdlite320_mobilenet_v3_large``
and the Small equivalents assembled the way torchvision assembles the Large ones) is built with
random weights and calibrated BatchNorm statistics; the same state dict is loaded into ours, so
the work is identical. Ours runs the inference path (``prepare_for_inference``: BatchNorm folded,
plus the options asked for); torchvision runs as its users run it (eager, fp32, NCHW) unless
``--tv-same-options``. SSDLite is timed end to end (forward + postprocess + NMS) at 320x320:
torchvision gets [0, 1] images (its resize is then a no-op), ours the same images normalised; the
network alone is timed too. Every case prints the max abs difference of ours (in its precision)
vs torchvision fp32 on the same input (SSDLite: class logits and box deltas).

``--routes`` (CPU) times every installed runtime route of each model case, interleaved with
torchvision eager fp32 (:mod:`densemnv3.benchmark.routes`); ``--profile [--runtime R ...]``
(CPU) profiles the same exported files, per operator, kernel and the precision it ran in, with
each runtime's own profiler (:mod:`densemnv3.benchmark.profile`); ``--model demo`` runs the video
demo through every route and sets its FPS beside the network's (:mod:`densemnv3.benchmark.demo`);
``--model predict``: ``densemnv3 predict`` vs a plain loop (:mod:`densemnv3.benchmark.predict`);
``--model seg_test_time``: sliding windows and TTA (:mod:`densemnv3.benchmark.eval_modes`);
``--model label_map``: the Predictor's label map vs torchvision's
(:mod:`densemnv3.benchmark.labels`).

Data cases: one sample of decode + training augmentation. ``data_seg``: a 1024x2048 PNG + label
through ``seg_train_transform((512, 1024))`` vs a torchvision-references-style PIL pipeline (random
resize 0.5-2, pad, crop, flip, ColorJitter, to tensor, normalise); ours reads the pair from the
decoded-sample cache (``data.decoded_cache``), and the same pipeline decoding the PNGs is timed too
(``ours_uncached_ms``). ``data_det``: a 480x640 image + boxes through ``det_train_transform(320)``
vs torchvision references' SSDLite ``transforms.v2`` pipeline (+ resize 320, normalise). Both run
one thread, as a loader worker.
"""

from __future__ import annotations

import argparse

import torch

from densemnv3.benchmark.data import DATA_CASES, bench_data
from densemnv3.benchmark.demo import add_demo_arguments, bench_demo, format_demo
from densemnv3.benchmark.eval_modes import bench_test_time
from densemnv3.benchmark.labels import bench_label_map
from densemnv3.benchmark.models import bench_model, case_of, parse_sizes, with_settings
from densemnv3.benchmark.multitask import (
    MULTITASK_CASES,
    bench_multitask,
    format_multitask,
    multitask_case_of,
)
from densemnv3.benchmark.predict import add_predict_arguments, bench_predict, format_predict
from densemnv3.benchmark.profile import add_profile_arguments, bench_profile, format_profiles
from densemnv3.benchmark.quantized import bench_int8
from densemnv3.benchmark.reference import MODEL_CASES
from densemnv3.benchmark.report import (
    format_summary,
    format_table,
    format_train,
    machine_info,
    machine_line,
    write_report,
)
from densemnv3.benchmark.routes import bench_routes, format_routes
from densemnv3.benchmark.train import TRAIN_CASES, bench_train, bench_train_step
from densemnv3.cli.arguments import add_inference_arguments, add_set_argument, variants_from_args
from densemnv3.config import load_config
from densemnv3.utils.device import resolve_device


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        nargs="+",
        default=["lraspp_large"],
        choices=(
            *MODEL_CASES,
            *MULTITASK_CASES,
            *DATA_CASES,
            *TRAIN_CASES,
            "demo",
            "predict",
            "seg_test_time",
            "label_map",
            "all",
        ),
    )
    parser.add_argument(
        "--routes", action="store_true", help="CPU: time every installed runtime route (see above)"
    )
    add_profile_arguments(parser)
    add_demo_arguments(parser)
    add_predict_arguments(parser)
    parser.add_argument(
        "--config", help="ours = this config's model (--model then names only data cases)"
    )
    add_set_argument(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="(default 1)")
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        help="HxW of the LR-ASPP input (default 512x1024; SSDLite always runs at 320x320)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument(
        "--iters", type=int, default=None, help="timed calls per model (default 10, CUDA 30)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed calls first (default 2, CUDA 10)"
    )
    parser.add_argument("--json", help="also write the results here")
    add_inference_arguments(parser, multi_precision=True)
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="SPEC",
        help="combinations to time, e.g. default fp16+graphs fp16+compile bf16+compile+graphs",
    )
    parser.add_argument("--no-fuse", action="store_true", help="ours without BatchNorm folding")
    parser.add_argument(
        "--compile-mode",
        default=None,
        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        help="torch.compile mode on CUDA (default: max-autotune with --cuda-graphs, else "
        "max-autotune-no-cudagraphs; CPU uses Inductor freezing instead)",
    )
    parser.add_argument(
        "--tv-same-options", action="store_true", help="torchvision gets ours' precision and layout"
    )
    parser.add_argument(
        "--det-score-thresh",
        type=float,
        default=0.001,
        help="SSDLite score threshold of both models (torchvision's 0.001: with random weights "
        "every class of every box passes, the heaviest postprocess; 0.5: none does, the lightest)",
    )
    parser.add_argument(
        "--det-nms",
        default="auto",
        choices=("auto", "per_image", "batched"),
        help="ours' SSDLite NMS path",
    )
    parser.add_argument(
        "--data-root", help="train_seg: a Cityscapes root (default: a synthetic one)"
    )
    parser.add_argument(
        "--synthetic-size",
        default=None,
        help="train_seg: HxW of the synthetic images (default 1024x2048)",
    )
    parser.add_argument(
        "--synthetic-images", type=int, default=16, help="train_seg: synthetic train images"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="train_seg: loader workers (default: config's)"
    )
    parser.add_argument(
        "--decoded-cache",
        action="store_true",
        help="train_seg: also time the loader reading a decoded cache of the root, built in a "
        "temporary folder (~8 MB per 1024x2048 image)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, 1 iteration (a smoke test)"
    )
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
    args = parse_args(argv)
    device = torch.device(resolve_device(args.device))
    variants = variants_from_args(args, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    sizes = parse_sizes(args.sizes)
    cases = (
        [*MODEL_CASES, *MULTITASK_CASES, *DATA_CASES]
        if "all" in args.model
        else list(dict.fromkeys(args.model))
    )
    args.cfg = None
    if (
        args.config
    ):  # ours is the config's model: its model case, then the data and train cases asked for
        args.cfg = load_config(args.config, args.overrides)
        case = multitask_case_of(args.cfg.model.name) or case_of(args.cfg.model.name)
        apart = (*TRAIN_CASES, "demo", "predict")
        inference = [] if set(cases) <= set(apart) else [case]
        cases = inference + [c for c in cases if c in (*DATA_CASES, *apart)]
    info = machine_info(device)
    print(machine_line(info, args), flush=True)
    results = []
    for case in cases:
        if case in ("demo", "predict"):
            results.append(bench_demo(args) if case == "demo" else bench_predict(args))
            print((format_demo if case == "demo" else format_predict)(results[-1]), flush=True)
            continue
        if case in ("seg_test_time", "label_map"):  # each prints its own tables
            results += (
                bench_test_time(sizes, with_settings(args, variants[0]), device)
                if case == "seg_test_time"
                else bench_label_map(sizes, args)
            )
            continue
        if args.profile and case in MODEL_CASES:
            for size in sizes if case.startswith("lraspp") else sizes[:1]:
                results.append(bench_profile(case, size, args, device))
                print(format_profiles(results[-1]), flush=True)
            continue
        if args.routes and case in MODEL_CASES:
            for size in sizes if case.startswith("lraspp") else sizes[:1]:
                for batch in args.batch_sizes:
                    results.append(bench_routes(case, size, batch, args, device))
                    print(format_routes(results[-1]), flush=True)
            continue
        if case in TRAIN_CASES:
            results.append(
                bench_train_step(args, device)
                if case == "train_step_lraspp"
                else bench_train(args, device)
            )
            print(format_train(results[-1]), flush=True)
            continue
        if case in DATA_CASES:
            results.append(bench_data(case, args))
            print(format_table(results[-1:]).splitlines()[-1], flush=True)
            continue
        for size in sizes if case.startswith(("lraspp", "multitask")) else sizes[:1]:
            for batch in args.batch_sizes:
                for settings in variants:
                    print(settings.describe(), flush=True)
                    multitask, precision = case in MULTITASK_CASES, settings.precision
                    if multitask and precision == "int8":
                        print(
                            f"  {case}: skipped (int8 is timed for the single-task models)",
                            flush=True,
                        )
                        continue
                    options = with_settings(args, settings)
                    if precision == "int8":
                        results.append(bench_int8(case, size, batch, options, device))
                    else:
                        bench = bench_multitask if multitask else bench_model
                        results.append(bench(case, size, batch, precision, options, device))
                    print(
                        format_multitask(results[-1])
                        if multitask
                        else "\n".join(format_table(results[-1:]).splitlines()[2:]),
                        flush=True,
                    )
    print()
    timed = [r for r in results if not {"routes", "profiles"} & r.keys()]  # own tables
    timed = [r for r in timed if r["case"] not in ("seg_test_time", "label_map")]
    if timed:
        print(format_summary(timed))
    if args.json:
        write_report(args.json, info, args, results)
        print(f"wrote {args.json}")
    outside = [r for r in results if r.get("check_ok") is False]
    if outside:
        print(
            f"{len(outside)} configuration(s) outside their precision's tolerance of fp32 "
            f"(MISMATCH above)"
        )
    return 1 if outside else 0
