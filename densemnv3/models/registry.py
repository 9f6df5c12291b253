"""The model registry, and the one function that builds a model from a config's ``model`` section.

A model is added by decorating its builder with :func:`register_model`; :func:`list_models`
names them; :func:`build_model` builds one from a :class:`~densemnv3.config.ModelConfig`,
checking every option against what the builder accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from densemnv3.config import ModelConfig
from densemnv3.errors import ConfigError, did_you_mean
from densemnv3.utils.registry import Registry

#: Every whole model (backbone + head) by name; filled when :mod:`densemnv3.models` is imported.
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(
    name: str | None = None, *, forwards_kwargs_to: Iterable[Callable] = ()
) -> Callable:
    """Decorator registering a keyword-only model builder taking ``num_classes``.

    ``forwards_kwargs_to``: where the builder's ``**kwargs`` go, so configs can check them.
    """
    return MODELS.register(name, forwards_kwargs_to=forwards_kwargs_to)


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

    if cfg.name not in MODELS:
        raise ConfigError(
            f"model.name {cfg.name!r} is not a model{did_you_mean(cfg.name, MODELS.names())}; "
            f"available: {', '.join(list_models())}"
        )
    accepted = MODELS.options(cfg.name) - {"num_classes"}
    for key in cfg.options:
        if key not in accepted:
            raise ConfigError(
                f"model.options.{key}: {cfg.name} has no option {key!r}{did_you_mean(key, accepted)}"
            )
    model = MODELS.get(cfg.name)(num_classes=cfg.num_classes, **cfg.options)
    if cfg.backbone_weights:
        load_state_dict_checked(model.backbone, cfg.backbone_weights)
    task = getattr(model, "task", "segmentation" if isinstance(model, LRASPP) else "detection")
    for path in (cfg.weights,) if isinstance(cfg.weights, str) else cfg.weights or ():
        load_weights(model, path, task=task, model_name=cfg.name)
    return model
