"""The one way from a config and a weights file to a model: :func:`load_model`.

A checkpoint written by the trainer carries the resolved config it was trained with, so
``load_model(None, "best.pt")`` rebuilds the same model and input size. A config given beside it
must agree on the model; where it disagrees on the input size the checkpoint's wins, with a
printed warning, unless ``--set`` chose the size. Torchvision files and checkpoints that record no
config need one. Every tool, the Predictor, export and the trainer's ``--resume`` load
through here and :func:`~densemnv3.checkpoint.load_weights`.

An exported file (``tools/quantize.py``'s int8 ONNX, ``tools/export.py``'s fp32 ONNX or ExecuTorch
``.pte``) records its config too; it loads as an :class:`~densemnv3.runtimes.ExportedModel`, run by
the runtime ``--runtime`` names or the fastest installed one (:mod:`densemnv3.runtimes`).
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from densemnv3.checkpoint import CheckpointInfo, inspect_checkpoint, load_weights, pytorch_only
from densemnv3.config import Config, apply_override, config_from_dict, load_config, validate
from densemnv3.data.transforms import detector_input_size
from densemnv3.errors import CheckpointError, ConfigError, UserError
from densemnv3.models.build import build_model
from densemnv3.runtimes.choice import check_runtime, load_exported

__all__ = ["INPUT_KEYS", "LoadedModel", "checkpoint_config", "load_model", "reconcile_config"]

#: The config keys, beside the ``model`` section, that decide what a model is fed, by task.
INPUT_KEYS: dict[str, tuple[str, ...]] = {
    "segmentation": ("data.eval_resize",),
    "detection": ("data.image_size",),
    "multitask": ("data.eval_resize",),
}

_MODEL_KEYS = ("name", "num_classes", "options", "backbone", "widths")


@dataclass(frozen=True)
class LoadedModel:
    """A model with its weights, the config that describes it, and the checkpoint it came from."""

    model: nn.Module
    cfg: Config
    checkpoint: CheckpointInfo | None


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def checkpoint_config(info: CheckpointInfo) -> Config | None:
    """The config a densemnv3 checkpoint was trained with, or ``None`` when it records none."""
    data = info.state.get("config")
    if not isinstance(data, Mapping):
        return None
    try:
        return config_from_dict(data, source=f"{info.path} (its recorded config)")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None


def _get(cfg: Config, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def reconcile_config(
    cfg: Config,
    info: CheckpointInfo,
    *,
    chosen: Sequence[str] = (),
    inputs: bool = True,
    warn: Callable[[str], None] = _warn,
) -> Config:
    """``cfg`` checked against the config ``info`` records (a copy; ``cfg`` is not changed).

    A different model (name, classes, options, backbone) raises :class:`CheckpointError`; a
    different input size (:data:`INPUT_KEYS`) takes the checkpoint's value with a warning, unless
    its key is in ``chosen`` (given with ``--set``). A checkpoint of another task is left to
    :func:`load_weights`, whose message names the tool to use. ``inputs=False`` checks the model
    only (``--resume``, where the config's data settings are the run's).
    """
    cfg = copy.deepcopy(cfg)
    saved = checkpoint_config(info)
    if saved is None or saved.task != cfg.task:
        return cfg
    if cfg.model.widths is None:  # a NetAdapt checkpoint describes its widths; a config cannot
        cfg.model.widths = saved.model.widths
    if cfg.model.num_classes is None:  # the dataset's: what training read and recorded
        cfg.model.num_classes = saved.model.num_classes
    differ = [
        f"model.{k} {getattr(saved.model, k)!r} (config: {getattr(cfg.model, k)!r})"
        for k in _MODEL_KEYS
        if getattr(saved.model, k) != getattr(cfg.model, k)
    ]
    if differ:
        raise CheckpointError(
            f"{info.path}: trained with {'; '.join(differ)}; give the config it was trained with, "
            f"or no config (the checkpoint describes itself)"
        )
    for key in INPUT_KEYS.get(cfg.task, ()) if inputs else ():
        theirs, ours = _get(saved, key), _get(cfg, key)
        if theirs == ours:
            continue
        if key in chosen:
            warn(
                f"{info.path} was trained with {key}={theirs!r}; running at {ours!r} as --set says"
            )
        else:
            section, name = key.rsplit(".", 1)
            setattr(_get(cfg, section), name, theirs)
            warn(
                f"{info.path} was trained with {key}={theirs!r}, the config says {ours!r}: using "
                f"the checkpoint's (--set {key}=... to choose)"
            )
    return cfg


def load_model(
    cfg: Config | str | os.PathLike | None,
    weights: str | os.PathLike | None = None,
    *,
    overrides: Sequence[str] = (),
    warn: Callable[[str], None] = _warn,
    pytorch: str | None = None,
    runtime: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    size: tuple[int, int] | None = None,
) -> LoadedModel:
    """Build the model ``cfg`` describes and load ``weights`` into it.

    ``cfg`` is a :class:`Config`, or a config file's path or a shipped config's name (loaded
    with ``overrides``).

    - ``weights=None``: the model as ``cfg`` builds it (with its ``model.backbone_weights`` /
      ``model.weights``).
    - ``cfg=None``: the config recorded in the checkpoint, with ``overrides`` (``--set``
      strings) applied to it; a file that records none raises :class:`CheckpointError`.
    - both: ``cfg`` (already holding ``overrides``) checked by :func:`reconcile_config`.

    ``weights`` may be a training checkpoint (``last.pt``/``best.pt``), a torchvision file of
    the same model, or a densemnv3 exported file (the model is then an ``ExportedModel`` run
    by ``runtime`` — ``auto``: the fastest installed, timed with ``threads`` threads at ``size``
    (default: the config's evaluation size); its
    ``precision`` is the runtime's precision hint —, unless ``pytorch`` names the use that needs
    PyTorch weights, e.g. ``"export"``: then it is an error); a file of another task, model or
    architecture raises one :class:`CheckpointError` naming the file and what it is.
    """
    if isinstance(cfg, (str, os.PathLike)):
        cfg = load_config(cfg, overrides)
    if weights is None:
        if cfg is None:
            raise UserError("load_model needs a config, weights, or both")
        return LoadedModel(build_model(cfg.model), cfg, None)
    info = inspect_checkpoint(weights)
    check_runtime(runtime, info.format, info.path)
    if pytorch is not None:
        pytorch_only(info, pytorch)
    if cfg is None:
        cfg = checkpoint_config(info)
        if cfg is None:
            raise CheckpointError(
                f"{info.path}: {info.description}, which does not record the "
                f"config it was trained with; give that config too "
                f"(CONFIG --weights {info.path})"
            )
        recorded = cfg.model.num_classes
        for override in overrides:
            apply_override(cfg, override)
        if cfg.model.num_classes is None:  # the dataset's: what training read and recorded
            cfg.model.num_classes = recorded
        validate(cfg)
    else:
        chosen = [o.partition("=")[0].strip() for o in overrides]
        cfg = reconcile_config(cfg, info, chosen=chosen, warn=warn)
    cfg.model.backbone_weights = cfg.model.weights = None  # the checkpoint holds the whole model
    model = build_model(cfg.model)
    if info.exported:
        if info.task != cfg.task:
            raise CheckpointError(
                f"{info.path}: {info.description}, but the config builds a {cfg.task} "
                f"model; use it with the config it was made from, or none"
            )
        exported = load_exported(
            info.path,
            info.format,
            info.state,
            model,
            runtime=runtime,
            precision=precision,
            size=size or _input_size(cfg),
            threads=threads,
        )
        return LoadedModel(exported, cfg, info)
    load_weights(model, info, task=cfg.task, model_name=cfg.model.name)
    return LoadedModel(model, cfg, info)


def _input_size(cfg: Config) -> tuple[int, int] | None:
    """The size the model is fed at evaluation (None: the images' own), for timing runtimes."""
    if cfg.task == "detection":
        return detector_input_size(cfg.data.image_size)
    resize = cfg.data.eval_resize
    return tuple(int(s) for s in resize) if resize else None
