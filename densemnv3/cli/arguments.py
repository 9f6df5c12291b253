"""Command-line arguments the tools share: ``CONFIG`` and ``--weights``, ``--set``, ``--runtime``,
``--threads``, ``--input-size`` and the inference options, the settings they ask for
(:mod:`densemnv3.inference.settings`) and the model they name."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from densemnv3.errors import UserError
from densemnv3.inference.settings import (
    ALL_PRECISIONS,
    MEMORY_FORMATS,
    PRECISIONS,
    InferenceSettings,
    parse_variant,
    resolve_inference,
)
from densemnv3.runtimes.names import RUNTIMES

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHECKPOINT_HELP",
    "CONFIG_HELP",
    "add_inference_arguments",
    "add_input_size_argument",
    "add_runtime_argument",
    "add_set_argument",
    "add_threads_argument",
    "load_from_args",
    "model_parser",
    "predictor_from_args",
    "settings_from_args",
    "variants_from_args",
]

#: ``CONFIG``'s help where a checkpoint records its config.
CONFIG_HELP = "the config (optional for last.pt / best.pt)"
#: ``--weights``' help where PyTorch checkpoints are taken.
CHECKPOINT_HELP = "a checkpoint (last.pt / best.pt / torchvision)"


def model_parser(
    description: str | None, *, weights_help: str, config_help: str = CONFIG_HELP
) -> argparse.ArgumentParser:
    """A tool's parser (its description printed as written) starting with the model it takes: an
    optional ``CONFIG`` and a required ``--weights``; :func:`load_from_args` loads it."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", nargs="?", help=config_help)
    parser.add_argument("--weights", required=True, help=weights_help)
    return parser


def load_from_args(args: argparse.Namespace, **kwargs):
    """:func:`densemnv3.load.load_model` of ``--weights``, with ``CONFIG`` (when given) and
    ``--set`` (``kwargs``: its other options)."""
    from densemnv3.config import load_config
    from densemnv3.load import load_model

    return load_model(
        load_config(args.config, args.overrides) if args.config else None,
        args.weights,
        overrides=args.overrides,
        **kwargs,
    )


def predictor_from_args(args: argparse.Namespace, **kwargs):
    """The :class:`~densemnv3.inference.Predictor` of ``--weights`` (with ``CONFIG`` and
    ``--set``), ``--device``, ``--runtime``, ``--score-threshold`` and the options of
    :func:`add_inference_arguments`; ``kwargs``: its other options (``threads``,
    ``measure_size``, ...)."""
    from densemnv3.inference.predictor import Predictor

    return Predictor.from_checkpoint(
        args.weights,
        args.config,
        device=args.device,
        precision=args.precision,
        memory_format=args.memory_format,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
        overrides=args.overrides,
        score_threshold=args.score_threshold,
        runtime=args.runtime,
        **kwargs,
    )


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help="override config values, e.g. --set optim.lr=0.02 data.batch_size=4",
    )


def add_runtime_argument(parser: argparse.ArgumentParser) -> None:
    """``--runtime``: what runs the model (see :mod:`densemnv3.runtimes.choice`)."""
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="what runs the model: auto (default: torch for a checkpoint; for an exported "
        "file the fastest installed runtime, measured on this CPU and said in the "
        "'inference:' line), torch, onnxruntime / openvino (.onnx), executorch (.pte)",
    )


def add_threads_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--threads N`` (default None: the tool's own choice)."""
    parser.add_argument("--threads", type=int, default=None, help=help)


def add_input_size_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--input-size H W`` (default None: the tool's own choice)."""
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"), default=None, help=help
    )


def add_inference_arguments(
    parser: argparse.ArgumentParser, *, multi_precision: bool = False
) -> None:
    """``--precision``, ``--memory-format`` (``--channels-last`` for short), ``--compile`` and
    ``--cuda-graphs`` (each with a ``--no-`` form); left out, each is the device's default.
    ``multi_precision``: ``--precision`` takes several values (the benchmark)."""
    parser.add_argument(
        "--precision",
        choices=ALL_PRECISIONS if multi_precision else PRECISIONS,
        default=None,
        nargs="+" if multi_precision else None,
        help="default: fp16 on CUDA, fp32 on CPU"
        + (
            "; int8: the model quantized by onnxruntime (CPU)"
            if multi_precision
            else "; an int8 file sets its own"
        ),
    )
    parser.add_argument(
        "--memory-format",
        choices=MEMORY_FORMATS,
        default=None,
        help="default: nchw (channels_last slows CUDA's depthwise convolutions)",
    )
    parser.add_argument(
        "--channels-last",
        dest="memory_format",
        action="store_const",
        const="channels_last",
        help="same as --memory-format channels_last",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the network (default: off)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replay the network from CUDA graphs (default: off)",
    )


def settings_from_args(
    args: argparse.Namespace, device: str | torch.device | None = None
) -> InferenceSettings:
    """The settings the options of :func:`add_inference_arguments` (and ``args.device``) ask for."""
    precision = args.precision[0] if isinstance(args.precision, list) else args.precision
    return resolve_inference(
        device if device is not None else args.device,
        precision=precision,
        memory_format=args.memory_format,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
    )


def variants_from_args(
    args: argparse.Namespace, device: str | torch.device
) -> list[InferenceSettings]:
    """The combinations a benchmark times: ``args.variants`` (specs for :func:`parse_variant`)
    when given, else one per ``--precision`` (the device's default precision when none) with the
    other options of :func:`add_inference_arguments`."""
    if getattr(args, "variants", None):
        given = [
            a for a in ("memory_format", "compile", "cuda_graphs") if getattr(args, a) is not None
        ]
        if args.precision or given:
            raise UserError(
                "--variants names every option of each combination; drop --precision, "
                "--memory-format, --compile and --cuda-graphs, or drop --variants"
            )
        return [parse_variant(spec, device) for spec in args.variants]
    precisions = args.precision or [None]
    return [
        resolve_inference(
            device,
            precision=p,
            memory_format=args.memory_format,
            compile=args.compile,
            cuda_graphs=args.cuda_graphs,
        )
        for p in precisions
    ]
