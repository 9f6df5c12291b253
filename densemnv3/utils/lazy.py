"""Names of a package that load on first use (PEP 562), so importing the package imports none of
its modules: ``densemnv3.inference.video`` and ``densemnv3.runtimes.names`` import without torch,
and a tool reports a bad argument before torch loads."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports", "moved_names"]


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a name to the submodule (or the
    module, by its absolute name) that defines it; the value is imported at first access and kept in
    ``namespace``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = exports[name]  # a submodule, or a module's absolute name
        module = module if module.startswith("densemnv3.") else f".{module}"
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


def moved_names(package: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """``__getattr__`` for ``package`` keeping names that moved (name -> their new module) for
    one release: each access warns (:class:`DeprecationWarning`) and returns the new object."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        warnings.warn(
            f"{package}.{name} moved to {moved[name]}.{name}; the old name goes in the next "
            f"release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(moved[name]), name)

    return __getattr__
