"""One training run per work directory, and the clean-up of what an interrupted one left.

A run holds ``WORK_DIR/.lock``, a small JSON file with its PID, host, start time and command,
created with ``O_EXCL`` so that two runs cannot both take it. It is removed when the run ends
(also on an error or Ctrl-C). A lock whose holder is gone (its PID is not running on this host,
or runs another program since) is taken over with a note, so ``--resume`` after a crash or a
``kill -9`` works as before; a lock held by a live run, or by a run on another host, stops the
second run with one line naming the holder.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from densemnv3.errors import UserError
from densemnv3.utils.files import remove_stale_temps

__all__ = ["LOCK_NAME", "RUN_FILES", "WorkDirLock", "clean_interrupted_writes"]

LOCK_NAME = ".lock"
#: What a training run writes in its work directory (their temp files are its own to clean up).
RUN_FILES = (
    "last.pt",
    "best.pt",
    "results.csv",
    "results.png",
    "metrics.json",
    "config.py",
    "skipped_files.txt",
    "dropped_boxes.txt",
)


class WorkDirLock:
    """The lock of one work directory, held by this process until :meth:`release` (or exit)."""

    _held: dict[Path, int] = {}  # lock paths this process holds, with how many holders

    def __init__(self, work_dir: str | os.PathLike, *, log: Callable[[str], None] = print) -> None:
        self.path = Path(work_dir) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = _identity()
        for _ in range(5):
            if self._held.get(self.path):  # the same process again (e.g. a resumed Trainer)
                break
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = _read_holder(self.path)
                if holder is not None and holder["pid"] < 0:  # released meanwhile
                    continue
                if holder is not None and _same_process(holder, me):
                    break
                if holder is None or _alive(holder, me):
                    raise UserError(_locked_message(self.path, holder)) from None
                log(
                    f"note: {self.path}: taking over the lock of {_describe(holder)}, which is no "
                    f"longer running"
                )
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            break
        else:
            raise UserError(_locked_message(self.path, _read_holder(self.path)))
        self._held[self.path] = self._held.get(self.path, 0) + 1
        self._finalizer = weakref.finalize(self, _release, self.path, me)

    def release(self) -> None:
        """Give the lock up (once; also done when this object is collected or the process exits)."""
        self._finalizer()


def clean_interrupted_writes(
    work_dir: str | os.PathLike, *, log: Callable[[str], None] = print
) -> None:
    """Remove the temp files that saves killed mid-write left in ``work_dir`` (only the run's own
    files, see :data:`RUN_FILES`); call it while holding the lock."""
    removed = [
        tmp
        for name in RUN_FILES
        for tmp in remove_stale_temps(Path(work_dir) / name, any_owner=True)
    ]
    if removed:
        names = ", ".join(tmp.name for tmp in removed[:3]) + (" ..." if len(removed) > 3 else "")
        log(f"note: {work_dir}: removed {len(removed)} temp files of interrupted saves ({names})")


def _identity() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": _start_ticks(os.getpid()),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
    }


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (Linux), to tell it from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _read_holder(path: Path) -> dict | None:
    """The lock's contents; ``None`` if it stays unreadable (retried: a writer may be mid-write)."""
    for _ in range(10):
        try:
            holder = json.loads(path.read_text())
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return holder
        except FileNotFoundError:
            return {"pid": -1, "host": "", "start": None}  # released meanwhile: take it
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return None


def _same_process(holder: dict, me: dict) -> bool:
    return (
        holder.get("host") == me["host"]
        and holder["pid"] == me["pid"]
        and holder.get("start") == me["start"]
    )


def _alive(holder: dict, me: dict) -> bool:
    """Whether the holder may still run: always, if it ran on another host (we cannot tell)."""
    if holder.get("host") != me["host"]:
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = _start_ticks(holder["pid"])
    return holder.get("start") is None or start is None or start == holder["start"]


def _describe(holder: dict) -> str:
    return (
        f"pid {holder['pid']} on {holder.get('host', '?')} (started {holder.get('started', '?')}: "
        f"{holder.get('command', '?')})"
    )


def _locked_message(path: Path, holder: dict | None) -> str:
    if holder is None:
        return (
            f"{path.parent}: the work dir is locked ({path} cannot be read); if no run is using "
            f"it, delete {path}, or choose another --work-dir"
        )
    return (
        f"{path.parent}: another run is using this work dir: {_describe(holder)}; wait for it "
        f"to finish, choose another --work-dir, or, if that run is gone, delete {path}"
    )


def _release(path: Path, me: dict) -> None:
    count = WorkDirLock._held.get(path, 0) - 1
    if count > 0:
        WorkDirLock._held[path] = count
        return
    WorkDirLock._held.pop(path, None)
    holder = _read_holder(path) if path.exists() else None
    if holder is not None and _same_process(holder, me):
        with contextlib.suppress(OSError):
            path.unlink()
