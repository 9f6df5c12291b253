"""Tasks tie a config to the engine: which model and data to build, the losses, the evaluation."""

from .segmentation import SegmentationTask

__all__ = ["SegmentationTask", "build_task"]


def build_task(cfg):
    """The task object for ``cfg.task``."""
    if cfg.task == "segmentation":
        return SegmentationTask(cfg)
    if cfg.task == "detection":
        from .detection import DetectionTask

        return DetectionTask(cfg)
    from densemnv3.errors import ConfigError

    raise ConfigError(f"task must be 'segmentation' or 'detection', got {cfg.task!r}")
