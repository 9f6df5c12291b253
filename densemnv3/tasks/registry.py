"""The task registry: ``cfg.task`` names a class registered here with :func:`register_task`."""

from __future__ import annotations

from densemnv3.utils.registry import Registry

#: Task classes by name; each is built as ``TaskClass(cfg)``.
TASKS: Registry[type] = Registry("task")


def register_task(name: str):
    """Class decorator registering a task under ``name`` (the value of ``cfg.task``)."""
    return TASKS.register(name)
