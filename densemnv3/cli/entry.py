"""Entry-point plumbing shared by the tools: one readable line for user errors."""

from __future__ import annotations

import sys
from collections.abc import Callable

from densemnv3.errors import UserError
from densemnv3.utils.files import WriteError, disk_error, storage_problem
from densemnv3.utils.memory import keep_freed_memory


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main`` and exit with its code; a :class:`UserError` prints ``error: ...`` (no
    traceback) and exits 2 (1 for a :class:`WriteError`), and so does a full disk anywhere; Ctrl-C
    exits 130. Freed memory is kept for reuse first
    (:func:`~densemnv3.utils.memory.keep_freed_memory`)."""
    keep_freed_memory()
    try:
        code = main()
    except UserError as err:
        print(f"error: {user_message(err)}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (
        Exception
    ) as err:  # a write that did not go through atomic_write: one line if the disk refused
        storage = disk_error(err)
        if storage is None:
            raise
        where = f"{storage.filename}: " if storage.filename else ""
        print(f"error: {where}cannot write, {storage_problem(storage)}", file=sys.stderr)
        sys.exit(WriteError.exit_code)
    sys.exit(code or 0)


def user_message(err: BaseException) -> str:
    """The error's own one-line message, also when a DataLoader worker re-raised it (PyTorch then
    prepends "Caught X in DataLoader worker process N" and the worker's traceback)."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text
