"""The ``train_seg`` case: training images/s of a segmentation config on the device alone vs fed
by its own DataLoader (``engine.throughput``), on a synthetic Cityscapes root unless given one,
optionally also read from a decoded-sample cache of it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from densemnv3.config import SHIPPED_ROOT, load_config

TRAIN_CASES = ("train_seg",)
TRAIN_CONFIG = SHIPPED_ROOT / "configs" / "lraspp_cityscapes.py"


def bench_train(args, device: torch.device) -> dict:
    """Training images/s of a segmentation config on the device alone vs fed by its loader."""
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
