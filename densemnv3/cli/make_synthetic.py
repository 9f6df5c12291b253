"""Write the synthetic street dataset (Cityscapes layout + COCO boxes) and/or a synthetic video.

densemnv3 make-synthetic --out data/synthetic                   # 200 train / 50 val
densemnv3 make-synthetic --out /tmp/s --train 8 --val 4 --size 128 256
densemnv3 make-synthetic --out /tmp/voc --format voc             # or folder, ade20k, yolo, coco
densemnv3 make-synthetic --video demo.mp4 --frames 120 --fps 10
"""

import argparse
import time
from pathlib import Path

from densemnv3.data.synthetic import FORMATS, describe, make_synthetic, make_synthetic_video
from densemnv3.data.synthetic.formats import check_format, describe_format
from densemnv3.errors import UserError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, help="dataset directory (new, empty or an earlier synthetic set)"
    )
    parser.add_argument("--train", type=int, default=200, help="training images (default 200)")
    parser.add_argument("--val", type=int, default=50, help="validation images (default 50)")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(256, 512),
        metavar=("H", "W"),
        help="image size (default 256 512)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="cityscapes",
        help="dataset layout of --out (default cityscapes: Cityscapes PNGs + COCO json)",
    )
    parser.add_argument(
        "--video", type=Path, help="also (or only) write a synthetic drive to this .mp4/.avi"
    )
    parser.add_argument("--frames", type=int, default=120, help="video frames (default 120)")
    parser.add_argument("--fps", type=float, default=10.0, help="video frame rate (default 10)")
    args = parser.parse_args(argv)
    if args.out is None and args.video is None:
        parser.error("give --out DIR, --video FILE, or both")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = tuple(args.size)
    try:
        if args.out is not None:
            start = time.perf_counter()
            out = make_synthetic(
                args.out,
                train=args.train,
                val=args.val,
                size=size,
                seed=args.seed,
                format=args.format,
            )
            elapsed = time.perf_counter() - start
            layout = check_format(args.format)
            summary = describe(out) if layout == "cityscapes" else describe_format(out, layout)
            for split, info in summary.items():
                counts = ", ".join(f"{name} {n}" for name, n in info["instances"].items())
                line = f"{split}: {info['images']} images"
                print(f"{line}; instances: {counts}" if counts else line)
            note = "" if args.format == "cityscapes" else f", {args.format} layout"
            print(f"wrote {out} ({size[0]}x{size[1]}{note}) in {elapsed:.1f} s")
        if args.video is not None:
            start = time.perf_counter()
            video = make_synthetic_video(
                args.video, frames=args.frames, size=size, fps=args.fps, seed=args.seed
            )
            print(
                f"wrote {video}: {args.frames} frames at {args.fps:g} fps in "
                f"{time.perf_counter() - start:.1f} s"
            )
    except OSError as err:
        raise UserError(str(err)) from err
    return 0
