"""Errors meant for the person running a tool.

Every tool catches :class:`UserError` at its entry point (see :mod:`densemnv3.cli.entry`) and
prints its message as one line, without a traceback. Raise it (or a subclass) whenever the cause
is the user's input — a path, a config key, a data file — and say what to do about it.
:func:`did_you_mean` adds the closest valid name to such a message.

This module imports nothing but the standard library, so every layer may use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input; the message names the file or key and what to do."""

    exit_code = 2


class ConfigError(UserError):
    """A config file, key or value is wrong."""


class DataError(UserError):
    """A dataset file or layout is wrong."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated or of another architecture."""


class SourceError(UserError):
    """A video source cannot be opened or read."""


class TrainingError(UserError):
    """Training cannot go on (e.g. the loss became NaN)."""


class ExportCheckError(UserError):
    """The exported model disagrees with PyTorch (exit code 1: the export itself is wrong)."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
