"""What the tasks share: the evaluation path and progress bar, and the synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from densemnv3.config import Config
from densemnv3.engine import distributed as dist_utils
from densemnv3.models import build_model

__all__ = ["TaskBase", "ensure_synthetic", "eval_progress", "prepare_for_eval"]


class TaskBase:
    """What every task does alike: the config's model, its two splits, a batch's images on the
    device in the memory format training uses."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def build_model(self) -> nn.Module:
        return build_model(self.cfg.model)

    def dataset(self, split: str, *, train: bool) -> Dataset:
        raise NotImplementedError

    def train_dataset(self) -> Dataset:
        return self.dataset(self.cfg.data.train_split, train=True)

    def val_dataset(self) -> Dataset:
        return self.dataset(self.cfg.data.val_split, train=False)

    def images_on(self, images: Tensor, device: torch.device) -> Tensor:
        images = images.to(device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


def prepare_for_eval(model: nn.Module, cfg: Config) -> torch.memory_format:
    """Put ``model`` in eval mode and in the memory format training uses (``train.channels_last``),
    and return that format for the inputs: the eval tools and the evaluation inside training take
    the same path, so the same checkpoint gives the same metrics in both."""
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.eval().to(memory_format=memory_format)
    return memory_format


def eval_progress(iterable, progress: bool):
    """The evaluation's progress bar: shown on a terminal only, erased when it ends or its
    loader fails (so an error line starts at the beginning of a line)."""
    from tqdm import tqdm

    return tqdm(
        iterable, desc="eval", disable=None if progress else True, dynamic_ncols=True, leave=False
    )


def ensure_synthetic(cfg: Config) -> None:
    """Generate the synthetic set at ``data.root`` on first use (rank 0; the others wait). Only
    the tools that train or calibrate call it; evaluation reads the data that is there."""
    spec = cfg.data.synthetic
    if spec is None:
        return
    from densemnv3.data.synthetic import make_synthetic, synthetic_exists

    root = Path(cfg.data.root)
    kwargs = dict(
        train=spec.train,
        val=spec.val,
        size=tuple(spec.size),
        seed=spec.seed,
        format=cfg.data.format or "cityscapes",
    )
    if dist_utils.is_main_process() and not synthetic_exists(root, **kwargs):
        print(f"generating the synthetic dataset at {root} (first use) ...", flush=True)
        make_synthetic(root, **kwargs)
    dist_utils.barrier()
