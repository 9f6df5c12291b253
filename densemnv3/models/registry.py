"""The model registry: names -> builders. It imports no model; the model files register their
builders with :func:`register_model` when :mod:`densemnv3.models` is imported, and
:func:`~densemnv3.models.build.build_model` builds one from a config."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from torch import nn

from densemnv3.utils.registry import Registry

#: Every whole model (backbone + head) by name; filled when :mod:`densemnv3.models` is imported.
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

#: model name -> the generic builder of its head, used when ``model.backbone`` is set.
HEADS: dict[str, str] = {}

F = TypeVar("F", bound=Callable)


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


def named(builder: F, name: str, doc: str) -> F:
    """``builder``, made by a factory once per variant (e.g. per backbone), under its public
    ``name`` and docstring ``doc``: what registries, :mod:`inspect`, pickling and the docs read,
    as for a builder written out at module level under that name."""
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return builder


def generic(name: str) -> bool:
    """Whether model ``name`` builds its head on the backbone it gets (``lraspp``, ``ssdlite``)."""
    return name in MODELS and name in HEADS.values()


def list_models() -> list[str]:
    """Names accepted as ``model.name`` in a config."""
    return MODELS.names()
