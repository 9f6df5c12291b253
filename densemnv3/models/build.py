"""Building a model from a config's ``model`` section: :func:`build_model`, the one way.

``model.backbone`` swaps the backbone of any head: ``lraspp`` and ``ssdlite`` build their head on
it; a named model (``lraspp_mobilenet_v3_large``) fixes its backbone unless ``model.backbone`` is
set, in which case its head's generic builder is used with the head options of ``model.options``.
Its options for the backbone it no longer builds (``width_mult``, ``reduced_tail``) are left out
with a printed warning: the swapped backbone's options are in ``model.backbone``.
"""

from __future__ import annotations

import sys

from torch import nn

from densemnv3.checkpoint import load_weights
from densemnv3.config.schema import TASKS, ModelConfig
from densemnv3.errors import ConfigError, did_you_mean

from .backbones.registry import backbone_spec
from .prune import set_widths_
from .registry import HEADS, MODELS, generic

__all__ = ["build_model"]


def build_model(cfg: ModelConfig) -> nn.Module:
    """``<cfg.name>(num_classes=..., **cfg.options)`` with checked options, then the optional
    backbone (``backbone_weights``) and whole-model (``weights``, one file or several: see
    :class:`~densemnv3.config.ModelConfig`) checkpoints."""
    try:
        MODELS.get(cfg.name)
    except ConfigError as err:
        raise ConfigError(f"model.name: {err}") from None
    if cfg.num_classes is None:
        raise ConfigError(
            "model.num_classes is None (the dataset's): the tools read it from the data; to "
            "build the model alone, give the number (--set model.num_classes=N)"
        )
    spec = backbone_spec(cfg.backbone)
    builder_name = HEADS.get(cfg.name, cfg.name) if spec is not None else cfg.name
    if spec is not None and not generic(builder_name):
        raise ConfigError(
            f"model.backbone: {cfg.name} does not take a backbone from the config; "
            f"use model.name 'lraspp' or 'ssdlite' (or a model built on them)"
        )
    accepted = MODELS.options(builder_name) - {"num_classes"}
    own = MODELS.options(cfg.name) - accepted - {"num_classes"}
    options = {k: v for k, v in cfg.options.items() if k not in own}
    if len(options) < len(cfg.options):  # options of the backbone the named model fixes, swapped
        left_out = ", ".join(f"{k}={v!r}" for k, v in cfg.options.items() if k in own)
        print(
            f"warning: model.options {left_out}: for {cfg.name}'s own backbone, which "
            f"model.backbone={cfg.backbone!r} replaces; left out (options of the new backbone go "
            f"in model.backbone, e.g. {{'name': {spec[0]!r}, ...}})",
            file=sys.stderr,
        )
    for key in options:
        if key == "backbone":
            raise ConfigError(
                "model.options.backbone: the backbone is model.backbone, e.g. "
                f"--set model.backbone={cfg.options[key]}"
            )
        if key not in accepted:
            hint = (
                " (a backbone option? give it in model.backbone)" if generic(builder_name) else ""
            )
            raise ConfigError(
                f"model.options.{key}: {builder_name} has no option {key!r}"
                f"{did_you_mean(key, accepted)}{hint}"
            )
    if cfg.backbone_weights:
        if "backbone_weights" not in accepted:
            raise ConfigError(f"model.backbone_weights: {builder_name} takes no backbone weights")
        options["backbone_weights"] = cfg.backbone_weights
    build = MODELS.get(builder_name)
    if generic(builder_name):
        model = build(cfg.backbone, num_classes=cfg.num_classes, **options)
    else:
        model = build(num_classes=cfg.num_classes, **options)
    if cfg.widths:  # a NetAdapt model: its shrunk widths, before its checkpoint loads into them
        set_widths_(model, cfg.widths)
    task = getattr(model, "task", None)
    if task not in TASKS:
        raise ConfigError(
            f"model.name: {cfg.name} builds a {type(model).__name__}, whose "
            f"task attribute is {task!r}, not one of {', '.join(TASKS)}"
        )
    for path in (cfg.weights,) if isinstance(cfg.weights, str) else cfg.weights or ():
        load_weights(model, path, task=task, model_name=cfg.name)
    return model
