"""Loading a checkpoint into the model a config built, with one error naming the file and what it
is when it does not fit (another task, architecture or backbone)."""

from __future__ import annotations

import os

from torch import nn

from densemnv3.config.schema import task_tools
from densemnv3.errors import CheckpointError

from .identify import backbone_family, inspect_checkpoint
from .info import CheckpointInfo, pytorch_only
from .state import load_state_dict_checked

__all__ = ["load_weights"]


def load_weights(
    model: nn.Module, checkpoint: str | os.PathLike | CheckpointInfo, *, task: str, model_name: str
) -> CheckpointInfo:
    """Load a checkpoint into ``model`` (a ``model_name`` for ``task``); a file of another task,
    architecture or model raises :class:`CheckpointError` naming the file and what it is.

    A multi-task model also takes a segmentation or detection checkpoint: it loads into that
    part (:meth:`~densemnv3.models.LRASPPSSDLite.single_task_view`), backbone included."""
    info = checkpoint if isinstance(checkpoint, CheckpointInfo) else inspect_checkpoint(checkpoint)
    pytorch_only(info, "a PyTorch model (training, --resume, model.weights, export, quantization)")
    builds = f"the config builds a {task} model, {model_name}"
    part = None
    if task == "multitask" and info.task in ("segmentation", "detection"):
        model = part = model.single_task_view(info.task)  # an architecture of its own: any arch
        builds += f" (loading its {info.task} part)"
    if info.task == "classification":
        raise CheckpointError(
            f"{info.path}: {info.description}, without the {task} head; use it "
            f"as model.backbone_weights, and give the whole model's checkpoint here"
        )
    if info.task is None:
        raise CheckpointError(
            f"{info.path}: {info.description}, not an LR-ASPP or SSDLite checkpoint; {builds}"
        )
    if info.task != task and part is None:
        raise CheckpointError(
            f"{info.path}: {info.description}, but {builds}; use it with "
            f"{task_tools(info.task)} and the config it was trained with"
        )
    own = backbone_family(model.state_dict())
    other_arch = part is None and info.arch not in (None, model_name)
    if other_arch or (info.backbone and own and info.backbone != own):
        raise CheckpointError(
            f"{info.path}: {info.description}, but {builds}"
            + (f" on {own}" if own else "")
            + "; pass the config it was trained with"
        )
    try:
        load_state_dict_checked(model, info.weights)
    except CheckpointError as err:
        into = f" into the {info.task} part of the multi-task model" if part is not None else ""
        raise CheckpointError(f"{info.path}: {info.description}{into}; {err}") from None
    return info
