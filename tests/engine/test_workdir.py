"""The work-dir lock: one run per folder, stale locks taken over, temps of interrupted saves
removed."""

import json
import os
import socket
import subprocess
import sys

import pytest

from densemnv3.engine.workdir import LOCK_NAME, WorkDirLock, clean_interrupted_writes
from densemnv3.errors import UserError

HOLD = """
import sys, time
from densemnv3.engine.workdir import WorkDirLock
lock = WorkDirLock(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def _write_lock(work, **holder) -> None:
    work.mkdir(exist_ok=True)
    (work / LOCK_NAME).write_text(
        json.dumps(
            {
                "host": socket.gethostname(),
                "start": None,
                "started": "2026-12-01T10:00:00",
                "command": "train_seg.py cfg.py",
            }
            | holder
        )
    )


def test_lock_records_the_holder_and_is_released(tmp_path):
    lock = WorkDirLock(tmp_path / "run")
    holder = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert WorkDirLock(tmp_path / "run")  # the same process again: re-entrant
    lock.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # (the second holder was collected)


def test_a_live_holder_in_another_process_stops_the_second_run(tmp_path):
    work = tmp_path / "run"
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(work)], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(UserError) as info:
                WorkDirLock(work)
            message = str(info.value)
            assert message.startswith(
                f"{work}: another run is using this work dir: pid {holder.pid} on "
            )
            assert f"delete {work / LOCK_NAME}" in message and "\n" not in message
        finally:
            holder.kill()
    notes = []
    WorkDirLock(work, log=notes.append).release()  # killed: its lock is stale now
    assert len(notes) == 1 and notes[0].startswith(
        f"note: {work / LOCK_NAME}: taking over the lock of pid {holder.pid} on "
    )
    assert notes[0].endswith("which is no longer running")


def test_stale_lock_is_taken_over_with_a_note(tmp_path):
    work = tmp_path / "run"
    pid = _dead_pid()
    _write_lock(work, pid=pid)
    notes = []
    lock = WorkDirLock(work, log=notes.append)
    assert notes == [
        f"note: {work / LOCK_NAME}: taking over the lock of pid {pid} on "
        f"{socket.gethostname()} (started 2026-12-01T10:00:00: train_seg.py cfg.py), "
        "which is no longer running"
    ]
    assert json.loads((work / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


@pytest.mark.skipif(not os.path.exists("/proc/1/stat"), reason="start times come from /proc")
def test_a_reused_pid_does_not_keep_a_lock(tmp_path):
    work = tmp_path / "run"
    _write_lock(work, pid=1, start=1)  # pid 1 runs, but it is not the process that took the lock
    notes = []
    WorkDirLock(work, log=notes.append).release()
    assert len(notes) == 1 and "pid 1 " in notes[0]


def test_a_holder_on_another_host_is_never_presumed_dead(tmp_path):
    work = tmp_path / "run"
    _write_lock(work, pid=_dead_pid(), host="other-node")
    with pytest.raises(UserError, match="on other-node .*if that run is gone, delete"):
        WorkDirLock(work)


def test_unreadable_lock_is_one_line(tmp_path):
    work = tmp_path / "run"
    work.mkdir()
    (work / LOCK_NAME).write_text("garbage")
    with pytest.raises(UserError, match=r"the work dir is locked \(.*cannot be read\); if no run"):
        WorkDirLock(work)


def test_clean_interrupted_writes_removes_only_the_runs_own_temps(tmp_path):
    temps = [
        tmp_path / ".last.pt.123-abcd.tmp",
        tmp_path / ".last.pt.k2j3h4_x.tmp",
        tmp_path / ".results.csv.9-ff.tmp",
    ]
    foreign = [tmp_path / ".model.onnx.1-ab.tmp", tmp_path / "notes.tmp", tmp_path / "last.pt"]
    for p in temps + foreign:
        p.write_bytes(b"x")
    notes = []
    clean_interrupted_writes(tmp_path, log=notes.append)
    assert [p for p in temps + foreign if p.exists()] == foreign
    assert len(notes) == 1 and notes[0].startswith(f"note: {tmp_path}: removed 3 temp files")
