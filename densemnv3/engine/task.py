"""What the trainer asks of a task (segmentation, detection, multi-task: :mod:`densemnv3.tasks`)."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

__all__ = ["Task"]


class Task(Protocol):
    metric: str  # the metric that decides best.pt (higher is better)

    def build_model(self) -> nn.Module: ...
    def train_dataset(self) -> Dataset: ...
    def val_dataset(self) -> Dataset: ...
    def collate(self, batch: list) -> Any: ...
    def losses(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]: ...
    def evaluate(
        self, model: nn.Module, dataset: Dataset, device: torch.device, *, progress: bool = True
    ) -> dict[str, Any]: ...
    def report(self, metrics: dict[str, Any]) -> str: ...
