"""The segmentation loss: pixel cross entropy with an ignore label, deterministic on CUDA too,
optionally over the hard pixels only (OHEM).

:func:`segmentation_loss` picks the loss a config's ``loss`` section names; the segmentation task
and the multi-task model's training forward call what it returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from densemnv3.config import LossConfig
from densemnv3.data.labels import IGNORE_INDEX
from densemnv3.errors import ConfigError

from .resize import deterministic_cuda

__all__ = [
    "cross_entropy_2d",
    "deterministic_cross_entropy",
    "ohem_cross_entropy",
    "segmentation_loss",
]

SegmentationLoss = Callable[[Tensor, Tensor], Tensor]


def segmentation_loss(cfg: LossConfig) -> SegmentationLoss:
    """``loss(logits, target)`` as ``cfg`` asks: :func:`ohem_cross_entropy` when
    ``cfg.ohem_thresh`` is set, else :func:`cross_entropy_2d`."""
    if cfg.ohem_thresh is None:
        return cross_entropy_2d
    if not 0.0 < cfg.ohem_thresh <= 1.0:
        raise ConfigError(
            f"config key 'loss.ohem_thresh': expected a probability in (0, 1] (0.7 is "
            f"mmsegmentation's), or None for plain cross entropy; got {cfg.ohem_thresh!r}"
        )
    if cfg.ohem_min_kept < 0:
        raise ConfigError(
            f"config key 'loss.ohem_min_kept': expected a pixel count >= 0, "
            f"got {cfg.ohem_min_kept!r}"
        )
    return partial(ohem_cross_entropy, thresh=cfg.ohem_thresh, min_kept=cfg.ohem_min_kept)


def cross_entropy_2d(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``F.cross_entropy(logits, target, ignore_index=ignore_index)``, switching to
    :func:`deterministic_cross_entropy` on CUDA under deterministic algorithms (where CUDA's
    ``nll_loss2d``, which sums with atomics, refuses to run)."""
    if deterministic_cuda(logits):
        return deterministic_cross_entropy(logits, target, ignore_index)
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def deterministic_cross_entropy(
    logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Mean cross entropy over the pixels whose target is not ``ignore_index``, from each pixel's
    gathered target log-probability (fp32): the value of ``F.cross_entropy`` with
    ``ignore_index``, with a deterministic reduction and a gather whose CUDA backward has a
    deterministic path."""
    return _deterministic_nll(F.log_softmax(logits.float(), dim=1), target, ignore_index)


def _deterministic_nll(log_probs: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    valid = target != ignore_index
    return -torch.where(valid, _target_log_probs(log_probs, target, valid), 0.0).sum() / valid.sum()


def _target_log_probs(log_probs: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Each pixel's log-probability of its target class (of class 0 where ``valid`` is False)."""
    return log_probs.gather(1, torch.where(valid, target, 0).unsqueeze(1)).squeeze(1)


def ohem_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    thresh: float,
    min_kept: int,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Cross entropy averaged over the batch's hard pixels only: online hard example mining as
    mmsegmentation's ``OHEMPixelSampler`` does it. A pixel is hard when the probability the model
    gives its target class is below ``thresh``; when fewer than ``min_kept`` pixels are, the
    ``min_kept`` pixels of lowest probability count instead (every valid pixel when there are
    fewer). ``ignore_index`` pixels never count. In fp32; the pixels left out are set to
    ``ignore_index`` and the loss is the plain one on the rest, so it costs one gather more than
    :func:`cross_entropy_2d`, and it is deterministic on CUDA where that is."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    with torch.no_grad():
        valid = target != ignore_index
        # the target-class loss of each pixel; ignored pixels rank below every valid one
        ranked = (-_target_log_probs(log_probs, target, valid)).masked_fill(~valid, -1.0)
        keep = ranked > -math.log(thresh)
        least = min(min_kept, int(valid.sum())) if min_kept else 0
        if int(keep.sum()) < least:  # the least-th largest: topk on CUDA (kthvalue is not
            ranked = ranked.flatten()  # deterministic there), kthvalue on CPU (much faster)
            bar = (
                ranked.topk(least).values[-1]
                if ranked.is_cuda
                else ranked.kthvalue(ranked.numel() - least + 1).values
            )
            keep = (ranked >= bar).view_as(target)
        kept_target = torch.where(keep, target, ignore_index)
    if deterministic_cuda(logits):
        return _deterministic_nll(log_probs, kept_target, ignore_index)
    return F.nll_loss(log_probs, kept_target, ignore_index=ignore_index)
