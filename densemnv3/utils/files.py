"""Files written whole or not at all, with the mode any file gets, and one line when a disk refuses.

Every artifact a tool leaves (checkpoints, ``results.csv``, ``metrics.json``, exported and
quantized models, the decoded cache, images through :func:`write_image`) is written through
:func:`atomic_write`: to a temp file ``.NAME.PID-XXXXXXXX.tmp`` beside it, flushed to disk,
then renamed over ``NAME``. A reader never
sees half a file, and a failed write leaves the previous file as it was. The temp file is created
with mode ``0o666`` less the umask, as ``open(path, "w")`` would (``tempfile.mkstemp`` makes
``0o600``, which the rename would carry to the artifact). A full disk or quota becomes a
:class:`WriteError` that says what was kept; temp files of a dead process are removed by the next
write of the same name (or by :func:`remove_stale_temps`): a folder is listed once per process, at
its first write, so writing n files into it costs O(n), not O(n²). ``durable=False`` skips the
``fsync``: the file is still whole or absent after a killed process (the rename is atomic), but
not after a power cut; for many small outputs that can be made again (``densemnv3 predict``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from densemnv3.errors import UserError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "WriteError",
    "atomic_write",
    "disk_error",
    "remove_stale_temps",
    "storage_problem",
    "write_image",
    "write_text",
]

#: errno values that mean "this storage cannot take the file", not a bug: one line, not a traceback.
_STORAGE_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file is too large for this file system",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "an I/O error (a failing disk or a lost network mount?)",
}


class WriteError(UserError):
    """An artifact could not be written; the message says what was kept (exit code 1)."""

    exit_code = 1


def disk_error(err: BaseException) -> OSError | None:
    """The storage ``OSError`` (disk full, quota, read-only, I/O) behind ``err``, or ``None``.

    Looks through the exception chain, since writers wrap it (``torch.save`` raises
    ``RuntimeError: [enforce fail at inline_container.cc]`` in the context of the ``OSError``).
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _STORAGE_ERRORS:
            return err
        err = err.__cause__ or err.__context__
    return None


def storage_problem(err: OSError) -> str:
    """``the disk is full (No space left on device)`` for a storage error."""
    return f"{_STORAGE_ERRORS.get(err.errno, 'cannot write')} ({err.strerror})"


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


_TEMP = re.compile(r"\.(.+)\.(\d+)-[0-9a-f]{8}\.tmp")
#: Per folder, the temp files of other processes found at this process's first write there, by
#: the name they were for: (temp, writer pid).
_FOUND: dict[Path, dict[str, list[tuple[Path, int]]]] = {}
_FOUND_LOCK = threading.Lock()


def _remove_dead_temps(path: Path) -> None:
    """Remove the temps an interrupted write of ``path`` by a dead process left, listing its
    folder only at this process's first write there (later temps are live writers')."""
    with _FOUND_LOCK:
        found = _FOUND.get(path.parent)
        if found is None:
            found = _FOUND[path.parent] = {}
            with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
                for entry in entries:
                    match = _TEMP.fullmatch(entry.name)
                    if match and int(match[2]) != os.getpid():
                        found.setdefault(match[1], []).append((Path(entry.path), int(match[2])))
        stale = found.pop(path.name, [])
    for tmp, owner in stale:
        if not _alive(owner):
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, *, hint: str = "", durable: bool = True
) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write to; it replaces ``path`` when the block succeeds.

    The temp file exists (empty) when the block starts; writers that take a path (``onnx.save``,
    ``torch.jit.save``) or a file (``open(tmp, "wb")``) both work, as long as they do not pick a
    format from the extension. On a storage error the temp file is removed, ``path`` is left as it
    was and :class:`WriteError` says so, followed by ``hint`` (what to do next). ``durable``:
    ``fsync`` the file and its folder (see the module's docstring).
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_temps(path)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies
    except OSError as err:
        raise WriteError(
            f"{path}: cannot create a file in {path.parent} ({err.strerror}); choose "
            f"another place or free some space"
        ) from None
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        storage = disk_error(err)
        if storage is None:
            raise
        kept = (
            f"the previous {path.name} is unchanged there"
            if path.is_file()
            else f"no {path.name} was written"
        )
        raise WriteError(
            f"{path}: cannot write, {storage_problem(storage)}; {kept} and no temp "
            f"file is left{'; ' + hint if hint else ''}"
        ) from None
    if not durable:
        return
    with contextlib.suppress(OSError):  # the rename itself is durable once the folder is synced
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: str | os.PathLike, text: str, *, hint: str = "", durable: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    path = Path(path)
    with atomic_write(path, hint=hint, durable=durable) as tmp:
        tmp.write_text(text)
    return path


def write_image(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    hint: str = "",
    durable: bool = True,
    params: Sequence[int] = (),
) -> Path:
    """Encode ``array`` (OpenCV's channel order) in the format of ``path``'s suffix and write it
    atomically (see :func:`atomic_write`); ``params``: OpenCV's ``IMWRITE_*`` flags and values.

    Encoded in memory, not with ``cv2.imwrite``: that one writes through libpng's own file
    calls, so a full disk leaves a truncated or empty file and a ``libpng error`` on stderr.
    """
    import cv2  # here, not above: configs import this module and need no OpenCV

    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix, array, list(params))
    except cv2.error:
        ok = False
    if not ok:
        raise WriteError(
            f"{path}: OpenCV cannot encode a {array.dtype} array of shape "
            f"{tuple(array.shape)} as {path.suffix or 'an image (no suffix)'}"
        )
    with atomic_write(path, hint=hint, durable=durable) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path


def remove_stale_temps(path: str | os.PathLike, *, any_owner: bool = False) -> list[Path]:
    """Remove the temp files an interrupted :func:`atomic_write` of ``path`` left behind.

    Only ``.NAME.*.tmp`` beside ``path``, and of those only the ones whose writer (the PID in the
    name) is no longer running on this machine; with ``any_owner`` (a caller that holds the work
    directory's lock, so no other writer can be at work) every one of them, including those whose
    name holds no PID (``mkstemp``'s). Returns the files removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{_glob_escape(path.name)}.*.tmp"):
        owner = tmp.name[len(path.name) + 2 : -len(".tmp")].split("-", 1)[0]
        if any_owner or (owner.isdigit() and not _alive(int(owner))):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
