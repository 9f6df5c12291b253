"""A seeded, shardable, resumable batch order, and per-sample augmentation seeds.

Every sample's augmentation is seeded from (run seed, epoch, position), so a run resumed at any
iteration sees exactly the batches and augmentations an uninterrupted run would — whatever the
number of loader workers.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields batches of ``(index, sample_seed)``: a permutation per epoch, sharded by rank.

    ``set_epoch(epoch, start_batch)`` picks the epoch and how many of its batches to skip.
    Incomplete last batches are dropped so every rank takes the same number of steps.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if size < batch_size * world_size:
            raise ValueError(
                f"the dataset has {size} samples, fewer than one batch "
                f"({batch_size} x {world_size} processes); lower data.batch_size"
            )
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.size // self.world_size // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**31 - 1, (self.size,), generator=g)
        mine = order[self.rank :: self.world_size][: len(self) * self.batch_size]
        mine_seeds = seeds[self.rank :: self.world_size]
        for b in range(self.start_batch, len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield list(zip(mine[sl].tolist(), mine_seeds[sl].tolist()))


class SeededDataset(Dataset):
    """Wraps a dataset so that ``ds[(index, seed)]`` seeds every RNG an augmentation may use."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        random.seed(seed)
        np.random.seed(seed)
        # the CPU generator only: torch.manual_seed also queues a seed for every lazily
        # initialised accelerator (CUDA, XPU, MTIA), formatting a stack trace each time, a cost
        # per sample that shows in a CPU training step; augmentation runs on the CPU
        torch.default_generator.manual_seed(seed)
        transform = getattr(self.dataset, "transform", None)
        if hasattr(transform, "set_random_seed"):
            transform.set_random_seed(seed)
        return self.dataset[index]


def shard_indices(size: int, rank: int, world_size: int) -> list[int]:
    """Evaluation shard: every index exactly once across ranks (no padding)."""
    return list(range(rank, size, world_size))


def train_loader(
    dataset: Dataset, batch_sampler: Sampler, workers: int, collate: Callable, *, pin_memory: bool
) -> DataLoader:
    """The training loader over ``dataset`` (each sample seeded, :class:`SeededDataset`); its
    workers persist across epochs and ignore Ctrl-C, which the main process handles."""
    if workers > 0:
        # Parallelism comes from the workers: OpenCV's own threads would only contend. Set
        # before the workers fork: a forked worker that resizes OpenCV's pool deadlocks when
        # this process has used the pool (e.g. checking files up front).
        import cv2

        cv2.setNumThreads(1)
    return DataLoader(
        SeededDataset(dataset),
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=_ignore_sigint,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C is handled by the main process, which saves a checkpoint and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
