"""Which torch device a ``--device`` / ``train.device`` value means on this machine."""

from __future__ import annotations

from densemnv3.errors import UserError

__all__ = ["resolve_device"]


def resolve_device(device: str) -> str:
    """``auto``: ``cuda`` when available, else ``cpu``; CUDA asked for without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            "--device cuda was asked for but no CUDA device is available; use --device cpu"
        )
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"unknown device {device!r}; use cpu, cuda or auto")
    return device
