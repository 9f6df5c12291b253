"""``--model demo``: the video demo's frames per second on every installed route, as a user runs it.

The model is ``--config`` (default ``lraspp_synthetic``, the README main job's) with ``--weights``
when given, else random weights (the speed of a network does not depend on its weights; a
detector's postprocess does, so give a trained SSDLite's ``best.pt`` for detection figures). The
video is ``--video`` or a synthetic 1280x720 drive (``--frames`` frames). Every route runs
``densemnv3 demo --no-display --output x.mp4 --json`` in a process of its own (clean thread pools)
with ``--threads`` (default torch's) and ``--input-size`` when given: torch on the checkpoint, then
the fp32 and int8 ONNX files (and ``.pte``, ExecuTorch installed) in every runtime that reads
them. Beside each route's end-to-end FPS stands its network alone at the same size, on the same
thread count (:func:`time_network`), and their ratio: 1.0 is a demo that costs nothing but its
network.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from densemnv3.config import load_config
from densemnv3.data.synthetic import make_synthetic_video
from densemnv3.load import load_model
from densemnv3.models import build_model
from densemnv3.runtimes import engines_for

from .models import calibrate_bn_
from .routes import route_files

__all__ = ["add_demo_arguments", "bench_demo", "format_demo", "time_network"]

DEMO_SIZE = (720, 1280)


def add_demo_arguments(parser) -> None:
    parser.add_argument(
        "--weights",
        help="demo: the checkpoint to run (default: --config's model, random weights); "
        "--routes: ours trained (LR-ASPP), on frames of the synthetic drive",
    )
    parser.add_argument("--video", help="demo: the video (default: a synthetic 1280x720 drive)")
    parser.add_argument(
        "--frames", type=int, default=60, help="demo: frames of the synthetic video (default 60)"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="demo: the network's input size (default: the frame's)",
    )


def time_network(
    weights: Path, runtime: str, size: tuple[int, int], threads: int, iters: int = 10
) -> float:
    """Median ms of the network of ``weights`` in ``runtime`` on one ``(1, 3, *size)`` input (a
    multi-task model's ``network``: the tensors of its pass, as the demo takes them)."""
    loaded = load_model(None, weights, runtime=runtime, threads=threads)
    model = loaded.model.eval()
    if runtime == "torch":
        from densemnv3.inference.optimize import prepare_for_inference

        model = prepare_for_inference(model, channels_last=True)
    torch.set_num_threads(threads if runtime == "torch" else 1)
    x = torch.randn(1, 3, *size).contiguous(
        memory_format=torch.channels_last if runtime == "torch" else torch.contiguous_format
    )
    forward = getattr(model, "network", model)
    times = []
    with torch.inference_mode():
        for i in range(iters + 2):
            start = time.perf_counter()
            forward(x)
            if i >= 2:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _checkpoint(cfg, weights: str | None, folder: Path) -> Path:
    """``weights`` as it is, or a checkpoint of ``cfg``'s model with random weights and
    BatchNorm statistics of random images (one that records its config, as ``best.pt`` does)."""
    if weights:
        return Path(weights)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    images = torch.randn(2, 3, 128, 256)
    calibrate_bn_(model, lambda: model(images))  # activations with a spread, as a trained model's
    path = folder / "random.pt"
    torch.save(
        {"model": model.state_dict(), "config": dataclasses.asdict(cfg), "arch": cfg.model.name},
        path,
    )
    return path


def bench_demo(args) -> dict:
    """The demo's FPS per route (see the module docstring)."""
    threads = args.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="densemnv3-bench-demo-") as tmp:
        folder = Path(tmp)
        weights = getattr(args, "weights", None)
        cfg = (
            load_model(None, weights).cfg
            if weights
            else (args.cfg or load_config("lraspp_synthetic"))
        )
        checkpoint = _checkpoint(cfg, weights, folder)
        video = (
            Path(args.video)
            if getattr(args, "video", None)
            else make_synthetic_video(
                folder / "drive.mp4",
                frames=3 if args.quick else args.frames,
                size=(64, 128) if args.quick else DEMO_SIZE,
                fps=25.0,
            )
        )
        import cv2

        capture = cv2.VideoCapture(str(video))
        frame_size = (
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        )
        capture.release()
        size = tuple(args.input_size) if args.input_size else frame_size
        if cfg.task == "detection":
            from densemnv3.data.transforms import detector_input_size

            size = detector_input_size(cfg.data.image_size)
        loaded = load_model(None, checkpoint)
        meta = {"config": dataclasses.asdict(loaded.cfg), "arch": loaded.cfg.model.name}
        files = route_files(loaded.model.eval(), folder, size, cfg.task, metadata=meta)
        routes = [("torch", checkpoint)] + [
            (engine.name, path)
            for path in files.values()
            for engine in engines_for(path.suffix.lstrip("."))
            if engine.installed()
        ]
        rows = []
        for runtime, path in routes:
            out = folder / f"{runtime}-{path.name}.json"
            argv = [
                sys.executable,
                "-m",
                "densemnv3",
                "demo",
                "--weights",
                str(path),
                "--source",
                str(video),
                "--no-display",
                "--output",
                str(folder / "out.mp4"),
                "--runtime",
                runtime,
                "--threads",
                str(threads),
                "--json",
                str(out),
                "--device",
                "cpu",
            ]
            if args.input_size and cfg.task != "detection":
                argv += ["--input-size", *map(str, args.input_size)]
            print(f"  demo: {runtime} {path.name} ...", flush=True)
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append(
                    {
                        "route": f"{runtime} {path.name}",
                        "error": done.stderr.strip().splitlines()[-1:],
                    }
                )
                continue
            stats = json.loads(out.read_text())
            net_ms = time_network(path, runtime, size, threads, iters=args.iters)
            rows.append(
                {
                    "route": f"{runtime} {path.name}",
                    "fps": stats["fps"],
                    "infer_ms": stats["infer_ms"],
                    "draw_ms": stats["draw_ms"],
                    "write_ms": stats["write_ms"],
                    "net_ms": net_ms,
                    "net_fps": 1e3 / net_ms,
                    "ratio": stats["fps"] / (1e3 / net_ms),
                    "inference": stats["inference"],
                }
            )
    return {
        "case": "demo",
        "task": cfg.task,
        "video": f"{frame_size[1]}x{frame_size[0]}",
        "input": f"{size[0]}x{size[1]}",
        "threads": threads,
        "frames": args.frames,
        "routes": rows,
        "weights": weights or "random",
    }


def format_demo(r: dict) -> str:
    lines = [
        f"demo, {r['task']} ({r['weights']}), {r['video']} video, network at {r['input']}, "
        f"{r['threads']} threads",
        "| route | demo FPS | infer ms | draw ms | write ms | network alone ms (FPS) "
        "| demo / network |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["routes"]:
        if "error" in row:
            lines.append(f"| {row['route']} | failed: {' '.join(row['error'])} | | | | | |")
            continue
        lines.append(
            f"| {row['route']} | {row['fps']:.1f} | {row['infer_ms']:.1f} | {row['draw_ms']:.1f} "
            f"| {row['write_ms']:.1f} | {row['net_ms']:.1f} ({row['net_fps']:.1f}) "
            f"| {row['ratio']:.2f} |"
        )
    return "\n".join(lines)
