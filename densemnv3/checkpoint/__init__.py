"""Weights files, below the models: what a file is (read once, :class:`CheckpointInfo`), reading
a PyTorch checkpoint, the metadata and graph checks of exported files, and loading a state dict
into a model with every key, shape and value checked. Nothing here imports a model.

Every tool loads weights through :func:`load_weights` (a checkpoint into the model a config
built) or :func:`load_state_dict_checked` (a state dict into any module).
"""

from .files import read_checkpoint, sniff
from .identify import backbone_family, inspect_checkpoint
from .info import CheckpointInfo, pytorch_only
from .load import load_weights
from .state import LoadResult, StateDict, check_finite, load_state_dict_checked, non_finite

__all__ = [
    "CheckpointInfo",
    "LoadResult",
    "StateDict",
    "backbone_family",
    "check_finite",
    "inspect_checkpoint",
    "load_state_dict_checked",
    "load_weights",
    "non_finite",
    "pytorch_only",
    "read_checkpoint",
    "sniff",
]
