"""The training cases.

- ``train_seg``: training images/s of a segmentation config on the device alone vs fed by its own
  DataLoader (``engine.throughput``), on a synthetic Cityscapes root unless given one, optionally
  also read from a decoded-sample cache of it.
- ``train_step_lraspp``: one SGD step of LR-ASPP-Large (torchvision's architecture) on a batch of
  crops, ours as the trainer runs it against torchvision's model as its reference trains it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from densemnv3.config import SHIPPED_CONFIGS, load_config

TRAIN_CASES = ("train_seg", "train_step_lraspp")
TRAIN_CONFIG = SHIPPED_CONFIGS / "lraspp_cityscapes.py"


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
        rates = training_throughput(
            cfg,
            build_task,
            device=str(device),
            steps=args.iters,
            warmup=args.warmup,
            loader_variants=variants,
        )
    amp = cfg.train.amp and device.type == "cuda"
    crop = "x".join(str(v) for v in cfg.data.crop_size)
    return {
        "case": "train_seg",
        "input": f"{'synthetic ' + args.synthetic_size if not args.data_root else args.data_root}"
        f" -> {crop}",
        "precision": "amp fp16" if amp else "fp32",
        "config": str(args.config or TRAIN_CONFIG),
        "channels_last": cfg.train.channels_last,
        "decoded_cache": cfg.data.decoded_cache,
        **rates,
    }


def bench_train_step(args, device: torch.device) -> dict:
    """One SGD step (forward, loss, backward, update) of LR-ASPP-Large, same weights and batch:
    ours as the trainer runs it (channels_last, ``resize_bilinear``, ``cross_entropy_2d``) against
    torchvision's ``lraspp_mobilenet_v3_large`` (NCHW, ``F.interpolate`` inside,
    ``F.cross_entropy`` on ``out``), as torchvision's segmentation reference trains it. Batch and
    crop are the config's (``--config``; default ``lraspp_synthetic.py``'s, 8 of 128x256)."""
    from torch.nn import functional as F

    from densemnv3.models.losses import cross_entropy_2d

    from .models import build_pair
    from .reference import SEG_CLASSES
    from .timing import time_interleaved, timed_record

    cfg = args.cfg or load_config(SHIPPED_CONFIGS / "lraspp_synthetic.py")
    batch, size = (2, (64, 128)) if args.quick else (cfg.data.batch_size, tuple(cfg.data.crop_size))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *size, generator=gen).to(device)
    target = torch.randint(0, SEG_CLASSES, (batch, *size), generator=gen).to(device)
    target[:, : size[0] // 8] = 255  # some ignored pixels, as in Cityscapes
    tv, ours, _ = build_pair("lraspp_large", device, x[:2])
    ours = ours.train().to(memory_format=torch.channels_last)
    tv.train()
    x_last = x.contiguous(memory_format=torch.channels_last)

    def sgd_step(model, loss_of):
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=4e-5)

        def call():
            with torch.inference_mode(False):  # time_interleaved runs under inference_mode
                loss = loss_of()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss.item()

        return call

    losses = {
        "ours": lambda: cross_entropy_2d(ours(x_last), target),
        "tv": lambda: F.cross_entropy(tv(x)["out"], target, ignore_index=255),
    }
    with torch.no_grad():  # same weights, same batch: the same loss before any step
        first = {name: loss().item() for name, loss in losses.items()}
    seconds = time_interleaved(
        {name: sgd_step(model, losses[name]) for name, model in (("ours", ours), ("tv", tv))},
        args.iters,
        args.warmup,
        device,
    )
    return timed_record("train_step_lraspp", f"{size[0]}x{size[1]}", batch, "fp32", seconds) | {
        "ours_loss": first["ours"],
        "tv_loss": first["tv"],
    }


def _synthetic_root(tmp: Path, size: tuple[int, int], images: int) -> str:
    from densemnv3.data.synthetic import make_synthetic

    return str(make_synthetic(tmp / "synthetic", train=images, val=1, size=size, progress=False))


def _decoded_cache(cfg, out: Path) -> str:
    from densemnv3.data.cache import write_decoded_cache
    from densemnv3.data.cityscapes import CityscapesSegmentation

    dataset = CityscapesSegmentation(
        cfg.data.root, cfg.data.train_split, skip_bad=cfg.data.skip_bad
    )
    return str(write_decoded_cache(dataset, out, progress=False))
