"""What every stage of one NetAdapt run works with: the search (:mod:`.search`), the importance
study (:mod:`.importance`), the long fine-tune, the uniform baseline and the report (:mod:`.run`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from densemnv3.config import Config

__all__ = ["RunContext"]


@dataclass
class RunContext:
    """One NetAdapt run's setting, the same for each of its stages."""

    cfg: Config  # its ``netadapt`` section is the schedule
    task: Any  # the task of ``cfg``: fine-tuning and evaluation data, the metric
    table: Any  # the :class:`~densemnv3.netadapt.latency.LatencyTable` of the route measured on
    run_dir: Path  # the run folder (``search.pt``, ``finetune/``, ``summary.json`` ...)
    device: str  # where the models are fine-tuned and evaluated
    calibration: list[Tensor] | None = None  # an int8 route's calibration images
    progress: bool = True  # progress bars
    log: Callable[[str], None] = print  # where the run says what it does
