"""Training end to end on tiny synthetic data: artifacts, exact resume, signals, NaN, DDP."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from densemnv3.config import load_config
from densemnv3.engine.trainer import Trainer
from densemnv3.errors import TrainingError
from densemnv3.models import read_checkpoint
from densemnv3.tasks import build_task

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "lraspp_synthetic.py")


@pytest.fixture
def tiny_cfg(tiny_overrides):
    def make(root, work_dir, **extra):
        return load_config(CONFIG, tiny_overrides(root, work_dir, **extra))

    return make


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_train_writes_run_directory(tiny_synthetic, tmp_path, tiny_overrides, run_tool, tiny_cfg):
    work = tmp_path / "run"
    proc = run_tool(
        "train_seg.py", CONFIG, "--no-progress", "--set", *tiny_overrides(tiny_synthetic, work)
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("last.pt", "best.pt", "results.csv", "results.png", "metrics.json", "config.py"):
        assert (work / name).is_file(), name
    assert list((work / "tb").glob("events.out.tfevents.*"))
    with open(work / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iter"]) for r in rows] == [3, 6]
    assert {"lr", "train/loss", "train/ce", "val/mIoU", "val/pixel_accuracy"} <= rows[0].keys()
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["iter"] == 6 and 0.0 <= metrics["mIoU"] <= 1.0
    assert set(metrics["per_class_iou"]) >= {"road", "car", "sky"}
    assert "mIoU" in proc.stderr and "road" in proc.stderr  # the IoU table was printed
    state = read_checkpoint(work / "last.pt")
    assert state["iter"] == 6 and state["arch"] == "lraspp_mobilenet_v3_small"
    # the saved config is loadable and equals what ran
    assert load_config(work / "config.py") == tiny_cfg(tiny_synthetic, work)


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_exact(tiny_synthetic, tmp_path, tiny_overrides, run_tool):
    """kill -9 mid-epoch, resume from last.pt: final weights, and results.csv but for its
    wall-clock column, equal an uninterrupted run's."""
    extra = {"schedule__iters": 12, "train__eval_interval": 3, "train__checkpoint_interval": 2}
    ref = tmp_path / "reference"
    proc = run_tool(
        "train_seg.py",
        CONFIG,
        "--no-progress",
        "--set",
        *tiny_overrides(tiny_synthetic, ref, **extra),
    )
    assert proc.returncode == 0, proc.stderr

    crashed = tmp_path / "crashed"
    args = [
        sys.executable,
        str(ROOT / "tools/train_seg.py"),
        CONFIG,
        "--no-progress",
        "--set",
        *tiny_overrides(tiny_synthetic, crashed, **extra),
    ]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and child.poll() is None:
        if (crashed / "last.pt").is_file():
            it = read_checkpoint(crashed / "last.pt")["iter"]
            if it >= 4:  # 4 iterations per epoch: 4..10 are inside an epoch or at its start
                child.send_signal(signal.SIGKILL)
                killed_at = it
                break
        time.sleep(0.05)
    child.wait()
    assert killed_at is not None and killed_at < 12, "the run finished before it could be killed"
    assert child.returncode == -signal.SIGKILL

    proc = run_tool(
        "train_seg.py",
        CONFIG,
        "--no-progress",
        "--resume",
        "--set",
        *tiny_overrides(tiny_synthetic, crashed, **extra),
    )
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stderr
    final_ref = read_checkpoint(ref / "last.pt")
    final_resumed = read_checkpoint(crashed / "last.pt")
    assert final_resumed["iter"] == final_ref["iter"] == 12
    assert_same_weights(final_ref["model"], final_resumed["model"])
    assert_same_weights(
        {str(k): v["momentum_buffer"] for k, v in final_ref["optimizer"]["state"].items()},
        {str(k): v["momentum_buffer"] for k, v in final_resumed["optimizer"]["state"].items()},
    )
    rows = {}
    for run in (ref, crashed):
        with open(run / "results.csv") as f:
            rows[run] = [
                {k: v for k, v in row.items() if k not in ("time", "val/ms_per_image")}  # timings
                for row in csv.DictReader(f)
            ]
    assert [int(r["iter"]) for r in rows[ref]] == [3, 6, 9, 12]
    assert rows[crashed] == rows[ref]  # the running loss means too, not only the weights


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signal_saves_checkpoint_and_exits_cleanly(
    tiny_synthetic, tmp_path, sig, code, tiny_overrides
):
    work = tmp_path / "run"
    args = [
        sys.executable,
        str(ROOT / "tools/train_seg.py"),
        CONFIG,
        "--no-progress",
        "--set",
        *tiny_overrides(
            tiny_synthetic,
            work,
            schedule__iters=400,
            train__checkpoint_interval=1000,
            train__eval_interval=1000,
        ),
    ]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (work / "config.py").is_file():
        time.sleep(0.1)
    time.sleep(3)  # a few iterations in
    child.send_signal(sig)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == code, stderr
    assert "Traceback" not in stderr
    assert f"saved {work / 'last.pt'}" in stderr and "--resume" in stderr
    state = read_checkpoint(work / "last.pt")
    assert 0 < state["iter"] < 400


class NaNAt:
    """A task wrapper whose loss becomes NaN at one iteration."""

    def __init__(self, task, at):
        self.task, self.at, self.calls = task, at, 0

    def __getattr__(self, name):
        return getattr(self.task, name)

    def losses(self, model, batch, device):
        self.calls += 1
        losses = self.task.losses(model, batch, device)
        if self.calls == self.at:
            losses["ce"] = losses["ce"] * float("nan")
        return losses


def test_nan_loss_stops_with_iteration_and_keeps_best(tiny_synthetic, tmp_path, tiny_cfg):
    cfg = tiny_cfg(tiny_synthetic, tmp_path / "run", schedule__iters=6, train__eval_interval=2)
    trainer = Trainer(cfg, NaNAt(build_task(cfg), at=4), device="cpu", progress=False)
    with pytest.raises(TrainingError, match=r"loss became nan at iteration 4 \(ce=nan\)"):
        trainer.fit()
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert best["iter"] == 2
    assert all(torch.isfinite(v).all() for v in best["model"].values() if v.is_floating_point())


def test_nan_loss_names_the_checkpoint_saved_before_it(tiny_synthetic, tmp_path, tiny_cfg):
    work = tmp_path / "run"
    cfg = tiny_cfg(
        tiny_synthetic,
        work,
        schedule__iters=8,
        train__eval_interval=100,
        train__checkpoint_interval=3,
    )
    trainer = Trainer(cfg, NaNAt(build_task(cfg), at=5), device="cpu", progress=False)
    with pytest.raises(TrainingError) as error:
        trainer.fit()
    message = str(error.value)
    assert f"The last checkpoint is {work / 'last.pt'} (iteration 3;" in message
    assert "best.pt" not in message and not (work / "best.pt").exists()
    assert read_checkpoint(work / "last.pt")["iter"] == 3


def test_diverging_run_names_only_files_that_exist(
    tiny_synthetic, tmp_path, tiny_overrides, run_tool
):
    """``optim.lr`` far too high: the loss becomes NaN before the first checkpoint is due, and the
    one error line says that no checkpoint exists instead of naming a last.pt."""
    work = tmp_path / "diverge"
    proc = run_tool(
        "train_seg.py",
        CONFIG,
        "--no-progress",
        "--set",
        *tiny_overrides(
            tiny_synthetic,
            work,
            optim__lr=1e12,
            schedule__iters=40,
            train__checkpoint_interval=1000,
            train__eval_interval=1000,
        ),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "loss became nan" in error[0] or "non-finite" in error[0], error[0]
    assert "No checkpoint was saved yet (the first was due at iteration 1000" in error[0], error[0]
    assert not (work / "last.pt").exists() and not (work / "best.pt").exists()


def test_resume_rejects_other_architecture(
    tiny_synthetic, tmp_path, tiny_cfg, tiny_overrides, run_tool
):
    cfg = tiny_cfg(tiny_synthetic, tmp_path / "a", schedule__iters=2, train__eval_interval=100)
    Trainer(cfg, build_task(cfg), device="cpu", progress=False).fit()
    proc = run_tool(
        "train_seg.py",
        CONFIG,
        "--resume",
        str(tmp_path / "a" / "last.pt"),
        "--set",
        *tiny_overrides(tiny_synthetic, tmp_path / "b", model__name="lraspp_mobilenet_v3_large"),
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "lraspp_mobilenet_v3_small" in proc.stderr and "lraspp_mobilenet_v3_large" in proc.stderr


@pytest.mark.slow
def test_torchrun_two_processes_only_rank0_writes(tiny_synthetic, tmp_path, tiny_overrides):
    work = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "tools/train_seg.py"),
            CONFIG,
            "--no-progress",
            "--set",
            *tiny_overrides(tiny_synthetic, work, data__batch_size=1),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((work / "tb").glob("events.out.tfevents.*"))) == 1  # one writer: rank 0
    assert proc.stdout.count("run directory:") == 1
    state = read_checkpoint(work / "last.pt")
    assert state["iter"] == 6 and state["world_size"] == 2
    assert sorted(p.name for p in work.iterdir()) == sorted(
        ["best.pt", "config.py", "last.pt", "metrics.json", "results.csv", "results.png", "tb"]
    )


def test_image_smaller_than_the_crop_is_padded(tiny_synthetic, tmp_path, tiny_cfg):
    """64x128 images, 96x160 crops: padded (label 255) rather than failing."""
    cfg = tiny_cfg(
        tiny_synthetic,
        tmp_path / "run",
        data__crop_size="[96,160]",
        data__scale_range="[1.0,1.0]",
        schedule__iters=1,
        train__eval_interval=100,
    )
    task = build_task(cfg)
    image, target = task.train_dataset()[0]
    assert tuple(image.shape) == (3, 96, 160) and tuple(target.shape) == (96, 160)
    assert (target[64:] == 255).all()
    assert (target[:, 128:] == 255).all() or (target[:, :32] == 255).all()  # either flip
    assert (target[:64] != 255).float().mean() > 0.5  # the image itself is labelled
    Trainer(cfg, task, device="cpu", progress=False).fit()
    assert read_checkpoint(tmp_path / "run" / "last.pt")["iter"] == 1


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_build_optimizer_groups_and_kind(name):
    from torch import nn

    from densemnv3.engine.optim import build_optimizer

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    cfg = load_config(
        CONFIG,
        [
            f"optim.name={name}",
            "optim.lr=0.003",
            "optim.weight_decay=0.01",
            "optim.norm_weight_decay=0.0",
            "optim.momentum=0.8",
        ],
    )
    optimizer = build_optimizer(model, cfg)
    assert type(optimizer) is {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[name]
    decay, no_decay = optimizer.param_groups
    assert [p.shape for p in decay["params"]] == [(4, 3, 3, 3)]  # conv weight only
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0  # conv bias, BN affine
    assert decay["weight_decay"] == 0.01 and decay["lr"] == 0.003
    if name == "adamw":
        assert decay["betas"] == (0.8, 0.999)
    else:
        assert decay["momentum"] == 0.8


def test_loader_keeps_its_workers_across_epochs(tiny_synthetic, tmp_path, tiny_cfg):
    """workers > 0: one DataLoader with persistent workers; each epoch still gets its own order."""
    cfg = tiny_cfg(tiny_synthetic, tmp_path / "run", data__workers=1, train__eval_interval=100)
    trainer = Trainer(cfg, build_task(cfg), device="cpu", progress=False)
    loader = trainer._loader(0, 0)
    assert loader.persistent_workers and loader.num_workers == 1
    epochs = [[target.clone() for _, target in trainer._loader(epoch, 0)] for epoch in (0, 1)]
    assert trainer._loader(1, 1) is loader
    assert len(list(loader)) == len(epochs[1]) - 1  # resumed at batch 1 of epoch 1
    assert len(epochs[0]) == len(epochs[1]) == trainer.iters_per_epoch
    assert any(not a.equal(b) for a, b in zip(*epochs))
    fresh = Trainer(
        cfg, build_task(cfg), device="cpu", progress=False
    )  # same batches as a new loader
    assert all(a.equal(b) for a, (_, b) in zip(epochs[1], fresh._loader(1, 0), strict=True))
    cfg0 = tiny_cfg(tiny_synthetic, tmp_path / "run0", data__workers=0)
    assert (
        not Trainer(cfg0, build_task(cfg0), device="cpu", progress=False)
        ._loader(0, 0)
        .persistent_workers
    )
