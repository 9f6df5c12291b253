"""Checkpoints that are never half-written, and the RNG state that makes resume exact."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densemnv3.utils.files import atomic_write

__all__ = ["atomic_save", "get_rng_state", "set_rng_state"]


def atomic_save(obj: Any, path: str | os.PathLike, *, hint: str = "") -> Path:
    """``torch.save`` through :func:`~densemnv3.utils.files.atomic_write`: the file is whole or,
    on a full disk, the previous one is kept and :class:`WriteError` says so."""
    path = Path(path)
    with atomic_write(path, hint=hint) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)  # through Python's file: a failed write raises its OSError
    return path


def get_rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) RNG states, as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_as_tuple(v) for v in value)
    return value
