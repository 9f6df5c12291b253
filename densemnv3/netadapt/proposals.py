"""What a NetAdapt iteration proposes, and how each proposal is scored: every unit's widest
multiple of 8 that the lookup table predicts under the iteration's budget, a short fine-tune on
batches every proposal shares, the quick evaluation on the first validation images."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from densemnv3.config import Config
from densemnv3.engine.optim import build_optimizer
from densemnv3.errors import UserError
from densemnv3.models.backbones.base import FeatureBackbone
from densemnv3.models.prune import shrink_, width_units

__all__ = [
    "Batches",
    "Found",
    "cut_copy",
    "fine_tune",
    "first_images",
    "narrowest_proposals",
    "quick_metric",
    "quick_set",
    "table_proposals",
]

#: A proposal: (unit, new width, the cut model, its predicted latency in ms).
Found = tuple[Any, int, nn.Module, float]


class Batches:
    """The short fine-tunes' training batches: ``take(n)`` the next ``n``, in the loader's order
    (read in this process: a few batches an iteration, shared by every proposal)."""

    def __init__(self, task, cfg: Config, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(
            task.train_dataset(),
            batch_size=cfg.data.batch_size,
            shuffle=True,
            drop_last=True,
            collate_fn=task.collate,
            generator=generator,
        )
        self._it = iter(())

    def take(self, n: int) -> list:
        out = []
        while len(out) < n:
            batch = next(self._it, None)
            if batch is None:
                self._it = iter(self.loader)
                continue
            out.append(batch)
        return out


def fine_tune(
    model: nn.Module, task, cfg: Config, batches: list, device: torch.device
) -> nn.Module:
    """``len(batches)`` steps of ``cfg.optim`` at ``netadapt.lr_scale`` × its lr (constant)."""
    if not batches:
        return model
    tuned = copy.deepcopy(cfg)
    tuned.optim.lr *= cfg.netadapt.lr_scale
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = build_optimizer(model, tuned)
    for batch in batches:
        loss = sum(task.losses(model, batch, device).values())
        if not torch.isfinite(loss):
            raise UserError(f"the fine-tune's loss became {loss.item()}; lower netadapt.lr_scale")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.clip_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm)
        optimizer.step()
    return model.eval()


def quick_metric(model: nn.Module, task, dataset, device: torch.device) -> float:
    """``task.metric`` of ``model`` on ``dataset`` (a fraction), without a progress bar."""
    model.eval()
    return float(task.evaluate(model, dataset, device, progress=False)[task.metric])


def quick_set(task, count: int):
    """The quick evaluation's images: the first ``count`` of the validation split (all of it
    where ``count`` is 0 or not smaller than the split)."""
    val = task.val_dataset()
    return first_images(val, count) if 0 < count < len(val) else val


def first_images(dataset, count: int):
    """The first ``count`` images of ``dataset``: a COCO-style one (scored over its ``ids``) as a
    copy holding the first ``count`` ids, the multi-task split whole (its COCO ground truth is
    the split's), any other as a ``Subset``."""
    if hasattr(dataset, "ids"):
        quick = copy.copy(dataset)
        quick.ids = list(dataset.ids)[:count]
        return quick
    if hasattr(dataset, "coco"):  # the multi-task split: COCOeval over all of it
        return dataset
    return Subset(dataset, range(count))


def cut_copy(model: nn.Module, unit, width: int, importance: str) -> nn.Module:
    """``model`` with ``unit`` cut to ``width`` (:func:`~densemnv3.models.prune.shrink_`), made
    without copying ``model``: only the modules the cut changes (its unit's and squeeze's
    members, the backbones whose taps it refreshes) and those above them are copies, shallow
    ones; every other module and every weight is ``model``'s, which stays as it was. A bisection
    tries a few widths per unit, and copying the whole model for each cost most of an
    iteration's search; fine-tune a deep copy of the result."""
    units = width_units(model)
    paths = [path for path, _ in unit.members]
    if unit.squeeze is not None:
        paths += [path for path, _ in units[unit.squeeze].members]
    paths += [name for name, m in model.named_modules() if isinstance(m, FeatureBackbone)]
    root = _own(model)
    owned = {id(root)}
    for path in paths:
        parent = root
        for part in path.split(".") if path else ():
            child = parent._modules[part]
            if id(child) not in owned:
                child = parent._modules[part] = _own(child)
                owned.add(id(child))
            parent = child
    return shrink_(root, unit.name, width, importance=importance)


def _own(module: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` whose containers (submodules, parameters, buffers, taps) are
    its own: what a surgery sets on it leaves ``module`` as it was."""
    twin = copy.copy(module)
    for name, value in module.__dict__.items():
        if isinstance(value, dict):
            twin.__dict__[name] = copy.copy(value)
    return twin


def _largest_width(
    model: nn.Module,
    unit,
    now_ms: float,
    predict: Callable[[nn.Module], float],
    budget: float,
    importance: str,
) -> tuple[int, nn.Module, float] | None:
    """The widest multiple of 8 below ``unit``'s width whose model ``predict``s at or under
    ``budget`` (``model`` itself: ``now_ms``), assuming latency grows with width; None if not
    even 8 does. A unit's latency is close to linear in its width: after 8, the width where the
    line through the two ends meets the budget is tried, then its neighbour; bisection after
    that. Three trials where bisection alone takes seven."""
    tried: dict[int, tuple[nn.Module, float]] = {}

    def latency(w: int) -> float:
        if w not in tried:
            candidate = cut_copy(model, unit, w, importance)
            tried[w] = (candidate, predict(candidate))
        return tried[w][1]

    lo, hi, hi_ms, fitted = 8, unit.width, now_ms, True  # lo fits, hi does not
    if unit.width <= 8 or (lo_ms := latency(lo)) > budget:
        return None
    for step in itertools.count():
        top = (hi - 1) // 8 * 8  # the widest multiple of 8 below hi
        if top <= lo:
            break
        if step == 0 and hi_ms > lo_ms:
            guess = lo + int((budget - lo_ms) / (hi_ms - lo_ms) * (hi - lo)) // 8 * 8
        elif step == 1:
            guess = lo + 8 if fitted else top
        else:
            guess = (lo + top) // 2 // 8 * 8
        guess = min(max(guess, lo + 8), top)
        fitted = (ms := latency(guess)) <= budget
        if fitted:
            lo, lo_ms = guess, ms
        else:
            hi, hi_ms = guess, ms
    candidate, ms = tried[lo]
    return lo, copy.deepcopy(candidate), ms  # its own weights: the fine-tune changes them


def table_proposals(
    model: nn.Module,
    units: list,
    table,
    budget_ms: float,
    importance: str,
    *,
    desc: str = "proposals",
    progress: bool = True,
) -> list[Found]:
    """``(unit, width, cut model, predicted latency)`` for each of ``units`` that can be cut to a
    model the table predicts at or under ``budget_ms``: its widest such multiple of 8."""
    from tqdm import tqdm

    now, found = table.predict(model), []
    for unit in tqdm(units, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        best = _largest_width(model, unit, now, table.predict, budget_ms, importance)
        if best is not None:
            found.append((unit, *best))
    return found


def narrowest_proposals(model: nn.Module, units: list, table, importance: str) -> list[Found]:
    """``(unit, 8, cut model, predicted latency)`` for each of ``units`` whose cut to 8 channels
    the table predicts faster than ``model``."""
    now, found = table.predict(model), []
    for unit in units:
        candidate = cut_copy(model, unit, 8, importance)
        if (latency := table.predict(candidate)) < now:
            found.append((unit, 8, copy.deepcopy(candidate), latency))
    return found
