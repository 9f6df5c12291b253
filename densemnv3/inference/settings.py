"""Per-device inference defaults: precision, memory format, ``torch.compile``, CUDA graphs.

The one place that says what runs fastest where; the Predictor and the demo, export and benchmark
tools resolve their options here, and every choice can be overridden. CUDA: fp16, NCHW (its
depthwise convolutions are slower in channels_last), no compile or CUDA graphs, cuDNN autotuning
on. CPU: fp32 and channels_last (oneDNN's convolutions run faster in NHWC once BatchNorm is
folded), no compile. The figures behind both are in BENCHMARKS.md.

An exported file (ONNX, ExecuTorch ``.pte``) runs in a runtime of :mod:`densemnv3.runtimes` on the
CPU, without compile or CUDA graphs, in the file's precision (``int8`` for ``tools/quantize.py``'s
files) or the runtime's hint (OpenVINO: bf16 where the CPU has it). Imports torch only when a
device is resolved, so a tool parses its arguments (and reports a bad one) at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from densemnv3.errors import UserError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ALL_PRECISIONS",
    "MEMORY_FORMATS",
    "PRECISIONS",
    "InferenceSettings",
    "export_settings",
    "inference_defaults",
    "parse_variant",
    "resolve_inference",
]

PRECISIONS = ("fp32", "fp16", "bf16")
#: Precisions of the PyTorch model, plus int8: a quantized ONNX file run by onnxruntime.
ALL_PRECISIONS = (*PRECISIONS, "int8")
MEMORY_FORMATS = ("nchw", "channels_last")


@dataclass(frozen=True)
class InferenceSettings:
    """How a model runs for inference on ``device``.

    ``compile`` and ``cuda_graphs`` together mean ``torch.compile(mode="max-autotune")`` (Inductor
    replays CUDA graphs itself); ``compile`` alone ``max-autotune-no-cudagraphs`` on CUDA and
    Inductor freezing on CPU; ``cuda_graphs`` alone a captured graph of the eager network.
    """

    device: torch.device
    precision: str = "fp32"
    memory_format: str = "nchw"
    compile: bool = False
    cuda_graphs: bool = False
    runtime: str = "torch"  # or an engine of densemnv3.runtimes running an exported file
    engine: str = ""  # that engine, and why it runs the file, in a few words

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the network's inputs (and weights): int8 files take float32 inputs."""
        import torch

        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)

    @property
    def channels_last(self) -> bool:
        return self.memory_format == "channels_last"

    @property
    def torch_memory_format(self) -> torch.memory_format:
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def compile_mode(self) -> str | None:
        """The ``torch.compile`` mode on CUDA (None: not compiled)."""
        if not self.compile:
            return None
        return "max-autotune" if self.cuda_graphs else "max-autotune-no-cudagraphs"

    def describe(self) -> str:
        """One line, e.g. ``inference: cuda, fp16, NCHW, compile off, cuda-graphs off``."""
        if self.runtime != "torch":
            return f"inference: {self.device}, {self.precision}, {self.engine or self.runtime}"
        fmt = "channels_last" if self.channels_last else "NCHW"
        onoff = {True: "on", False: "off"}
        return (
            f"inference: {self.device}, {self.precision}, {fmt}, compile {onoff[self.compile]}, "
            f"cuda-graphs {onoff[self.cuda_graphs]}"
        )

    def apply_backend_flags(self) -> None:
        """cuDNN autotuning on CUDA (the fastest convolution per shape), unless deterministic
        algorithms were asked for."""
        import torch

        if self.device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
            torch.backends.cudnn.benchmark = True


def inference_defaults(device: str | torch.device) -> InferenceSettings:
    """The fastest settings for ``device`` (see the module docstring)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return InferenceSettings(device, precision="fp16", memory_format="nchw")
    return InferenceSettings(device, precision="fp32", memory_format="channels_last")


def resolve_inference(
    device: str | torch.device = "auto",
    *,
    precision: str | None = None,
    memory_format: str | None = None,
    channels_last: bool | None = None,
    compile: bool | None = None,
    cuda_graphs: bool | None = None,
    runtime: str = "torch",
) -> InferenceSettings:
    """``inference_defaults(device)`` with every option that is not None overriding it;
    ``channels_last`` is a boolean spelling of ``memory_format``. Raises :class:`UserError` for
    unknown values and combinations the device cannot run. ``runtime`` other than ``torch`` (an
    engine of :mod:`densemnv3.runtimes`): an exported file, on the CPU, without compile or CUDA
    graphs."""
    import torch

    from densemnv3.utils.device import resolve_device

    if channels_last is not None:
        spelled = "channels_last" if channels_last else "nchw"
        if memory_format is not None and memory_format != spelled:
            raise UserError(
                f"memory_format={memory_format!r} contradicts channels_last={channels_last}; "
                f"give one of them"
            )
        memory_format = spelled
    resolved = torch.device(resolve_device(str(device)))
    given = {
        "precision": precision,
        "memory_format": memory_format,
        "compile": compile,
        "cuda_graphs": cuda_graphs,
    }
    settings = replace(
        inference_defaults(resolved),
        runtime=runtime,
        **{k: v for k, v in given.items() if v is not None},
    )
    if settings.precision not in ALL_PRECISIONS:
        raise UserError(
            f"precision must be one of {', '.join(ALL_PRECISIONS)}, got {settings.precision!r}"
        )
    if settings.precision == "int8" and settings.runtime == "torch":
        settings = replace(settings, runtime="onnxruntime")  # int8 is a quantized ONNX file
    if settings.runtime != "torch":
        what = (
            "int8 (a quantized ONNX file)" if settings.precision == "int8" else "an exported file"
        )
        if resolved.type != "cpu" or settings.compile or settings.cuda_graphs:
            raise UserError(
                f"{what} runs in {settings.runtime} on the CPU: use --device cpu, without "
                f"--compile and --cuda-graphs"
            )
    if settings.memory_format not in MEMORY_FORMATS:
        raise UserError(
            f"memory format must be one of {', '.join(MEMORY_FORMATS)}, got "
            f"{settings.memory_format!r}"
        )
    if resolved.type != "cuda" and settings.runtime == "torch":
        if settings.precision == "fp16":
            raise UserError(
                "precision fp16 needs a CUDA device (CPU kernels for half precision are slow "
                "or missing); use --precision bf16 or fp32 on CPU"
            )
        if settings.cuda_graphs:
            raise UserError("CUDA graphs need a CUDA device; drop --cuda-graphs on CPU")
    return settings


def parse_variant(text: str, device: str | torch.device) -> InferenceSettings:
    """Settings from a ``+``-joined spec, starting from the device's defaults: ``default``,
    ``fp16+graphs``, ``bf16+compile``, ``fp32+channels_last``, ``fp16+nchw+compile+graphs``.

    Tokens: a precision, ``nchw`` / ``channels_last``, ``compile``, ``graphs``.
    """
    options: dict[str, object] = {}
    for token in filter(None, text.lower().split("+")):
        if token == "default":
            continue
        if token in ALL_PRECISIONS:
            options["precision"] = token
        elif token in MEMORY_FORMATS:
            options["memory_format"] = token
        elif token == "compile":
            options["compile"] = True
        elif token in ("graphs", "cuda_graphs", "cuda-graphs"):
            options["cuda_graphs"] = True
        else:
            raise UserError(
                f"variant {text!r}: unknown part {token!r}; use a precision "
                f"({', '.join(ALL_PRECISIONS)}), nchw, channels_last, compile or graphs, "
                f"joined by '+', e.g. fp16+graphs"
            )
    return resolve_inference(device, **options)


def export_settings() -> InferenceSettings:
    """What ``export.py`` writes on every device: an fp32 NCHW graph, traced and checked on CPU.
    The file is device-neutral; reduced precision is the runtime's choice (TensorRT ``--fp16``,
    onnxruntime's float16 conversion), made where it runs and checked against this fp32 file."""
    return resolve_inference(
        "cpu", precision="fp32", memory_format="nchw", compile=False, cuda_graphs=False
    )
