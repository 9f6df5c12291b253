"""The segmentation loss: pixel cross entropy with an ignore label, deterministic on CUDA too.

Used by the segmentation task and inside the multi-task model's training forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from densemnv3.data.labels import IGNORE_INDEX

from .resize import deterministic_cuda

__all__ = ["cross_entropy_2d", "deterministic_cross_entropy"]


def cross_entropy_2d(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``F.cross_entropy(logits, target, ignore_index=ignore_index)``, switching to
    :func:`deterministic_cross_entropy` on CUDA under deterministic algorithms (where CUDA's
    ``nll_loss2d``, which sums with atomics, refuses to run)."""
    if deterministic_cuda(logits):
        return deterministic_cross_entropy(logits, target, ignore_index)
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def deterministic_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean cross entropy over the pixels whose target is not ``ignore_index``, from each pixel's
    gathered target log-probability (fp32): the value of ``F.cross_entropy`` with
    ``ignore_index``, with a deterministic reduction and a gather whose CUDA backward has a
    deterministic path."""
    valid = target != ignore_index
    log_probs = F.log_softmax(logits.float(), dim=1)
    picked = log_probs.gather(1, torch.where(valid, target, 0).unsqueeze(1)).squeeze(1)
    return -torch.where(valid, picked, 0.0).sum() / valid.sum()
