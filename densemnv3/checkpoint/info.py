"""What a weights file is, once read: :class:`CheckpointInfo`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from densemnv3.errors import CheckpointError

__all__ = ["CheckpointInfo", "pytorch_only"]


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint file, read and classified."""

    path: Path
    state: dict  # what the file holds
    weights: Mapping[str, Tensor]  # the model's state dict inside it
    task: str | None  # "segmentation", "detection", "multitask", "classification" or None
    arch: str | None  # the densemnv3 model name, when the file records it
    backbone: str | None  # the backbone family its layers show, e.g. "MobileNetV3-Small"
    description: (
        str  # "a detection checkpoint of ssdlite320_mobilenet_v3_small (densemnv3 training)"
    )
    format: str = (
        "pytorch"  # "onnx" / "pte": an exported file, run by a runtime (state: its metadata)
    )

    @property
    def exported(self) -> bool:
        """An exported file (ONNX, ExecuTorch), run by :mod:`densemnv3.runtimes`, not torch."""
        return self.format != "pytorch"

    @property
    def resumable(self) -> bool:
        """Written by the trainer, with the optimizer state that ``--resume`` needs."""
        return all(k in self.state for k in ("model", "optimizer", "scheduler", "iter", "rng"))


def pytorch_only(info: CheckpointInfo, use: str) -> None:
    """Raise the one :class:`CheckpointError` for an exported file (ONNX, ``.pte``) where ``use``
    needs PyTorch weights."""
    if info.exported:
        raise CheckpointError(
            f"{info.path}: {info.description}, which runs in a runtime (eval tools, "
            f"Predictor, demo, benchmark) but holds no PyTorch weights for {use}; "
            f"give the checkpoint it was made from (best.pt)"
        )
