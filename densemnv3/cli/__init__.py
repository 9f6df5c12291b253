"""The ``densemnv3`` command: one subcommand per tool, each the ``main(argv)`` its script calls.

``densemnv3 train lraspp_synthetic`` after ``pip install densemnv3`` is ``python
tools/train.py configs/lraspp_synthetic.py`` in a clone: the scripts in ``tools/`` import the
same ``main`` from the modules of this package. A new tool is one module here and one row in
:data:`COMMANDS`. Multi-process: ``torchrun --nproc_per_node=N -m densemnv3 train CONFIG``.
"""

from __future__ import annotations

import importlib
import sys

from densemnv3 import __version__
from densemnv3.errors import UserError, did_you_mean

__all__ = ["COMMANDS", "main"]

#: subcommand -> (module of densemnv3.cli with ``main(argv)``, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train the model of a config (segmentation, detection or multi-task)"),
    "eval": ("eval", "evaluate a checkpoint or exported file of any task"),
    "export": ("export", "export a checkpoint to ONNX or TorchScript, checked against PyTorch"),
    "quantize": ("quantize", "quantize a checkpoint to an int8 ONNX file (onnxruntime)"),
    "netadapt": ("netadapt", "shrink a trained model to a latency budget on a runtime (NetAdapt)"),
    "demo": ("demo", "run a model on a video file, camera or stream, with overlays"),
    "predict": (
        "predict",
        "predict a folder, glob, list or video of images: masks, overlays, boxes",
    ),
    "benchmark": ("benchmark", "time densemnv3 against torchvision, interleaved"),
    "data": ("data", "check a dataset: counts, class shares, problems, a contact sheet"),
    "make-synthetic": ("make_synthetic", "write the synthetic street dataset and/or a video"),
    "cache-dataset": ("cache_dataset", "decode a Cityscapes split once into a cache"),
    "configs": ("", "list the shipped configs, by name, with what each is"),
    "train-seg": ("train_seg", "train, the config must be a segmentation one"),
    "train-det": ("train_det", "train, the config must be a detection one"),
    "eval-seg": ("eval_seg", "evaluate a segmentation checkpoint"),
    "eval-det": ("eval_det", "evaluate a detection checkpoint"),
}

USAGE = """usage: densemnv3 [--version] COMMAND [ARGS ...]

MobileNetV3 LR-ASPP segmentation and SSDLite detection: train, evaluate, export and demo.

commands:
{commands}

A CONFIG is a shipped config's name (see `densemnv3 configs`) or a config file's path.
`densemnv3 COMMAND --help` says more about each. Examples:
  densemnv3 train lraspp_synthetic
  densemnv3 train lraspp_cityscapes --set data.root=/data/cityscapes
  densemnv3 eval --weights work_dirs/lraspp_synthetic/best.pt
  densemnv3 demo --weights work_dirs/lraspp_synthetic/best.pt --source 0
  densemnv3 predict --weights work_dirs/lraspp_synthetic/best.pt --source images/ --out preds/
"""


def _usage() -> str:
    width = max(map(len, COMMANDS))
    return USAGE.format(
        commands="\n".join(f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items())
    )


def list_configs() -> int:
    """``densemnv3 configs``: the shipped configs, one line each."""
    from densemnv3.config import shipped_configs

    configs = shipped_configs()
    width = max(map(len, configs))
    for name, description in configs.items():
        print(f"{name:<{width}}  {description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to its subcommand's ``main``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"densemnv3 {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise UserError(
            f"unknown command {name!r}{did_you_mean(name, COMMANDS)}; the commands are "
            f"{', '.join(COMMANDS)} (densemnv3 --help)"
        )
    if name == "configs":
        return list_configs()
    module = importlib.import_module(f"densemnv3.cli.{COMMANDS[name][0]}")
    sys.argv[0] = f"densemnv3 {name}"  # argparse names the program after it in usage and errors
    return module.main(rest)


def run() -> None:
    """The console script's entry point: :func:`main` with one-line errors."""
    from densemnv3.cli.entry import run_main

    run_main(main)
