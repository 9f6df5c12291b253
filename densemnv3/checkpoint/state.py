"""Loading a state dict — torchvision's layout or densemnv3's — into a model, every key checked."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from densemnv3.errors import CheckpointError

from .files import read_checkpoint

#: A state dict, or the path of a file holding one (a checkpoint, a torchvision file).
StateDict = Mapping[str, Tensor] | str | os.PathLike

#: Set to 1 to load weights that hold NaN or inf anyway (to inspect a diverged run), with a warning.
ALLOW_NON_FINITE = "DENSEMNV3_ALLOW_NON_FINITE"


def non_finite(tensors: Mapping[str, Tensor]) -> dict[str, str]:
    """The floating-point entries of ``tensors`` holding NaN or inf: name -> ``"3 NaN, 1 +inf"``."""
    found = {}
    for name, t in tensors.items():
        if not isinstance(t, Tensor) or not t.is_floating_point() or bool(torch.isfinite(t).all()):
            continue
        counts = (
            ("NaN", int(t.isnan().sum())),
            ("+inf", int(t.isposinf().sum())),
            ("-inf", int(t.isneginf().sum())),
        )
        found[name] = ", ".join(f"{n} {what}" for what, n in counts if n)
    return found


def check_finite(tensors: Mapping[str, Tensor], what: str = "the checkpoint") -> None:
    """A :class:`CheckpointError` naming the tensors of ``tensors`` that hold NaN or inf (their
    names and counts), unless the environment sets :data:`ALLOW_NON_FINITE` to 1: then a warning."""
    bad = non_finite(tensors)
    if not bad:
        return
    listed = "; ".join(f"{name} ({counts})" for name, counts in list(bad.items())[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    message = (
        f"{what} holds non-finite values in {len(bad)} of {len(tensors)} tensors: {listed}{more}"
    )
    if os.environ.get(ALLOW_NON_FINITE) == "1":
        print(
            f"warning: {message}; loaded anyway ({ALLOW_NON_FINITE}=1): every output derived "
            f"from it is suspect",
            file=sys.stderr,
        )
        return
    raise CheckpointError(
        f"{message}; the run that wrote it diverged or the file is damaged: use "
        f"an earlier checkpoint (or set {ALLOW_NON_FINITE}=1 to load it anyway, "
        f"for inspection)"
    )


@dataclass
class LoadResult:
    """Checkpoint keys that were present but deliberately not used."""

    ignored_keys: list[str] = field(default_factory=list)


def unwrap_state_dict(state: Mapping) -> Mapping:
    """The model's state dict inside a checkpoint: its ``model`` (densemnv3) or ``state_dict``
    entry, else ``state`` itself (a bare state dict, as torchvision's files are)."""
    for key in ("model", "state_dict"):
        if key in state and isinstance(state[key], Mapping):
            return state[key]
    return state


def load_state_dict_checked(module: nn.Module, state_dict_or_path: StateDict) -> LoadResult:
    """Load a state dict (or a file holding one) of the matching architecture into ``module``:
    a torchvision checkpoint, or a densemnv3 one (``last.pt``/``best.pt``, whose ``model`` entry
    already has ``module``'s keys).

    ``module`` may define ``convert_torchvision_state_dict(sd) -> sd`` to rename torchvision's keys
    to its own, and ``torchvision_ignored_prefixes`` for keys it does not use (a backbone ignores
    the ``classifier.``). Every parameter and buffer of ``module`` must be in the checkpoint with
    the same shape; otherwise :class:`CheckpointError` names the first mismatched keys. Weights
    holding NaN or inf are refused the same way (:func:`check_finite`).
    """
    source = state_dict_or_path
    if isinstance(source, (str, os.PathLike)):
        try:
            return load_state_dict_checked(module, read_checkpoint(source))
        except CheckpointError as err:
            message = str(err)
            raise CheckpointError(
                message if message.startswith(str(source)) else f"{source}: {message}"
            ) from None
    state = dict(unwrap_state_dict(source))
    own = module.state_dict()
    convert = getattr(module, "convert_torchvision_state_dict", None)
    if convert is not None and not own.keys() <= state.keys():  # a densemnv3 checkpoint needs none
        try:
            state = convert(state)
        except (KeyError, ValueError, IndexError) as err:  # keys of some other model
            raise CheckpointError(
                f"checkpoint does not match {type(module).__name__}: its keys are not a "
                f"torchvision {type(module).__name__}'s ({type(err).__name__}: {err}); is it of "
                f"another model?"
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
            f"checkpoint does not match {name}: "
            + " | ".join(parts)
            + ". Is it for another architecture or options (width_mult, reduced_tail, num_classes)?"
        )
    state = {k: v for k, v in state.items() if k in own}
    check_finite(state)
    module.load_state_dict(state, strict=False)
    return LoadResult(ignored_keys=ignored)
