"""Multi-node training as docs/training.md runs it
(``torchrun --nnodes 2 ... --rdzv-backend c10d``), with two "nodes" of one process each on this
host, on the CPU (gloo).

Each node runs in a folder of its own with the relative ``work_dir=run``, so what a node writes
shows up under its folder: the run directory must be node 0's alone. A world of 2 shows in what
rank 0 records: the checkpoint's ``world_size`` and the epochs of ``results.csv`` (8 training
images, batch 2 per process: 2 iterations an epoch with 2 processes, 4 with one).

Losses: each rank computes the loss of its shard of each global batch; the trainer logs their
mean over all ranks. With ``DENSEMNV3_LOG_RANKS=1`` every rank prints its line, prefixed
``[rank N]``: both ranks must print the same losses, and those ``results.csv`` records.
"""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "lraspp_synthetic.py")
#: seconds for both nodes together: a hang (a rendezvous never formed) fails, never blocks
TIMEOUT = 300
RUN_FILES = ["best.pt", "config.py", "last.pt", "metrics.json", "results.csv", "results.png", "tb"]
LOSS_LINE = re.compile(r"^\[rank (\d)\] iter (\d+)/(\d+)  loss (\S+) ", re.M)
#: what would make torchrun or the trainer think they already run inside a distributed job
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill(procs: list[subprocess.Popen]) -> None:
    """Each node's process group (torchrun and the worker it started), if still running."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def _run_nodes(commands: list[list[str]], cwds: list[Path], logs: Path, env: dict) -> list[str]:
    """Start every node at once, each in its own cwd and process group; wait for all of them (a
    node that fails stops the others: they would wait for it at the rendezvous). Returns each
    node's stdout and stderr, together; fails the test on a timeout or a non-zero exit."""
    procs, files = [], []
    try:
        for i, (command, cwd) in enumerate(zip(commands, cwds)):
            out = open(logs / f"node{i}.log", "w+")  # a file, not a pipe: no buffer to fill up
            files.append(out)
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        deadline, timed_out = time.monotonic() + TIMEOUT, False
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break  # the others are killed below (exit -9 in the report)
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.2)
    finally:
        _kill(procs)
    texts = []
    for f in files:
        f.seek(0)
        texts.append(f.read())
        f.close()
    report = "\n".join(
        f"--- node {i}: exit {p.returncode}\n{text[-3000:]}"
        for i, (p, text) in enumerate(zip(procs, texts))
    )
    if timed_out:
        pytest.fail(f"the nodes did not finish in {TIMEOUT} s (killed)\n{report}")
    assert [p.returncode for p in procs] == [0] * len(procs), report
    return texts


@pytest.mark.slow
def test_two_nodes_c10d_rendezvous_train_one_run(tiny_synthetic, tmp_path, tiny_overrides):
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this build")
    endpoint = f"127.0.0.1:{_free_port()}"
    rdzv_id = f"test-multinode-{uuid.uuid4().hex[:12]}"
    cwds = [tmp_path / "node0", tmp_path / "node1"]
    for cwd in cwds:
        cwd.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    # torchrun is `python -m torch.distributed.run`; this interpreter's, whatever is on PATH
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-id",
        rdzv_id,
        str(ROOT / "tools" / "train_seg.py"),
        CONFIG,
        "--no-progress",
        "--set",
        *tiny_overrides(tiny_synthetic, Path("run")),  # relative: under each node's cwd
    ]
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env["OMP_NUM_THREADS"] = "1"  # 2 trainers on a 2-core machine
    env["DENSEMNV3_LOG_RANKS"] = "1"  # every rank prints its log line
    node0, node1 = _run_nodes([command, command], cwds, logs, env)

    # one run directory, node 0's, with what a run writes there (the lock released)
    assert sorted(p.name for p in cwds[1].iterdir()) == [], "node 1 wrote files"
    assert sorted(p.name for p in cwds[0].iterdir()) == ["run"]
    run = cwds[0] / "run"
    assert sorted(p.name for p in run.iterdir()) == RUN_FILES
    assert len(list((run / "tb").iterdir())) == 1  # one TensorBoard writer: rank 0
    assert node0.count("run directory: run") == 1 and "run directory" not in node1

    # the rendezvous formed a world of 2: the checkpoint says so, and each epoch of 8 images
    # took 2 iterations (batches of 2 on each of 2 processes), not 4
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert state["world_size"] == 2 and state["iter"] == 6
    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["iter"]), int(r["epoch"])) for r in rows] == [(3, 1), (6, 3)]

    # both ranks logged every iteration's loss, the same mean over all ranks, and the values
    # results.csv records at each evaluation are those
    losses = {}
    for node, text in ((0, node0), (1, node1)):
        for rank, it, total, loss in LOSS_LINE.findall(text):
            assert (int(rank), total) == (node, "6")
            losses.setdefault(node, {})[int(it)] = float(loss)
    assert sorted(losses[0]) == sorted(losses[1]) == [1, 2, 3, 4, 5, 6], node0[-3000:]
    assert losses[0] == losses[1]
    assert all(math.isfinite(v) and v > 0 for v in losses[0].values()), losses
    for row in rows:
        assert losses[0][int(row["iter"])] == pytest.approx(float(row["train/loss"]), abs=5e-4)
