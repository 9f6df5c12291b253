"""A NetAdapt search's state, saved after every iteration with the kept model (``search.pt``),
so a run continues with ``--resume`` and every tool loads the kept model."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densemnv3.config import Config
from densemnv3.engine.checkpoint import atomic_save
from densemnv3.models import build_model
from densemnv3.models.prune import widths_of

STATE_FILE = "search.pt"


@dataclass
class SearchState:
    """What a run has done: saved after every iteration (with the kept model's weights)."""

    original_ms: float  # measured alone, at the start
    original_metric: float  # quick evaluation
    glue_ms: float
    iteration: int = 0
    latency_ms: float = 0.0  # the kept model's: original_ms × ratio
    predicted_ms: float = 0.0
    metric: float = math.nan
    widths: dict[str, int] = field(default_factory=dict)
    proposals: list[dict[str, Any]] = field(default_factory=list)
    path: list[dict[str, Any]] = field(default_factory=list)  # per iteration: ratios, metric
    measure_whole: bool = False  # the last iteration measured every proposal side by side
    steps: int = 0  # fine-tuning steps the kept model has had
    seconds: float = 0.0
    done: bool = False
    ratio: float = 1.0  # the kept model's time over the original's, side by side
    cut_scale: float = 1.0  # × netadapt.step: doubled after an iteration that kept nothing
    misses: int = 0  # iterations in a row that kept nothing
    stopped: str = ""  # why the search stopped short of the target


def changed_widths(model: nn.Module, original: dict[str, int]) -> dict[str, int]:
    """The units of ``model`` whose width differs from ``original`` (unit -> width)."""
    return {name: w for name, w in widths_of(model).items() if w != original.get(name)}


def save_state(run_dir: Path, model: nn.Module, state: SearchState, cfg: Config) -> Path:
    """``search.pt``: a checkpoint of the kept model (it records its config, widths included, so
    every tool loads it) and the search's state."""
    shrunk = copy.deepcopy(cfg)
    shrunk.model.widths = changed_widths(model, state_original_widths(cfg)) or None
    shrunk.model.weights = shrunk.model.backbone_weights = None
    return atomic_save(
        {
            "model": model.state_dict(),
            "config": asdict(shrunk),
            "arch": cfg.model.name,
            "netadapt": asdict(state),
        },
        run_dir / STATE_FILE,
        hint="free some space, then continue with --resume",
    )


def state_original_widths(cfg: Config) -> dict[str, int]:
    """The widths of the model ``cfg`` builds before any NetAdapt (``model.widths`` left out)."""
    plain = copy.deepcopy(cfg.model)
    plain.widths = plain.weights = plain.backbone_weights = None
    return widths_of(build_model(plain))


def load_state(path: Path) -> tuple[dict, SearchState]:
    """The checkpoint and :class:`SearchState` of ``search.pt``."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint, SearchState(**checkpoint["netadapt"])
