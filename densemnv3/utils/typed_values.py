"""Values of typed fields: a ``--set`` string read as a Python literal, and the check of a value
against a type annotation (``int | None``, ``tuple[int, int]``, ``Literal[...]``, dataclasses)."""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from typing import Any

from densemnv3.errors import ConfigError

__all__ = ["convert", "literal", "matches", "type_name"]


def literal(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def convert(key: str, text: str, hint: Any) -> Any:
    value = literal(text)
    if matches(value, hint):
        return value
    if isinstance(value, (list, int)) and matches(
        tuple(value) if isinstance(value, list) else (value,), hint
    ):
        return tuple(value) if isinstance(value, list) else (value,)
    if matches(text, hint):  # e.g. a str field given "123"
        return text
    raise ConfigError(f"config key {key!r}: expected {type_name(hint)}, got {text!r}")


def type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "")


def matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return isinstance(value, str) and value in args
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in args)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
    if origin in (list, dict):
        return isinstance(value, origin)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    return isinstance(value, hint)
