"""One registry class for every name → builder table: backbones, models and tasks.

Modelled on timm's ``@register_model``: a builder is added by decorating it, listed by
:meth:`Registry.names`, and looked up by :meth:`Registry.get`, whose error names the closest
valid choice. Standard library only, so every layer may use it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from densemnv3.errors import ConfigError, did_you_mean

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """Builders of one ``kind`` (``"backbone"``, ``"model"``, ``"task"``) by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, T] = {}
        self._forwards: dict[str, tuple[Callable, ...]] = {}

    def register(
        self,
        name: str | None = None,
        *,
        overwrite: bool = False,
        forwards_kwargs_to: Iterable[Callable] = (),
    ) -> Callable[[T], T]:
        """Decorator adding a builder under ``name`` (default: its ``__name__``).

        ``forwards_kwargs_to``: the callables a builder's ``**kwargs`` end up in, in order, so
        that :meth:`options` can list (and a config can check) every keyword it accepts.
        """

        def add(builder: T) -> T:
            key = name or builder.__name__
            if key in self._builders and not overwrite:
                raise ValueError(f"{self.kind} {key!r} is already registered (pass overwrite=True)")
            self._builders[key] = builder
            self._forwards[key] = tuple(forwards_kwargs_to)
            return builder

        return add

    def get(self, name: str) -> T:
        """The builder registered as ``name``; none: a :class:`ConfigError` listing the choices."""
        if name not in self._builders:
            raise ConfigError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._builders)}; "
                f"available: {', '.join(self.names())}"
            )
        return self._builders[name]

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and for replacing an entry)."""
        self._builders.pop(name, None)
        self._forwards.pop(name, None)

    def options(self, name: str) -> set[str]:
        """Keyword-only arguments builder ``name`` accepts, following ``**kwargs`` through the
        callables it was registered as forwarding to (their positional parameters are filled
        by the builder, not by the caller)."""
        accepted: set[str] = set()
        for fn in (self.get(name), *self._forwards[name]):
            params = inspect.signature(fn).parameters.values()
            accepted |= {p.name for p in params if p.kind is p.KEYWORD_ONLY}
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                break
        return accepted
