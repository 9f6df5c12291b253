"""What the tasks share: the evaluation path and progress bar, and the synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from densemnv3.config import Config
from densemnv3.engine import distributed as dist_utils

__all__ = ["ensure_synthetic", "eval_progress", "prepare_for_eval"]


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
    kwargs = dict(train=spec.train, val=spec.val, size=tuple(spec.size), seed=spec.seed)
    if dist_utils.is_main_process() and not synthetic_exists(root, **kwargs):
        print(f"generating the synthetic dataset at {root} (first use) ...", flush=True)
        make_synthetic(root, **kwargs)
    dist_utils.barrier()
