"""Tasks tie a config to the engine: which model and data to build, the losses, the evaluation."""

from .detection import DetectionTask
from .multitask import MultiTaskTask
from .registry import TASKS, register_task
from .segmentation import SegmentationTask

__all__ = [
    "TASKS",
    "DetectionTask",
    "MultiTaskTask",
    "SegmentationTask",
    "build_task",
    "list_tasks",
    "register_task",
]


def build_task(cfg):
    """The task object for ``cfg.task``."""
    return TASKS.get(cfg.task)(cfg)


def list_tasks() -> list[str]:
    """Names accepted as ``task`` in a config."""
    return TASKS.names()
