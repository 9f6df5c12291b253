"""Loading a state dict — torchvision's layout or densemnv3's — into a model, every key checked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn

from densemnv3.errors import CheckpointError

from .identify import read_checkpoint


@dataclass
class LoadResult:
    """Checkpoint keys that were present but deliberately not used."""

    ignored_keys: list[str] = field(default_factory=list)


def _unwrap(state: Mapping) -> Mapping[str, Tensor]:
    for key in ("model", "state_dict"):
        if key in state and isinstance(state[key], Mapping):
            return state[key]
    return state


def load_state_dict_checked(
    module: nn.Module, state_dict_or_path: Mapping[str, Tensor] | str | os.PathLike
) -> LoadResult:
    """Load a state dict (or a file holding one) of the matching architecture into ``module``:
    a torchvision checkpoint, or a densemnv3 one (``last.pt``/``best.pt``, whose ``model`` entry
    already has ``module``'s keys).

    ``module`` may define ``convert_torchvision_state_dict(sd) -> sd`` to rename torchvision's keys
    to its own, and ``torchvision_ignored_prefixes`` for keys it does not use (a backbone ignores
    the ``classifier.``). Every parameter and buffer of ``module`` must be in the checkpoint with
    the same shape; otherwise :class:`CheckpointError` names the first mismatched keys.
    """
    source = state_dict_or_path
    if isinstance(source, (str, os.PathLike)):
        try:
            return load_state_dict_checked(module, read_checkpoint(source))
        except CheckpointError as err:
            message = str(err)
            raise CheckpointError(message if message.startswith(str(source)) else f"{source}: {message}") from None
    state = dict(_unwrap(source))
    own = module.state_dict()
    convert = getattr(module, "convert_torchvision_state_dict", None)
    if convert is not None and not own.keys() <= state.keys():  # a densemnv3 checkpoint needs none
        try:
            state = convert(state)
        except (KeyError, ValueError, IndexError) as err:  # keys of some other model
            raise CheckpointError(
                f"checkpoint does not match {type(module).__name__}: its keys are not a torchvision "
                f"{type(module).__name__}'s ({type(err).__name__}: {err}); is it of another model?"
            ) from None
    ignored_prefixes = tuple(getattr(module, "torchvision_ignored_prefixes", ()))

    def skippable(key: str) -> bool:
        return key.endswith("num_batches_tracked")

    missing = [k for k in own if k not in state and not skippable(k)]
    unexpected = [k for k in state if k not in own and not skippable(k)]
    ignored = [k for k in unexpected if k.startswith(ignored_prefixes)]
    unexpected = [k for k in unexpected if not k.startswith(ignored_prefixes)]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches, first: " + "; ".join(mismatched[:3]))
        if missing:
            parts.append(f"{len(missing)} keys missing from the checkpoint, first: {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first: {unexpected[:3]}")
        name = type(module).__name__
        raise CheckpointError(
            f"checkpoint does not match {name}: " + " | ".join(parts)
            + ". Is it for another architecture or options (width_mult, reduced_tail, num_classes)?"
        )
    state = {k: v for k, v in state.items() if k in own}
    module.load_state_dict(state, strict=False)
    return LoadResult(ignored_keys=ignored)
