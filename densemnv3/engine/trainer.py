"""The training loop: iterations, AMP, DDP, evaluation, checkpoints, resume, signals.

The loop is task-agnostic; a :class:`Task` (segmentation or detection, see :mod:`densemnv3.tasks`)
builds the model and data, computes the losses of a batch and evaluates. Checkpoints record the
resolved config, so :func:`densemnv3.load.load_model` rebuilds the model from them alone.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from densemnv3.checkpoint import inspect_checkpoint, load_weights, non_finite
from densemnv3.config import Config, save_config
from densemnv3.data.checks import report_bad_data, sample_counts
from densemnv3.errors import CheckpointError, TrainingError, UserError
from densemnv3.load import reconcile_config
from densemnv3.utils.files import write_text

from . import distributed as dist_utils
from .checkpoint import atomic_save, get_rng_state, set_rng_state
from .determinism import enable_determinism, nondeterministic_op_is_a_user_error
from .optim import build_optimizer, lr_factor
from .results import ResultsLog
from .sampler import ResumableBatchSampler, train_loader
from .task import Task
from .workdir import WorkDirLock, clean_interrupted_writes

#: Set to 1 to have every rank of a multi-process run print its log line, prefixed ``[rank N]``
#: (their losses are the same means over all ranks: a check that every node trains as one).
LOG_RANKS = "DENSEMNV3_LOG_RANKS"


class Trainer:
    """Trains ``task``'s model as ``cfg`` says, writing everything under ``work_dir`` (rank 0)."""

    def __init__(
        self,
        cfg: Config,
        task: Task,
        *,
        device: str,
        resume: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg, self.task = cfg, task
        self.work_dir = Path(cfg.work_dir)
        if cfg.train.deterministic:  # before anything starts CUDA (cuBLAS reads its workspace once)
            enable_determinism(torch.device(device))
        self.rank, self.local_rank, self.world_size = dist_utils.init_distributed(device)
        self.is_main = self.rank == 0
        self.device = torch.device(f"cuda:{self.local_rank}" if device == "cuda" else device)
        self.progress = progress and self.is_main
        if self.is_main:  # before anything is written there
            self.lock = WorkDirLock(self.work_dir, log=self._log)
            clean_interrupted_writes(self.work_dir, log=self._log)
        torch.manual_seed(cfg.train.seed)

        self.train_set = task.train_dataset()
        self.val_set = task.val_dataset()
        report_bad_data(
            [self.train_set, self.val_set],
            self.work_dir,
            skip_bad=cfg.data.skip_bad,
            log=self._log,
            write=self.is_main,
            progress=self.progress,
        )
        model = task.build_model().to(self.device)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.world_size > 1 and cfg.train.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.ddp = (
            nn.parallel.DistributedDataParallel(
                model, device_ids=[self.local_rank] if self.device.type == "cuda" else None
            )
            if self.world_size > 1
            else model
        )
        self.batch_sampler = ResumableBatchSampler(
            len(self.train_set),
            cfg.data.batch_size,
            seed=cfg.train.seed,
            rank=self.rank,
            world_size=self.world_size,
        )
        self.iters_per_epoch = len(self.batch_sampler)
        self._train_loader: DataLoader | None = None
        s = cfg.schedule
        if (s.iters is None) == (s.epochs is None):
            raise UserError("set exactly one of schedule.iters and schedule.epochs")
        self.total_iters = s.iters if s.iters is not None else s.epochs * self.iters_per_epoch
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(it, self.total_iters, cfg)
        )
        self.amp = cfg.train.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.iter = 0
        self.best_metric: float | None = None
        self.metrics: dict[str, Any] = {}
        # sums of the losses since the last evaluation, and training seconds before this process:
        # saved in checkpoints, so that results.csv after --resume equals an uninterrupted run's
        self.window: dict[str, float] = {}
        self.window_n = 0
        self.elapsed_before = 0.0
        self._t0 = time.time()
        self._bar: tqdm | None = None
        self._stop_signal: int | None = None
        self.last_saved: tuple[Path, int] | None = None  # this run's last.pt (or --resume's file)
        self.results = ResultsLog(self.work_dir) if self.is_main else None
        if resume is not None:
            self._resume(Path(resume))
        if self.is_main:
            save_config(cfg, self.work_dir / "config.py")

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iter": self.iter,
            "epoch": self.iter // self.iters_per_epoch,
            "best_metric": self.best_metric,
            "metrics": self.metrics,
            "rng": get_rng_state(),
            "log": {
                "window": dict(self.window),
                "window_n": self.window_n,
                "elapsed": self.elapsed_before + time.time() - self._t0,
            },
            "arch": self.cfg.model.name,
            "world_size": self.world_size,
            "config": asdict(self.cfg),
        }

    def save(self, name: str = "last.pt") -> Path | None:
        bad = non_finite(self.model.state_dict())  # every rank: their weights are the same
        if bad:
            first, counts = next(iter(bad.items()))
            raise TrainingError(
                f"the weights became non-finite by iteration {self.iter} ({len(bad)} "
                f"tensors, first {first}: {counts}); nothing was saved. "
                f"{self.checkpoints_left()}"
            )
        if not self.is_main:
            return None
        path = atomic_save(
            self.state_dict(),
            self.work_dir / name,
            hint="free some space, then continue with --resume",
        )
        if name == "last.pt":
            self.last_saved = (path, self.iter)
        return path

    def checkpoints_left(self) -> str:
        """The checkpoints of this run that exist, for the message of a run that cannot go on."""
        interval = self.cfg.train.checkpoint_interval
        if self.last_saved is not None and self.last_saved[0].is_file():
            path, it = self.last_saved
            said = f"The last checkpoint is {path} (iteration {it}; continue with --resume)"
        else:
            due = (self.iter // interval + 1) * interval
            said = (
                f"No checkpoint was saved yet (the first was due at iteration {due}, "
                f"train.checkpoint_interval)"
            )
        best = self.work_dir / "best.pt"
        if self.best_metric is not None and best.is_file():
            said += f"; best.pt ({self.task.metric} {self.best_metric:.4f}) was not touched"
        return said + "."

    def _resume(self, path: Path) -> None:
        info = inspect_checkpoint(path)
        if info.task in ("segmentation", "detection") and self.cfg.task == "multitask":
            raise CheckpointError(
                f"{path}: {info.description}, not a checkpoint of this multitask "
                f"run to resume; start from its weights with --set model.weights={path}"
            )
        reconcile_config(self.cfg, info, inputs=False)  # the same model, or one clear error
        load_weights(self.model, info, task=self.cfg.task, model_name=self.cfg.model.name)
        if not info.resumable:
            raise CheckpointError(
                f"{path}: {info.description}, not a training checkpoint (no "
                f"optimizer state) to resume; start a run from its weights with "
                f"--set model.weights={path}"
            )
        state = info.state
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.iter = int(state["iter"])
        self.last_saved = (path, self.iter)
        self.best_metric = state.get("best_metric")
        self.metrics = state.get("metrics") or {}
        log = state.get("log") or {}
        self.window, self.window_n = dict(log.get("window", {})), int(log.get("window_n", 0))
        self.elapsed_before = float(log.get("elapsed", 0.0))
        set_rng_state(state["rng"])
        if self.results is not None:
            self.results.truncate_after(self.iter)
        self._log(f"resumed from {path} at iteration {self.iter}/{self.total_iters}")
        if self.iter >= self.total_iters:
            self._log(
                f"nothing left to train: {path} is at or past the schedule's end; raise "
                f"schedule.iters (or schedule.epochs) to train further"
            )

    # ------------------------------------------------------------------ loop

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        """The training loader, set to ``epoch`` from batch ``start_batch``. Built once: its
        workers persist across epochs (the sampler is iterated in this process, so each new
        iteration picks up the epoch)."""
        self.batch_sampler.set_epoch(epoch, start_batch)
        if self._train_loader is None:
            self._train_loader = train_loader(
                self.train_set,
                self.batch_sampler,
                self.cfg.data.workers,
                self.task.collate,
                pin_memory=self.device.type == "cuda",
            )
        return self._train_loader

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        self._log(f"\n{signal.Signals(signum).name} received: saving a checkpoint after this step")

    def _means(self, window: dict[str, float], window_n: int) -> dict[str, float]:
        """The window's mean losses over every rank's batches (each rank sums its own; DDP
        averages gradients, not losses). Called on every rank alike."""
        means = {k: v / max(window_n, 1) for k, v in window.items()}
        if self.world_size > 1:
            values = torch.tensor(list(means.values()), dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(values)  # a sum: gloo has no average
            means = dict(zip(means, (values / self.world_size).tolist()))
        return means

    def _log_line(self, means: dict[str, float], lr: float, t0: float, start_iter: int) -> None:
        """``iter 120/480  loss 9.145 (bbox_regression 3.329, classification 5.815)  lr 1.28e-01
        1.35 s/it  eta 8m06s`` (means over the iterations since the last evaluation). Rank 0
        prints it; every rank does, prefixed ``[rank N]``, where :data:`LOG_RANKS` is 1."""
        every_rank = self.world_size > 1 and os.environ.get(LOG_RANKS) == "1"
        if not (self.is_main or every_rank):
            return
        parts = ", ".join(f"{k} {v:.3f}" for k, v in means.items() if k != "loss")
        per_it = (time.time() - t0) / max(self.iter - start_iter, 1)
        eta = int(per_it * (self.total_iters - self.iter))
        line = (
            f"iter {self.iter}/{self.total_iters}  loss {means.get('loss', float('nan')):.3f} "
            f"({parts})  lr {lr:.2e}  {per_it:.2f} s/it  eta {eta // 60}m{eta % 60:02d}s"
        )
        if every_rank:
            print(f"[rank {self.rank}] {line}", file=sys.stderr, flush=True)
        else:
            self._log(line)

    def _log(self, message: str) -> None:
        if self.is_main:
            tqdm.write(message, file=sys.stderr)

    def fit(self) -> dict[str, Any]:
        """Train to ``total_iters``; returns the last evaluation's metrics."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._fit()
        finally:
            if self._bar is not None:
                self._bar.close()  # so that an error message starts on a line of its own
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self.results is not None:
                self.results.close()
            if self.is_main:
                self.lock.release()

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        self.ddp.train()
        self._bar = bar = tqdm(
            total=self.total_iters,
            initial=self.iter,
            disable=not self.progress,
            desc="train",
            dynamic_ncols=True,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
        window = self.window
        skipped, start_iter = 0, self.iter
        t0 = self._t0 = time.time()
        while self.iter < self.total_iters:
            epoch, start = divmod(self.iter, self.iters_per_epoch)
            for batch in self._loader(epoch, start):
                with (
                    nondeterministic_op_is_a_user_error(cfg.train.deterministic, TrainingError),
                    torch.autocast(self.device.type, dtype=torch.float16)
                    if self.amp
                    else nullcontext(),
                ):
                    losses = self.task.losses(self.ddp, batch, self.device)
                loss = sum(losses.values())
                if not self._all_finite(loss):
                    if self.amp and skipped < 20:
                        skipped += 1
                        self.optimizer.zero_grad(set_to_none=True)
                        self.scaler.update(self.scaler.get_scale() / 2)
                        self._log(
                            f"iteration {self.iter + 1}: non-finite loss under AMP, step skipped"
                        )
                        continue
                    raise TrainingError(
                        f"loss became {loss.item()} at iteration {self.iter + 1} "
                        f"({', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())}); "
                        f"lower optim.lr or set optim.clip_grad_norm. {self.checkpoints_left()}"
                    )
                skipped = 0
                self.optimizer.zero_grad(set_to_none=True)
                with nondeterministic_op_is_a_user_error(cfg.train.deterministic, TrainingError):
                    self.scaler.scale(loss).backward()
                if cfg.optim.clip_grad_norm:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.iter += 1
                for k, v in losses.items():
                    window[k] = window.get(k, 0.0) + float(v.detach())
                window["loss"] = window.get("loss", 0.0) + float(loss.detach())
                self.window_n += 1
                window_n = self.window_n
                lr = self.optimizer.param_groups[0]["lr"]
                bar.update(1)
                if self.iter % cfg.train.log_interval == 0 or self.iter == self.total_iters:
                    means = self._means(window, window_n)
                    bar.set_postfix(
                        loss=f"{means['loss']:.4f}",
                        lr=f"{lr:.2e}",
                        epoch=self.iter // self.iters_per_epoch,
                        refresh=False,
                    )
                    if self.results is not None:
                        train = {f"train/{k}": v for k, v in means.items()}
                        self.results.scalars(train | {"train/lr": lr}, self.iter)
                    if not self.progress:  # no bar (--no-progress, logs to a file): one line
                        self._log_line(means, lr, t0, start_iter)
                done = self.iter == self.total_iters
                if self.iter % cfg.train.eval_interval == 0 or done:
                    train_means = {
                        f"train/{k}": v for k, v in self._means(window, window_n).items()
                    }
                    self._evaluate_and_record(
                        train_means, lr, self.elapsed_before + time.time() - t0
                    )
                    window.clear()
                    self.window_n = 0
                    self.ddp.train()
                if self.iter % cfg.train.checkpoint_interval == 0 or done:
                    self.save()
                if self._stop_signal is not None:
                    bar.close()
                    path = self.save()
                    dist_utils.barrier()
                    self._log(
                        f"stopped at iteration {self.iter}: saved "
                        f"{path or self.work_dir / 'last.pt'}; continue with --resume"
                    )
                    raise SystemExit(0 if self._stop_signal == signal.SIGTERM else 130)
                if done:
                    break
        bar.close()
        return self.metrics

    def _all_finite(self, loss: Tensor) -> bool:
        bad = torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0], device=self.device)
        if self.world_size > 1:
            torch.distributed.all_reduce(bad)
        return bad.item() == 0

    def _evaluate_and_record(
        self, train_means: dict[str, float], lr: float, elapsed: float
    ) -> None:
        self.model.eval()
        with nondeterministic_op_is_a_user_error(self.cfg.train.deterministic, TrainingError):
            metrics = self.task.evaluate(
                self.model, self.val_set, self.device, progress=self.progress
            )
        self.metrics = metrics
        value = float(metrics[self.task.metric])
        if not self.is_main:
            return
        self._log(self.task.report(metrics))
        row = {
            "iter": self.iter,
            "epoch": self.iter // self.iters_per_epoch,
            "lr": lr,
            **train_means,
        }
        row |= {f"val/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        row["time"] = round(elapsed, 1)
        self.results.row(row)
        self.results.scalars(
            {f"val/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, self.iter
        )
        write_text(
            self.work_dir / "metrics.json",
            json.dumps({"iter": self.iter, **metrics, **sample_counts(self.val_set)}, indent=2),
        )
        if math.isfinite(value) and (self.best_metric is None or value > self.best_metric):
            self.best_metric = value
            self.save("best.pt")
            self._log(
                f"new best {self.task.metric} {value:.4f} (fraction 0-1): saved "
                f"{self.work_dir / 'best.pt'}"
            )
