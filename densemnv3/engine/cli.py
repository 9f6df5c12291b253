"""The ``train_*`` command line, shared by tools/train_seg.py and tools/train_det.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from densemnv3.config import load_config
from densemnv3.errors import ConfigError
from densemnv3.utils.cli import add_set_argument, resolve_device


def train_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", help="a config file, e.g. configs/lraspp_synthetic.py")
    add_set_argument(parser)
    parser.add_argument("--work-dir", help="run directory (default: the config's work_dir)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT",
                        help="continue a run: from CKPT, or from WORK_DIR/last.pt if no path is given")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def train_from_cli(task_name: str, description: str, argv: list[str] | None = None) -> int:
    """Parse the command line, train, and print where the results are."""
    from densemnv3.engine import distributed as dist_utils
    from densemnv3.engine.trainer import Trainer
    from densemnv3.tasks import build_task

    args = train_parser(description).parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.task != task_name:
        raise ConfigError(f"{args.config}: this is a {cfg.task} config; use tools/train_"
                          f"{'seg' if cfg.task == 'segmentation' else 'det'}.py")
    if args.work_dir:
        cfg.work_dir = args.work_dir
    device = resolve_device(args.device or cfg.train.device)
    resume = None
    if args.resume is not None:
        resume = Path(args.resume) if args.resume else Path(cfg.work_dir) / "last.pt"
    task = build_task(cfg)
    trainer = Trainer(cfg, task, device=device, resume=resume, progress=not args.no_progress)
    try:
        metrics = trainer.fit()
    finally:
        dist_utils.cleanup()
    if trainer.is_main:
        work = Path(cfg.work_dir)
        print(f"\nfinal {task.metric}: {metrics.get(task.metric, float('nan')):.4f} "
              f"(best {trainer.best_metric:.4f})")
        print(f"run directory: {work}  (last.pt, best.pt, results.csv, results.png, metrics.json, "
              f"config.py, tb/)")
    return 0


def eval_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--weights", required=True,
                        help="a checkpoint: last.pt / best.pt, or a torchvision file")
    add_set_argument(parser)
    parser.add_argument("--out", help="output folder (default: the checkpoint's folder)")
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's)")
    return parser


def load_for_eval(args: argparse.Namespace):
    """(cfg, task, model in eval mode on its device, device) for an ``eval_*`` tool."""
    import torch

    from densemnv3.engine.checkpoint import load_checkpoint
    from densemnv3.models import load_torchvision_weights
    from densemnv3.tasks import build_task

    cfg = load_config(args.config, args.overrides)
    device = torch.device(resolve_device(args.device or cfg.train.device))
    task = build_task(cfg)
    model = task.build_model()
    load_torchvision_weights(model, load_checkpoint(args.weights))
    return cfg, task, model.to(device).eval(), device


def output_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out) if args.out else Path(args.weights).parent
    out.mkdir(parents=True, exist_ok=True)
    return out
