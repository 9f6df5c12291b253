"""The model registry, and the one function that builds a model from a config's ``model`` section.

A model is added by decorating its builder with :func:`register_model`; :func:`list_models`
names them; :func:`build_model` builds one from a :class:`~densemnv3.config.ModelConfig`,
checking every option against what the builder accepts.

``model.backbone`` swaps the backbone of any head: ``lraspp`` and ``ssdlite`` build their head on
it; a named model (``lraspp_mobilenet_v3_large``) fixes its backbone unless ``model.backbone`` is
set, in which case its head's generic builder is used with the head options of ``model.options``.
Its options for the backbone it no longer builds (``width_mult``, ``reduced_tail``) are left out
with a printed warning: the swapped backbone's options are in ``model.backbone``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from torch import nn

from densemnv3.config import ModelConfig, backbone_spec
from densemnv3.errors import ConfigError, did_you_mean
from densemnv3.utils.registry import Registry

#: Every whole model (backbone + head) by name; filled when :mod:`densemnv3.models` is imported.
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

#: model name -> the generic builder of its head, used when ``model.backbone`` is set.
HEADS: dict[str, str] = {}


def register_model(
    name: str | None = None, *, forwards_kwargs_to: Iterable[Callable] = (), head: str | None = None
) -> Callable:
    """Decorator registering a keyword-only model builder taking ``num_classes``.

    ``forwards_kwargs_to``: where the builder's ``**kwargs`` go, so configs can check them.
    ``head``: the registered generic builder (taking the backbone as its first argument) that
    builds this model's head on ``model.backbone`` when a config sets one.
    """
    add = MODELS.register(name, forwards_kwargs_to=forwards_kwargs_to)

    def register(builder: Callable) -> Callable:
        add(builder)
        if head is not None:
            HEADS[name or builder.__name__] = head
        return builder

    return register


def generic(name: str) -> bool:
    """Whether model ``name`` builds its head on the backbone it is given (``lraspp``, ``ssdlite``)."""
    return name in MODELS and name in HEADS.values()


def list_models() -> list[str]:
    """Names accepted as ``model.name`` in a config."""
    return MODELS.names()


def build_model(cfg: ModelConfig) -> nn.Module:
    """``<cfg.name>(num_classes=..., **cfg.options)`` with checked options, then the optional
    backbone (``backbone_weights``) and whole-model (``weights``, one file or several: see
    :class:`~densemnv3.config.ModelConfig`) checkpoints."""
    from .identify import load_weights
    from .segmentation import LRASPP
    from .weights import load_state_dict_checked
    from .widths import set_widths_

    if cfg.name not in MODELS:
        raise ConfigError(
            f"model.name {cfg.name!r} is not a model{did_you_mean(cfg.name, MODELS.names())}; "
            f"available: {', '.join(list_models())}"
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
    build = MODELS.get(builder_name)
    if generic(builder_name):
        model = build(cfg.backbone, num_classes=cfg.num_classes, **options)
    else:
        model = build(num_classes=cfg.num_classes, **options)
    if cfg.widths:  # a NetAdapt model: its shrunk widths, before any weights load into them
        set_widths_(model, cfg.widths)
    if cfg.backbone_weights:
        load_state_dict_checked(model.backbone, cfg.backbone_weights)
    task = getattr(model, "task", "segmentation" if isinstance(model, LRASPP) else "detection")
    for path in (cfg.weights,) if isinstance(cfg.weights, str) else cfg.weights or ():
        load_weights(model, path, task=task, model_name=cfg.name)
    return model
