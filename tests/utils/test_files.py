"""Atomic writes: the mode any file gets, one line when the disk is full, stale temps removed."""

import errno
import io
import os
import stat
import subprocess
import sys

import pytest
import torch

from densemnv3.engine.checkpoint import atomic_save
from densemnv3.utils import files
from densemnv3.utils.files import (
    WriteError,
    atomic_write,
    disk_error,
    remove_stale_temps,
    write_text,
)


class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def close(self) -> None:
        self.f.close()
        super().close()


@pytest.fixture
def full_disk(monkeypatch):
    """Files ``open`` opens for writing in :mod:`densemnv3.engine.checkpoint` fail after 1 kB."""
    import densemnv3.engine.checkpoint as checkpoint

    def opener(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        return FullDisk(f, 1024) if "w" in mode else f

    monkeypatch.setattr(checkpoint, "open", opener, raising=False)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_mode_a_plain_open_gets(tmp_path, umask):
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain", "w") as f:
            f.write("x")
        write_text(tmp_path / "metrics.json", "{}")
        atomic_save({"w": torch.zeros(2)}, tmp_path / "last.pt")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "plain") == 0o666 & ~umask
    assert _mode(tmp_path / "metrics.json") == _mode(tmp_path / "last.pt") == 0o666 & ~umask


def test_disk_full_keeps_the_previous_checkpoint_and_no_temp(tmp_path, full_disk):
    path = tmp_path / "last.pt"
    torch.save({"iter": 40, "w": torch.zeros(4)}, path)  # written before the disk filled
    with pytest.raises(WriteError) as info:
        atomic_save({"iter": 80, "w": torch.randn(10_000)}, path, hint="free some space")
    message = str(info.value)
    assert message == (
        f"{path}: cannot write, the disk is full (No space left on device); the "
        "previous last.pt is unchanged there and no temp file is left; free some space"
    )
    assert info.value.exit_code == 1
    assert torch.load(path)["iter"] == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_disk_full_on_a_new_file_says_nothing_was_written(tmp_path, full_disk):
    with pytest.raises(WriteError, match="no best.pt was written and no temp file is left$"):
        atomic_save({"w": torch.randn(10_000)}, tmp_path / "best.pt")
    assert list(tmp_path.iterdir()) == []


def test_other_errors_pass_through_and_leave_no_temp(tmp_path):
    with pytest.raises(ZeroDivisionError), atomic_write(tmp_path / "x.onnx") as tmp:
        tmp.write_bytes(b"half")
        1 / 0  # noqa: B018
    assert list(tmp_path.iterdir()) == []


def test_disk_error_looks_through_the_chain():
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from None
    except RuntimeError as wrapped:  # `from None` hides the context from tracebacks, not from us
        assert disk_error(wrapped) is full
    assert disk_error(OSError(errno.ENOENT, "No such file")) is None
    assert disk_error(ValueError("x")) is None


def test_stale_temps_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".last.pt.{dead_pid}-0badc0de.tmp"
    live = tmp_path / f".last.pt.{os.getpid()}-12345678.tmp"  # this process: still writing
    old_style = tmp_path / ".last.pt.k2j3h4_x.tmp"  # tempfile.mkstemp's, from before the pid
    other = tmp_path / f".best.pt.{dead_pid}-0badc0de.tmp"  # another file's: not this write's
    for p in (stale, live, old_style, other):
        p.write_bytes(b"x" * 100)
    atomic_save({"w": torch.zeros(1)}, tmp_path / "last.pt")
    assert not stale.exists() and live.exists() and old_style.exists() and other.exists()
    # a caller holding the work dir's lock knows no one else writes: every temp of the name goes
    removed = remove_stale_temps(tmp_path / "last.pt", any_owner=True)
    assert sorted(removed) == sorted([live, old_style])
    assert other.exists()


def test_temp_name_is_the_documented_pattern(tmp_path):
    with atomic_write(tmp_path / "model[1].onnx") as tmp:
        assert tmp.name.startswith(".model[1].onnx.") and tmp.name.endswith(".tmp")
        assert tmp.name.split(".")[-2].split("-")[0] == str(os.getpid())
        assert tmp.exists()
        assert remove_stale_temps(tmp_path / "model[1].onnx") == []  # our own, alive
    assert files._glob_escape("a[1]*.pt") == "a[[]1][*].pt"


def test_a_folder_is_listed_once_however_many_files_are_written(tmp_path, monkeypatch):
    """Writing n files into a folder lists it once (O(n), not O(n^2)); a dead writer's temp of a
    name written later is still removed."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".f7.png.{int(dead.stdout)}-0badc0de.tmp"
    stale.write_bytes(b"x")
    scans = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: scans.append(p) or real_scandir(p))
    for i in range(20):
        write_text(tmp_path / f"f{i}.png", "x", durable=False)
    assert len(scans) == 1 and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"f{i}.png" for i in range(20))
