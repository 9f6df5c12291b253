"""The optimizer and learning-rate schedule a config describes."""

from __future__ import annotations

import math

import torch
from torch import nn

from densemnv3.config import Config
from densemnv3.errors import UserError

__all__ = ["NORM_LAYERS", "build_optimizer", "lr_factor"]


#: Layers whose weights get ``optim.norm_weight_decay`` (torchvision's references test for the
#: private ``_NormBase``; these are its public subclasses plus the other norms).
NORM_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
)


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """SGD or AdamW (``optim.name``); norm layers and biases get ``optim.norm_weight_decay`` when
    it is set."""
    o = cfg.optim
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_norm = isinstance(module, NORM_LAYERS)
            (
                no_decay
                if (is_norm or name == "bias") and o.norm_weight_decay is not None
                else decay
            ).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": o.norm_weight_decay})
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=(o.momentum, 0.999))
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


def lr_factor(it: int, total: int, cfg: Config) -> float:
    """Multiplier of ``optim.lr`` at iteration ``it``: linear warmup, then poly or cosine."""
    s = cfg.schedule
    progress = min(it / max(total, 1), 1.0)
    if s.policy == "poly":
        factor = (1.0 - progress) ** s.power
    elif s.policy == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise UserError(f"schedule.policy must be 'poly' or 'cosine', got {s.policy!r}")
    floor = s.min_lr / cfg.optim.lr if cfg.optim.lr else 0.0
    factor = floor + (1.0 - floor) * factor
    if it < s.warmup_iters:
        alpha = it / s.warmup_iters
        factor *= s.warmup_factor * (1 - alpha) + alpha
    return factor
