"""``--model predict``: ``densemnv3 predict`` over a folder against the plain loop a user writes
first, on the same files, route and threads, interleaved.

The loop: ``cv2.imread`` -> :class:`~densemnv3.inference.Predictor` -> ``cv2.imwrite`` of the label
PNG and of the overlay JPEG, one image after the other. The command: ``densemnv3 predict --save
labels overlays`` (decoding threads ahead, batches sliced side by side, writing in the
background). Each runs in a process of its own (clean thread pools) and times itself from its
first image to its last write (loading the model and choosing a runtime left out); the table gives
the median images/s of ``--repeats`` interleaved runs and the command's ratio to the loop, and the
label maps of the two are compared pixel for pixel. The images are ``--images DIR`` or synthetic
1024x2048 street scenes (``--predict-images`` of them); the routes: PyTorch on the checkpoint
(``--weights``, or the config's model with random weights), then onnxruntime on the fp32 and int8
ONNX files (``--exported FILES``, or files exported and quantized here).
"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from densemnv3.config import load_config
from densemnv3.load import load_model

from .demo import _checkpoint
from .routes import route_files

__all__ = ["add_predict_arguments", "bench_predict", "format_predict"]

_LOOP = """
import glob, os, sys, time, cv2
from densemnv3.inference import Predictor, overlay_segmentation
weights, runtime, threads, source, out = sys.argv[1:6]
p = Predictor.from_checkpoint(weights, device="cpu", runtime=runtime, threads=int(threads))
files = sorted(glob.glob(os.path.join(source, "*.png")))
start = time.perf_counter()
for f in files:
    image = cv2.imread(f)
    labels = p(image)
    name = os.path.splitext(os.path.basename(f))[0]
    cv2.imwrite(os.path.join(out, name + ".png"), labels)
    cv2.imwrite(os.path.join(out, name + ".jpg"), overlay_segmentation(image, labels))
print("IMAGES_PER_S", len(files) / (time.perf_counter() - start))
"""


def add_predict_arguments(parser) -> None:
    parser.add_argument("--images", help="predict: a folder of PNGs (default: synthetic ones)")
    parser.add_argument(
        "--predict-images", type=int, default=24, help="predict: synthetic images (default 24)"
    )
    parser.add_argument(
        "--exported", nargs="+", help="predict: the .onnx files to time (default: made here)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="predict: runs of each (default 2)")


def bench_predict(args) -> dict:
    """The command's and the loop's images/s per route (see the module docstring)."""
    threads = args.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="densemnv3-bench-predict-") as tmp:
        folder = Path(tmp)
        weights = getattr(args, "weights", None)
        cfg = load_model(None, weights).cfg if weights else load_config("lraspp_synthetic")
        checkpoint = _checkpoint(cfg, weights, folder)
        images = Path(args.images) if args.images else _synthetic(folder, args)
        if args.exported:
            files = [Path(f) for f in args.exported]
        else:
            loaded = load_model(None, checkpoint)
            meta = {"config": dataclasses.asdict(loaded.cfg), "arch": loaded.cfg.model.name}
            size = (64, 128) if args.quick else (1024, 2048)
            files = list(route_files(loaded.model.eval(), folder, size, cfg.task, meta).values())
        routes = [("torch", checkpoint)] + [
            ("onnxruntime", f) for f in files if f.suffix == ".onnx"
        ]
        rows = []
        for runtime, path in routes:
            loop, command = [], []
            for _ in range(1 if args.quick else args.repeats):
                loop.append(_run_loop(path, runtime, threads, images, folder / "loop"))
                command.append(_run_command(path, runtime, threads, images, folder / "cmd"))
            differing = _differing_pixels(folder / "loop", folder / "cmd" / "labels")
            loop_rate, command_rate = statistics.median(loop), statistics.median(command)
            rows.append(
                {
                    "route": f"{runtime} {path.name}",
                    "loop_images_per_s": loop_rate,
                    "command_images_per_s": command_rate,
                    "ratio": command_rate / loop_rate,
                    "differing_pixels": differing,
                }
            )
            print(format_predict({"rows": rows[-1:], "images": images, "threads": threads}))
    return {"case": "predict", "routes": rows, "threads": threads, "images": str(images)}


def format_predict(result: dict) -> str:
    lines = [f"predict: {result['images']}, {result['threads']} threads"]
    lines.append(f"  {'route':<32}{'loop img/s':>11}{'predict img/s':>15}{'ratio':>7}  labels")
    for row in result.get("rows") or result["routes"]:
        same = (
            "identical"
            if row["differing_pixels"] == 0
            else f"{row['differing_pixels']} pixels differ"
        )
        lines.append(
            f"  {row['route']:<32}{row['loop_images_per_s']:>11.2f}"
            f"{row['command_images_per_s']:>15.2f}{row['ratio']:>6.2f}x  {same}"
        )
    return "\n".join(lines)


def _synthetic(folder: Path, args) -> Path:
    from densemnv3.data.synthetic import make_synthetic

    size = (64, 128) if args.quick else (1024, 2048)
    count = 2 if args.quick else args.predict_images
    root = make_synthetic(folder / "synthetic", train=1, val=count, size=size, progress=False)
    images = folder / "images"
    images.mkdir()
    for path in sorted((root / "leftImg8bit" / "val").glob("*/*.png")):
        path.rename(images / path.name)
    return images


def _run_loop(weights: Path, runtime: str, threads: int, images: Path, out: Path) -> float:
    out.mkdir(exist_ok=True)
    argv = [sys.executable, "-c", _LOOP, str(weights), runtime, str(threads), str(images), str(out)]
    return float(_run(argv).split("IMAGES_PER_S")[1].split()[0])


def _run_command(weights: Path, runtime: str, threads: int, images: Path, out: Path) -> float:
    argv = [
        *(sys.executable, "-m", "densemnv3", "predict", "--weights", str(weights)),
        *("--source", str(images), "--out", str(out), "--runtime", runtime),
        *("--threads", str(threads), "--save", "labels", "overlays", "--overwrite"),
        "--no-progress",
    ]
    text = _run(argv)
    return float(text.split(" images/s")[0].rsplit(None, 1)[-1])


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def _differing_pixels(loop: Path, command: Path) -> int:
    import cv2

    total = 0
    for path in sorted(loop.glob("*.png")):
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(command / path.name), cv2.IMREAD_UNCHANGED)
        total += a.size if b is None else int((a != b).sum())
    return total
