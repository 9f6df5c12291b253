"""Which torch device a ``--device`` / ``train.device`` value means on this machine, and torch's
CPU threads for a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from densemnv3.errors import UserError

__all__ = ["resolve_device", "torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``threads`` inside (process-wide), restored after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
