"""Training throughput: the trainer's step on a batch already on the device vs the same step fed
by the trainer's own DataLoader, measured in one run (``tools/benchmark.py --model train_seg``).

The ratio says how much of the device's training speed the input pipeline delivers; below ~0.9
the loader is the bottleneck (more ``data.workers``, ``data.decoded_cache``).
"""

from __future__ import annotations

import copy
import gc
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import torch

from densemnv3.config import Config

from .trainer import Task, Trainer


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _step(trainer: Trainer, batch: Any) -> None:
    """One optimisation step as :meth:`Trainer.fit` takes it: AMP forward, losses, scaled
    backward, optimizer step, and the host sync of its finite-loss check."""
    amp = torch.autocast(trainer.device.type, dtype=torch.float16) if trainer.amp else nullcontext()
    with amp:
        losses = trainer.task.losses(trainer.ddp, batch, trainer.device)
    loss = sum(losses.values())
    torch.isfinite(loss).item()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(loss).backward()
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()


def _batches(trainer: Trainer) -> Iterator[Any]:
    epoch = 0
    while True:
        yield from trainer._loader(epoch, 0)
        epoch += 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images_per_second(trainer: Trainer, batches: Iterator[Any], steps: int, warmup: int) -> float:
    """Training steps on ``batches``: ``warmup`` untimed, then ``steps`` timed."""
    for _ in range(warmup):
        _step(trainer, next(batches))
    _sync(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        _step(trainer, next(batches))
    _sync(trainer.device)
    return steps * trainer.cfg.data.batch_size / (time.perf_counter() - start)


def training_throughput(
    cfg: Config,
    make_task: Callable[[Config], Task],
    *,
    device: str,
    steps: int,
    warmup: int,
    loader_variants: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Images per second of the training step of ``cfg`` (task from ``make_task``), (a) on one
    batch kept on the device (``device_img_s``) and (b) fed by the trainer's DataLoader
    (``<name>_img_s`` and ``<name>_ratio`` = b / a), ``warmup`` untimed steps before each. (b) runs
    once per entry of ``loader_variants``: name -> ``data`` fields to change, e.g.
    ``{"cached": {"decoded_cache": PATH}}`` (default ``{"loader": {}}``: the config as it is).

    The dataset's sample list is repeated when one epoch is shorter than the steps asked for, so
    no epoch boundary (where persistent workers wait for the next epoch's indices) falls inside
    the timing.
    """
    variants = loader_variants or {"loader": {}}
    result: dict[str, Any] = {"batch": cfg.data.batch_size, "workers": cfg.data.workers}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, changes) in enumerate(variants.items()):
            run = copy.deepcopy(cfg)
            run.work_dir, run.schedule.iters, run.schedule.epochs = tmp, 10**9, None
            for key, value in changes.items():
                setattr(run.data, key, value)
            trainer = _trainer(
                run, make_task(run), device, need=(warmup + steps + 4 * max(run.data.workers, 1))
            )
            try:
                if i == 0:  # (a): the first loader batch, kept on the device
                    batch = _to_device(next(iter(trainer._loader(0, 0))), trainer.device)
                    trainer._train_loader = None  # fresh workers for (b)
                    gc.collect()
                    rate = _images_per_second(trainer, itertools.repeat(batch), steps, warmup)
                    result["device_img_s"] = rate
                # (b): the warm-up steps include starting the workers
                rate = _images_per_second(trainer, _batches(trainer), steps, warmup)
                result[f"{name}_img_s"] = rate
                result[f"{name}_ratio"] = rate / result["device_img_s"]
            finally:
                if trainer.results is not None:
                    trainer.results.close()
                trainer._train_loader = None  # shuts its persistent workers down
                gc.collect()
    return result


def _trainer(cfg: Config, task: Task, device: str, need: int) -> Trainer:
    """A :class:`Trainer` of ``cfg`` whose training set has at least ``need`` batches per epoch."""
    train_set = task.train_dataset()
    samples = getattr(train_set, "samples", None)
    if samples is not None and len(samples) < need * cfg.data.batch_size:
        repeat = -(-need * cfg.data.batch_size // len(samples))
        train_set.samples = list(samples) * repeat
    task.train_dataset = lambda: train_set  # the Trainer builds the training set through the task
    return Trainer(cfg, task, device=device, progress=False)
