"""Faults around what the tools write: a full disk part-way through a write, two trainings in one
work dir, temps left by a killed save, and the mode of written artifacts.

A full disk is injected at the file layer of a real tool process (no root needed): ``INJECT``
wraps Python's ``open`` so that files whose path matches a pattern, from the N-th such open on,
take 64 bytes and then raise ``OSError(ENOSPC)``, as a full disk does.
"""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SEG_CONFIG = str(ROOT / "configs" / "lraspp_synthetic.py")

INJECT = """
import builtins, errno, io, os, re, runpy, sys
pattern, healthy = re.compile(sys.argv[1]), int(sys.argv[2])
real_open, opened = io.open, [0]

class Full:
    def __init__(self, f):
        self._f, self._room = f, 64
    def write(self, data):
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)
    def __getattr__(self, name):
        return getattr(self._f, name)
    def __iter__(self):
        return iter(self._f)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self._f.close()

def full_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    if any(c in mode for c in "wax") and pattern.search(str(file)):
        opened[0] += 1
        if opened[0] > healthy:
            return Full(f)
    return f

builtins.open = io.open = full_open
sys.argv = sys.argv[3:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_with_full_disk(
    pattern: str, healthy: int, tool: str, *args: str
) -> subprocess.CompletedProcess:
    """``tools/TOOL ARGS`` with the disk full for the files matching ``pattern`` after
    ``healthy`` of them were written."""
    return subprocess.run(
        [sys.executable, "-c", INJECT, pattern, str(healthy), str(ROOT / "tools" / tool), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def assert_write_error(proc, *needles: str) -> str:
    """Exit 1, no traceback; the last stderr line is the one ``error:`` line naming ``needles``."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def train_args(tiny_synthetic, tiny_overrides, work: Path, *more: str, **extra) -> list[str]:
    return [
        SEG_CONFIG,
        "--no-progress",
        *more,
        "--set",
        *tiny_overrides(tiny_synthetic, work, **extra),
    ]


# ---------------------------------------------------------------- a full disk, in each writer


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, last_iter, rows", [("last.pt", 2, 1), ("results.csv", 4, 1), ("metrics.json", 4, 2)]
)
def test_training_on_a_full_disk_keeps_the_last_good_files(
    tiny_synthetic, tiny_overrides, tmp_path, run_tool, name, last_iter, rows
):
    """6 iterations: checkpoints at 2, 4, 6 and evaluations (results.csv, then metrics.json) at
    3 and 6; the disk fills on the second write of ``name``. What was written before stays whole
    and ``--resume`` finishes the run."""
    work = tmp_path / "run"
    args = train_args(tiny_synthetic, tiny_overrides, work)
    proc = run_with_full_disk(rf"/\.{name.replace('.', '[.]')}\.", 1, "train_seg.py", *args)
    line = assert_write_error(
        proc,
        f"{work / name}: cannot write, the disk is full (No space "
        f"left on device); the previous {name} is unchanged there and no "
        "temp file is left",
    )
    if name == "last.pt":
        assert line.endswith("free some space, then continue with --resume")
    assert temps(work) == []
    assert torch.load(work / "last.pt", weights_only=True)["iter"] == last_iter
    assert len((work / "results.csv").read_text().splitlines()) == 1 + rows
    assert json.loads((work / "metrics.json").read_text())["iter"] == 3
    done = run_tool("train_seg.py", *args, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(work / "last.pt", weights_only=True)["iter"] == 6


@pytest.mark.slow
def test_decoded_cache_on_a_full_disk_gives_its_space_back(tiny_synthetic, tmp_path):
    out = tmp_path / "cache"
    proc = run_with_full_disk(
        r"_image\.npy$",
        3,
        "cache_dataset.py",
        SEG_CONFIG,
        "--no-progress",
        "--set",
        f"data.root={tiny_synthetic}",
        f"data.decoded_cache={out}",
        "data.synthetic=None",
    )
    assert_write_error(
        proc,
        f"{out}: cannot write the decoded cache, the disk is full",
        "partial files were removed",
        "tools/cache_dataset.py again",
    )
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def seg_checkpoint(tiny_synthetic, tmp_path_factory) -> Path:
    """A random-weight LR-ASPP-Small checkpoint whose config reads the tiny synthetic set."""
    from dataclasses import asdict

    from densemnv3.config import load_config
    from densemnv3.models import build_model

    root = tmp_path_factory.mktemp("writes")
    cfg = load_config(
        SEG_CONFIG,
        [
            "model.name=lraspp_mobilenet_v3_small",
            f"work_dir={root}",
            f"data.root={tiny_synthetic}",
            "data.synthetic=None",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg.model)
    with torch.no_grad():  # spread-out activations: an untrained network's leave int8 no range
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif t.is_floating_point():
                t.normal_(0, 0.1)
    state = {"model": model.state_dict(), "arch": cfg.model.name, "config": asdict(cfg)}
    torch.save(state, root / "seg.pt")
    return root / "seg.pt"


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["export.py", "quantize.py"])
def test_export_and_quantize_on_a_full_disk(seg_checkpoint, tmp_path, tool):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the model deployed yesterday")
    args = ["--weights", str(seg_checkpoint), "--out", str(out)]
    args += (
        ["--format", "onnx", "--input-size", "64", "128"]
        if tool == "export.py"
        else ["--calib-images", "2", "--no-progress"]
    )
    proc = run_with_full_disk(r"/\.model\.onnx\.", 0, tool, *args)
    assert_write_error(
        proc,
        f"{out}: cannot write, the disk is full",
        "the previous model.onnx is unchanged there and no temp file is left",
    )
    assert out.read_bytes() == b"the model deployed yesterday" and temps(tmp_path) == []


# ---------------------------------------------------------------- one run per work dir


@pytest.mark.slow
def test_second_training_into_a_locked_work_dir_stops_and_a_killed_holder_is_taken_over(
    tiny_synthetic, tiny_overrides, tmp_path, run_tool
):
    work = tmp_path / "run"
    long_run = train_args(
        tiny_synthetic,
        tiny_overrides,
        work,
        schedule__iters=100_000,
        train__eval_interval=100_000,
        train__checkpoint_interval=2,
    )
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "train_seg.py"), *long_run],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (work / "last.pt").exists():  # it holds the lock and has saved once
            assert first.poll() is None and time.time() < deadline, first.stderr.read()[-3000:]
            time.sleep(0.2)
        second = run_tool("train_seg.py", *train_args(tiny_synthetic, tiny_overrides, work))
        assert second.returncode == 2, second.stderr[-3000:]
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(
            f"error: {work}: another run is using this work dir: pid {first.pid} on "
        ), lines
        assert f"delete {work / '.lock'}" in lines[0]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stderr.close()
    (work / f".last.pt.{first.pid}-deadbeef.tmp").write_bytes(b"x" * 1000)  # as if killed mid-save
    killed_at = torch.load(work / "last.pt", weights_only=True)["iter"]
    resumed = run_tool(
        "train_seg.py",
        *train_args(tiny_synthetic, tiny_overrides, work, schedule__iters=killed_at + 2),
        "--resume",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(work / "last.pt", weights_only=True)["iter"] == killed_at + 2
    assert f"note: {work / '.lock'}: taking over the lock of pid {first.pid} on " in resumed.stderr
    # ours, and the killed run's own when the kill came mid-save
    assert re.search(
        rf"note: {re.escape(str(work))}: removed [12] temp files of interrupted saves "
        r"\(.*\.last\.pt\.\d+-deadbeef\.tmp",
        resumed.stderr,
    ), resumed.stderr
    assert not (work / ".lock").exists() and temps(work) == []  # released at the end


@pytest.mark.slow
def test_resume_of_a_finished_run_says_so(tiny_synthetic, tiny_overrides, tmp_path, run_tool):
    work = tmp_path / "run"
    args = train_args(tiny_synthetic, tiny_overrides, work, schedule__iters=3)
    assert run_tool("train_seg.py", *args).returncode == 0
    assert not (work / ".lock").exists()  # released by the finished run
    again = run_tool("train_seg.py", *args, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing left to train" in again.stderr and "final mIoU: " in again.stdout
    assert torch.load(work / "last.pt", weights_only=True)["iter"] == 3


# ---------------------------------------------------------------- artifacts anyone may read


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_artifacts_have_the_mode_of_any_new_file(
    tiny_synthetic, tiny_overrides, seg_checkpoint, tmp_path, run_tool
):
    pytest.importorskip("onnxruntime")
    umask = 0o022
    plain = 0o666 & ~umask

    def tool(name: str, *args: str) -> None:
        before = os.umask(umask)
        try:
            proc = run_tool(name, *args)
        finally:
            os.umask(before)
        assert proc.returncode == 0, proc.stderr[-3000:]

    work = tmp_path / "run"
    tool(
        "train_seg.py",
        *train_args(
            tiny_synthetic, tiny_overrides, work, schedule__iters=2, train__eval_interval=2
        ),
    )
    tool(
        "export.py",
        "--weights",
        str(seg_checkpoint),
        "--format",
        "onnx",
        "--input-size",
        "64",
        "128",
        "--out",
        str(tmp_path / "model.onnx"),
    )
    tool(
        "quantize.py",
        "--weights",
        str(tmp_path / "run" / "last.pt"),
        "--calib-images",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path / "int8.onnx"),
    )
    for path in (
        work / "last.pt",
        work / "best.pt",
        work / "metrics.json",
        work / "results.csv",
        tmp_path / "model.onnx",
        tmp_path / "int8.onnx",
    ):
        assert _mode(path) == plain, (path, oct(_mode(path)))


def test_eval_out_that_is_a_file_is_one_line(seg_checkpoint, tmp_path, run_tool):
    taken = tmp_path / "results"
    taken.write_text("not a folder")
    proc = run_tool("eval_seg.py", "--weights", str(seg_checkpoint), "--out", str(taken))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: {taken}: cannot use as the output folder (File exists); --out takes a folder "
        "(metrics.json and the other results go in it)"
    ]
    assert taken.read_text() == "not a folder"
