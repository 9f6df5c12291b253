"""Run a tool's ``main`` in the test process as ``python tools/<tool>.py`` would run it.

A fresh interpreter costs the suite seconds of imports per tool call (torch, torchvision and the
toolkit); in this process the tool runs through the same :func:`~densemnv3.cli.entry.run_main`,
with what a process of its own would give it and nothing it leaves behind: its own ``sys.argv``,
file descriptors 1 and 2 captured (so C libraries' lines count, as in a child's stderr), Python's
default warning filters printing to stderr, and afterwards the environment, working directory,
signal handlers, thread counts, determinism flag and random states as they were. Exit codes and
tracebacks come back as a child's would. What needs a process (peak memory, signals, a killed
run, an environment of its own) goes through ``subprocess`` in the tests themselves.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

__all__ = ["run_tool_here"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# a fresh interpreter's filters (python -W not given), most specific first
_DEFAULT_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)


def _tool_main(tool: Path):
    """The ``main`` a ``tools/*.py`` launcher runs (its ``from densemnv3.cli.X import main``)."""
    found = re.search(r"^from (densemnv3\.cli\.\w+) import main", tool.read_text(), re.M)
    if found is None:
        raise ValueError(f"{tool}: not a tool launcher")
    module = __import__(found.group(1), fromlist=["main"])
    return module.main


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _process_state():
    """Put back what a tool may change for the whole process."""
    environ, cwd = dict(os.environ), os.getcwd()
    handlers = {s: signal.getsignal(s) for s in _SIGNALS}
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()
            for action, category, module in reversed(_DEFAULT_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            warnings.showwarning = _show
            yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])


@contextlib.contextmanager
def _captured_fds():
    """stdout and stderr, Python's and the C libraries', into two files: yields them."""
    files = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    streams = sys.stdout, sys.stderr
    for stream in streams:
        stream.flush()
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(files[0].fileno(), 1)
        os.dup2(files[1].fileno(), 2)
        sys.stdout, sys.stderr = (
            io.TextIOWrapper(
                open(os.dup(fd), "wb"),
                encoding="utf-8",
                errors="backslashreplace",
                write_through=True,
            )
            for fd in (1, 2)
        )
        yield files
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.close()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _read(file) -> str:
    """The file's text with universal newlines (``\\r`` too), as ``subprocess.run(text=True)``."""
    file.seek(0)
    text = file.read().decode("utf-8", errors="replace")
    file.close()
    return text.replace("\r\n", "\n").replace("\r", "\n")


def run_tool_here(tool: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """``python <tool> *argv`` in this process -> CompletedProcess (text, captured)."""
    from densemnv3.cli import entry as cli

    main = _tool_main(tool)
    argv0, keep = sys.argv, cli.keep_freed_memory
    cli.keep_freed_memory = lambda: False  # a process-wide malloc setting: the tools' own process
    sys.argv = [str(tool), *argv]
    code: int | str | None = 0
    try:
        with _process_state(), _captured_fds() as files:
            try:
                cli.run_main(lambda: main(argv))
            except SystemExit as exit_:
                code = exit_.code
                if not isinstance(code, int | None):
                    print(code, file=sys.stderr)
                    code = 1
            except BaseException:  # noqa: BLE001 -- what the interpreter prints and exits 1 with
                sys.stderr.write(traceback.format_exc())
                code = 1
    finally:
        sys.argv, cli.keep_freed_memory = argv0, keep
    return subprocess.CompletedProcess(
        [sys.executable, str(tool), *argv], code or 0, _read(files[0]), _read(files[1])
    )
