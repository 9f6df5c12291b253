"""Predict every image of a folder, a glob, a list or a video, and write masks, overlays and boxes.

``densemnv3 predict [CONFIG] --weights W --source SRC --out DIR [--save KIND ...]``

SRC is an image, a folder (``--recursive`` for its subfolders), a glob (quoted: ``"frames/*.png"``),
a text file with one image path per line, or a video file (each frame an image named by its
index). Outputs mirror the source's relative paths under DIR (see ``--save``); ``predictions.csv``
has a row per image and a summary line, ``skipped_files.txt`` the files that could not be read
and why. A checkpoint runs in PyTorch, an exported file (``.onnx``, int8 ``.onnx``, ``.pte``) in
the runtime the demo would choose (``--runtime``).

Images are decoded by ``--workers`` threads ahead of the network, ``--batch-size`` at a time
(those of one size run as one batch), and written in the background, in order. Killed and started
again with the same command, a run goes on where it stopped: an image whose outputs all exist is
skipped (``--overwrite`` makes them again). ``--shard K/N`` takes every N-th image from the K-th,
so N processes or machines split one source; a last run without ``--shard`` gathers their
``detections.json`` and ``predictions.csv``. A file that cannot be read is listed and the others
go on (exit 0 with a warning; exit 2 when none could be read); ``--strict`` stops at the first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from densemnv3.cli.arguments import (
    add_inference_arguments,
    add_input_size_argument,
    add_runtime_argument,
    add_set_argument,
    add_threads_argument,
    model_parser,
    predictor_from_args,
)
from densemnv3.data.cityscapes import CITYSCAPES_CLASSES
from densemnv3.data.formats import recorded_classes
from densemnv3.errors import UserError
from densemnv3.inference.outputs import SAVE_KINDS

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = model_parser(
        __doc__,
        config_help="the model's config (optional for last.pt / best.pt, which record theirs)",
        weights_help="a checkpoint (last.pt / best.pt / torchvision) or an exported file "
        "(.onnx, int8 .onnx, .pte)",
    )
    parser.add_argument(
        "--source", required=True, help="an image, a folder, a glob, a list file or a video"
    )
    parser.add_argument("--out", required=True, help="the output folder")
    parser.add_argument(
        "--save",
        nargs="+",
        choices=SAVE_KINDS,
        default=None,
        help="what to write per image: labels (label PNGs), overlays (JPEGs), json "
        "(detections.json, COCO results), txt (a line per box), probs (float16 class "
        "probabilities, .npy); default: labels and overlays, and json for a model that detects",
    )
    parser.add_argument("--recursive", action="store_true", help="a folder's subfolders too")
    parser.add_argument(
        "--label-ids",
        action="store_true",
        help="label PNGs in the dataset's label ids (as the official Cityscapes script reads "
        "them; eval_seg --save-predictions), not train ids",
    )
    parser.add_argument(
        "--coco-ids",
        metavar="FILE",
        help="a COCO json of the images: its image ids (by file name) and category ids in "
        "detections.json (default: ids from the file names, the model's labels)",
    )
    parser.add_argument(
        "--match-eval",
        action="store_true",
        help="segmentation: evaluation's own arithmetic (BatchNorm unfolded, one image per "
        "network call, the scores upsampled then argmax), so label PNGs equal eval_seg "
        "--save-predictions' bit for bit; slower. By default a few pixels in 10^7, where two "
        "classes' scores tie, may round the other way",
    )
    parser.add_argument("--shard", metavar="K/N", help="every N-th image from the K-th (0-based)")
    parser.add_argument("--overwrite", action="store_true", help="make outputs that exist again")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable file")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per network batch (default: the threads, at most 4, on the CPU; 8 on CUDA)",
    )
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    parser.add_argument(
        "--tta",
        nargs="+",
        metavar="WORD",
        help="segmentation: test-time augmentation, e.g. --tta scales=0.75,1.0,1.25 flip",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N"
    )
    add_inference_arguments(parser)
    add_runtime_argument(parser)
    add_threads_argument(parser, help="CPU threads in all (default: torch's count)")
    add_input_size_argument(
        parser,
        help="segmentation: run the network at HxW and scale its label map to the image "
        "(default: the config's eval size, else the image's)",
    )
    parser.add_argument("--score-threshold", type=float, default=0.3, help="lowest box score")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_set_argument(parser)
    args = parser.parse_args(argv)
    for name in ("batch_size", "workers", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from densemnv3.inference.sources import images_of, parse_shard, shard

    k, n = parse_shard(args.shard) if args.shard else (0, 1)
    images = images_of(args.source, recursive=args.recursive)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {out}: cannot use as the output folder ({err.strerror})") from None
    if images.left_out:
        kinds = ", ".join(f"{count} {suffix}" for suffix, count in images.left_out.most_common())
        print(f"left out {sum(images.left_out.values())} files that are not images ({kinds})")

    predictor, threads = _predictor(args)
    from densemnv3.inference.outputs import Outputs, default_save

    ids, category = _coco_ids(args.coco_ids, predictor.cfg)
    seg_classes = recorded_classes(predictor.cfg.data)
    outputs = Outputs(
        out,
        args.save or default_save(predictor.task),
        predictor.task,
        label_ids=args.label_ids,
        alpha=args.alpha,
        classes=seg_classes,
        category=category,
        image_ids=ids,
    )
    classes = predictor.num_classes or predictor.cfg.model.num_classes
    if outputs.label_ids and (classes != 19 or seg_classes.names != CITYSCAPES_CLASSES.names):
        raise UserError(
            f"--label-ids maps Cityscapes' 19 train ids to its label ids; this model has "
            f"{classes} classes ({', '.join(seg_classes.names[:3])}, ...)"
        )
    print(f"{predictor.settings.describe()}, {threads} threads", flush=True)

    from densemnv3.inference.sources import video_frames

    if images.video:
        items, names, total = video_frames(images.video, k, n), None, _frame_count(images, k, n)
    else:
        names = images.names
        items = list(zip(shard(images.names, k, n), shard(images.paths, k, n)))
        total = len(items)
    run = _Run(outputs, overwrite=args.overwrite)
    batch = args.batch_size or (8 if predictor.device.type == "cuda" else min(threads, 4))
    batch = 1 if args.match_eval else batch
    try:
        elapsed = run.predict(
            predictor,
            items,
            total=total,
            batch_size=batch,
            workers=args.workers,
            strict=args.strict,
            probabilities=outputs.probabilities,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except KeyboardInterrupt:
        print(
            f"interrupted after {run.predicted} images; the same command goes on where it stopped",
            file=sys.stderr,
        )
        return 130
    rate = run.predicted / elapsed if elapsed > 0 else 0.0
    route = f"{predictor.settings.describe().removeprefix('inference: ')}, {threads} threads"
    counts = outputs.gather(
        names if names is not None else run.names,
        predictor.class_names if predictor.task == "detection" else seg_classes.names,
        f"{run.predicted} images, {run.skipped} skipped, {rate:.2f} images/s, {route}",
    )
    print(run.table(elapsed))
    done = f", {run.already} already done (--overwrite makes them again)" if run.already else ""
    print(f"predicted {run.predicted} images{done}; wrote {out}")
    if counts["missing"]:
        print(
            f"{counts['missing']} images of the source have no outputs yet (other shards', or a "
            f"run stopped early); the summary files cover the {counts['done']} done"
        )
    if run.skipped and not run.predicted and not run.already:
        raise UserError(
            f"no image could be read: all {run.skipped} are listed in {out / 'skipped_files.txt'}"
        )
    if run.skipped:
        print(
            f"warning: {run.skipped} files could not be read and were skipped; listed with the "
            f"reason in {out / 'skipped_files.txt'}",
            file=sys.stderr,
        )
    return 0


def _predictor(args: argparse.Namespace):
    """The Predictor ``args`` ask for, and the threads it has."""
    import torch

    test_time = None
    if args.tta:
        from densemnv3.config import EvalConfig
        from densemnv3.inference.eval_modes import parse_tta

        test_time = EvalConfig(tta=parse_tta(args.tta))
    threads = args.threads or torch.get_num_threads()
    predictor = predictor_from_args(
        args,
        threads=threads,
        measure_size=tuple(args.input_size) if args.input_size else None,
        test_time=test_time,
        fuse_bn=not args.match_eval,
    )
    if test_time is not None and predictor.task == "detection":
        raise UserError("--tta: test-time augmentation applies to segmentation, not boxes")
    if args.input_size is not None and predictor.task != "detection":
        predictor.input_size, predictor.label_upsample = tuple(args.input_size), "labels"
    if args.match_eval:
        if args.input_size is not None:
            raise UserError("--match-eval: evaluation runs at the config's size; drop --input-size")
        predictor.label_upsample = "scores"
    return predictor, threads


def _coco_ids(path: str | None, cfg):
    """(name -> image id, label -> category id) of ``--coco-ids`` (the defaults without it)."""
    from densemnv3.inference.outputs import image_id

    if path is None:
        if cfg.data.label_mapping == "contiguous":
            print(
                "category_id: the model's labels (it was trained with contiguous labels); give "
                "--coco-ids with the dataset's json for its category ids"
            )
        return (lambda name, path: image_id(name, path, None)), int
    try:
        data = json.loads(Path(path).read_text())
        files = {image["file_name"]: int(image["id"]) for image in data["images"]}
        categories = sorted(int(c["id"]) for c in data.get("categories", []))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"--coco-ids {path}: not a COCO json with images (file_name, id) ({err})"
        ) from None
    files |= {Path(name).name: i for name, i in list(files.items())}
    if cfg.data.label_mapping == "contiguous" and categories:
        table = dict(enumerate(categories, start=1))
        category = lambda label: table.get(label, label)  # noqa: E731
    else:
        category = int
    return (lambda name, path: image_id(name, path, files)), category


def _frame_count(images, k: int, n: int) -> int | None:
    import cv2

    capture = cv2.VideoCapture(images.video)
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return max(0, (frames - k + n - 1) // n) if frames > 0 else None


class _Run:
    """One pass over the items: the images already done left out, the others predicted and
    written in the background, in order, with the time of each stage."""

    def __init__(self, outputs, *, overwrite: bool) -> None:
        self.outputs, self.overwrite = outputs, overwrite
        self.predicted = self.skipped = self.already = 0
        self.names: list[str] = []
        self.ms = {"decode": 0.0, "network": 0.0, "post-process": 0.0, "write": 0.0}

    def predict(self, predictor, items, *, total, progress, **kwargs) -> float:
        """Predict and write ``items`` (``(name, path)`` or ``(name, frame)``); the seconds."""
        from tqdm import tqdm

        from densemnv3.inference.batch import predict_files

        bar = tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True)
        todo = self._todo(items, bar)
        start = time.perf_counter()
        names = deque()
        writing: deque = deque()
        with ThreadPoolExecutor(1, thread_name_prefix="densemnv3-write") as writer:
            for prediction in predict_files(predictor, _feed(todo, names), **kwargs):
                name = names.popleft()
                writing.append(writer.submit(self.outputs.write, prediction, name))
                self.ms["decode"] += prediction.decode_ms
                self.ms["network"] += prediction.network_ms
                if prediction.error is None:
                    self.predicted += 1
                else:
                    self.skipped += 1
                while len(writing) > 4 or (writing and writing[0].done()):
                    self._written(writing.popleft().result(), bar)
            while writing:
                self._written(writing.popleft().result(), bar)
        bar.close()
        return time.perf_counter() - start

    def _todo(self, items, bar):
        for name, item in items:
            self.names.append(name)
            if not self.overwrite and self.outputs.done(name):
                self.already += 1
                bar.update()
                continue
            yield name, item

    def _written(self, done, bar) -> None:
        _, post, write = done
        self.ms["post-process"] += post
        self.ms["write"] += write
        bar.update()

    def table(self, elapsed: float) -> str:
        """The stage table printed at the end (ms per image; images/s)."""
        count = max(self.predicted, 1)
        notes = {
            "decode": "decoding threads, ahead of the network",
            "network": "network, label maps and boxes",
            "post-process": "overlays, label ids, boxes (writer thread)",
            "write": "encode and write (writer thread)",
        }
        lines = [f"{'stage':<14}{'ms/image':>10}"]
        lines += [f"{k:<14}{v / count:>10.2f}  {notes[k]}" for k, v in self.ms.items()]
        rate = self.predicted / elapsed if elapsed > 0 else 0.0
        lines.append(f"{'end-to-end':<14}{1000 / rate if rate else 0:>10.2f}  {rate:.2f} images/s")
        return "\n".join(lines)


def _feed(todo, names: deque):
    """The items for :func:`predict_files`, their names kept in ``names`` in the same order."""
    for name, item in todo:
        names.append(name)
        yield item if isinstance(item, str) else (name, item)
