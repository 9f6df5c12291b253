"""Errors meant for the person running a tool.

Every tool catches :class:`UserError` at its entry point (see :mod:`densemnv3.utils.cli`) and
prints its message as one line, without a traceback. Raise it (or a subclass) whenever the cause
is the user's input — a path, a config key, a data file — and say what to do about it.
"""


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
