"""Dotted ``--set`` overrides (``optim.lr=0.02``) applied to a config, and the check of every value
against its field's type."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from densemnv3.errors import ConfigError, did_you_mean
from densemnv3.utils.typed_values import convert, literal, matches, type_name

from .schema import Config


def apply_override(cfg: Config, override: str) -> None:
    """Apply one ``"a.b.c=value"``; the value is parsed as a Python literal when it is one."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. optim.lr=0.02")
    parts = key.split(".")
    node: Any = cfg
    for depth, part in enumerate(parts):
        done = ".".join(parts[:depth])
        last = depth == len(parts) - 1
        if dataclasses.is_dataclass(node):
            names = [f.name for f in dataclasses.fields(node)]
            if part not in names:
                valid = [f"{done}.{n}" if done else n for n in names]
                raise ConfigError(
                    f"unknown config key {key!r}{did_you_mean('.'.join(parts[: depth + 1]), valid)}"
                    f"; valid keys here: {', '.join(valid)}"
                )
            if last:
                hint = typing.get_type_hints(type(node))[part]
                setattr(node, part, convert(key, text.strip(), hint))
            else:
                node = getattr(node, part)
                if node is None or (isinstance(node, str) and part == "backbone"):
                    hint = typing.get_type_hints(type(_parent(cfg, parts[:depth])))[part]
                    node = _default_of(hint, node)
                    setattr(_parent(cfg, parts[:depth]), part, node)
        elif isinstance(node, dict):
            if last:
                node[part] = literal(text.strip())
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"config key {key!r}: {done!r} is a value, not a section")


def _parent(cfg: Config, parts: list[str]) -> Any:
    node: Any = cfg
    for part in parts:
        node = getattr(node, part)
    return node


def _default_of(hint: Any, value: Any = None) -> Any:
    """A section to set keys in where the config holds ``value`` (None, or a backbone's name)."""
    for arg in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(arg):
            return arg()
        if arg is dict or typing.get_origin(arg) is dict:
            return {} if value is None else {"name": value}
    raise ConfigError(f"cannot create a section of type {hint}")


def validate(node: Any, prefix: str = "") -> None:
    """Check every field of a config tree against its type annotation."""
    hints = typing.get_type_hints(type(node))
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if isinstance(value, list) and typing.get_origin(hints[f.name]) is tuple:
            value = tuple(value)
            setattr(node, f.name, value)
        if not matches(value, hints[f.name]):
            raise ConfigError(
                f"config key {key!r}: expected {type_name(hints[f.name])}, got {value!r}"
            )
        if dataclasses.is_dataclass(value):
            validate(value, f"{key}.")
