"""Shrink a trained model to a latency budget measured on the runtime it will run on (NetAdapt).

``densemnv3 netadapt [CONFIG] --weights CKPT --target 0.7 --runtime R [--threads N]
[--input-size H W]``

NetAdapt (Yang et al., ECCV 2018), with the proposals MobileNetV3 used: each iteration, every
expansion layer, residual-chain width and head width proposes the widest multiple of 8 that cuts
``netadapt.step`` × the original latency (a per-layer lookup table measured on R, cached); each
proposal is fine-tuned briefly and scored; the best Δmetric/|Δlatency| that runs faster than the
model it replaces is kept, until the kept model runs at most ``--target`` × the original's time.
Both are ratios measured side by side (the models run in turn), never absolute times, which
drift with the machine's load. A long fine-tune follows. The schedule is the config's
``netadapt`` section (``--set netadapt.step=0.01`` ...); the defaults fit a 2-core CPU.

R: ``torch`` (the Predictor's PyTorch CPU path), ``onnxruntime`` (fp32 ONNX as tools/export.py
writes it), ``onnxruntime-int8`` (as tools/quantize.py makes it), ``openvino``. Latency is
measured at ``--input-size`` (default: the config's evaluation size; 512x1024 for segmentation
at the images' own size) with ``--threads`` threads (default: every core).

Output, in ``--work-dir`` (default: beside CKPT, ``netadapt-R-TARGET``): ``finetune/best.pt``,
a checkpoint that records its widths (every tool loads it as any checkpoint), ``netadapt.csv``,
``pareto.png``, ``summary.json`` and the final table. ``--resume`` continues a killed run.
``--uniform`` then trains the baseline: every width scaled by one factor to the same measured
latency, fine-tuned as many steps; the table compares original, NetAdapt and uniform.
``--compare-importance`` measures which channels a cut should keep (weight L2 norm or BatchNorm
scale) on the first iteration's proposals, and stops there.
"""

from __future__ import annotations

import os
from pathlib import Path

from densemnv3.cli.arguments import (
    add_input_size_argument,
    add_set_argument,
    add_threads_argument,
    load_from_args,
    model_parser,
)

#: Routes NetAdapt measures on (densemnv3.netadapt.latency.ROUTES; here without importing torch).
ROUTE_HELP = "torch, onnxruntime, onnxruntime-int8 or openvino"


def main(argv: list[str] | None = None) -> int:
    parser = model_parser(__doc__, weights_help="the trained checkpoint (last.pt / best.pt)")
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help="latency to reach, as a fraction of the original's (default: netadapt.target, 0.7)",
    )
    parser.add_argument(
        "--runtime", default="onnxruntime", help=f"where latency is measured: {ROUTE_HELP}"
    )
    add_threads_argument(parser, help="threads the runtime runs with (default: all cores)")
    add_input_size_argument(parser, help="the deployment input size latency is measured at")
    parser.add_argument(
        "--work-dir", help="run folder (default: beside CKPT, netadapt-RUNTIME-TARGET)"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --work-dir")
    parser.add_argument(
        "--uniform",
        action="store_true",
        help="train the uniform baseline for a finished run and compare",
    )
    parser.add_argument(
        "--compare-importance",
        action="store_true",
        help="only compare the channel importances (l2, bn) on the first iteration's proposals: "
        "importance.csv",
    )
    add_set_argument(parser)
    parser.add_argument(
        "--device",
        default=None,
        help="fine-tuning device: cpu, cuda or auto (default: the config's)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    from densemnv3.errors import UserError

    target = args.target
    if target is not None and not 0 < target < 1:
        raise UserError(
            f"--target {target:g}: a fraction of the original latency between 0 and 1 "
            f"is needed, e.g. 0.7 for 30 % faster"
        )
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    from densemnv3.netadapt.latency import LatencyTable, check_route

    check_route(args.runtime)

    import torch.nn.functional as F

    from densemnv3.netadapt.context import RunContext
    from densemnv3.netadapt.run import finish, run_netadapt, run_uniform
    from densemnv3.tasks import build_task
    from densemnv3.tasks.common import ensure_synthetic
    from densemnv3.utils.device import resolve_device

    loaded = load_from_args(args, pytorch="NetAdapt")
    cfg, model = loaded.cfg, loaded.model.eval()
    if target is not None:
        cfg.netadapt.target = target
    if not 0 < cfg.netadapt.target < 1:
        raise UserError(
            f"netadapt.target {cfg.netadapt.target:g}: a fraction between 0 and 1 is needed"
        )
    ensure_synthetic(cfg)  # it fine-tunes on the training set, as train does
    task = build_task(cfg)
    size = tuple(args.input_size) if args.input_size else _deployment_size(cfg)
    threads = args.threads or os.cpu_count() or 1
    run_dir = (
        Path(args.work_dir)
        if args.work_dir
        else (Path(args.weights).parent / f"netadapt-{args.runtime}-{cfg.netadapt.target:g}")
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device or cfg.train.device)
    calibration = None
    if args.runtime.endswith("int8"):  # a few training images at the deployment size
        train = task.dataset(cfg.data.train_split, train=False)
        calibration = [
            F.interpolate(train[i][0][None], size=size, mode="bilinear", align_corners=False)[0]
            for i in range(min(4, len(train)))
        ]
    table = LatencyTable(args.runtime, threads=threads, size=size, progress=not args.no_progress)
    print(
        f"NetAdapt: {cfg.model.name} from {args.weights} to {cfg.netadapt.target:g}x its latency "
        f"on {args.runtime} ({threads} threads, {size[0]}x{size[1]}); lookup table {table.path}; "
        f"run in {run_dir}"
    )
    run = RunContext(
        cfg, task, table, run_dir, device, calibration=calibration, progress=not args.no_progress
    )
    if args.compare_importance:
        from densemnv3.netadapt.importance import compare_importance

        compare_importance(model, run)
        print(f"importance study: {run_dir / 'importance.csv'}")
        return 0
    results = {}
    best = run_netadapt(model, run, resume=args.resume or args.uniform)
    results["NetAdapt"] = best
    if args.uniform:
        results["uniform"] = run_uniform(model, run, resume=args.resume)
    elif (run_dir / "uniform" / "best.pt").is_file():
        results["uniform"] = run_dir / "uniform" / "best.pt"
    finish(model, results, run)
    print(
        f"result: {best} (loads in every tool: eval, export, quantize, demo); "
        f"run folder {run_dir} (netadapt.csv, pareto.png, summary.json)"
    )
    return 0


def _deployment_size(cfg) -> tuple[int, int]:
    if cfg.task == "detection":
        from densemnv3.data.transforms import detector_input_size

        return tuple(detector_input_size(cfg.data.image_size))
    if cfg.data.eval_resize:
        return tuple(int(s) for s in cfg.data.eval_resize)
    return (512, 1024)
