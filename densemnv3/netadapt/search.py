"""The NetAdapt search (Yang et al., ECCV 2018), with MobileNetV3's proposals (section 4.2).

Each iteration cuts the model's latency by ``step`` × the original's, as the lookup table
predicts it (:class:`~densemnv3.netadapt.latency.LatencyTable`):

1. every unit of the kinds asked for (:mod:`densemnv3.models.widths`: an expansion layer, the
   width of a residual chain, a head's width) proposes its widest multiple of 8 whose model the
   table predicts at or under the iteration's budget, keeping its most important channels;
2. each proposal is fine-tuned ``short_iters`` steps — every proposal on the same batches — and
   scored on the first ``eval_images`` validation images;
3. the proposal of best Δmetric / |Δlatency| is kept, and measured whole on the route: the
   table's prediction is printed beside the measurement, and where it is more than 10 % off,
   whole models are measured from then on (printed): the table still chooses each unit's width,
   and each proposal is measured whole once (a static export, 2-5 s) and scored on that.

Before the first iteration, the narrowest model (every unit at 8) is measured: a target under it
is refused at once.

It stops once the measured latency is at most ``target`` × the original's. The state after each
iteration (the kept model, every proposal, the latencies) is saved in the run folder, so a killed
run continues from its last finished iteration.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from densemnv3.config import Config
from densemnv3.engine.checkpoint import atomic_save
from densemnv3.engine.trainer import build_optimizer
from densemnv3.errors import UserError
from densemnv3.models.widths import shrink_, width_units, widths_of

__all__ = ["PREDICTION_TOLERANCE", "Proposal", "SearchState", "fine_tune", "quick_metric", "search"]

#: The table's prediction may be this far from a measurement before whole models are measured.
PREDICTION_TOLERANCE = 0.10
STATE_FILE = "search.pt"


@dataclass
class Proposal:
    """One proposal of one iteration, as ``netadapt.csv`` lists it."""

    iteration: int
    unit: str
    kind: str
    width: int
    new_width: int
    latency_ms: float  # predicted (or measured, once the table is not trusted)
    metric: float = math.nan  # after the short fine-tune, on the quick evaluation
    score: float = math.nan  # Δmetric / |Δlatency| (per ms)
    kept: bool = False


@dataclass
class SearchState:
    """What a run has done: saved after every iteration (with the kept model's weights)."""

    original_ms: float  # measured
    original_metric: float  # quick evaluation
    glue_ms: float
    iteration: int = 0
    latency_ms: float = 0.0  # the kept model's, measured
    predicted_ms: float = 0.0
    metric: float = math.nan
    widths: dict[str, int] = field(default_factory=dict)
    proposals: list[dict[str, Any]] = field(default_factory=list)
    path: list[dict[str, Any]] = field(default_factory=list)  # per iteration: latencies, metric
    measure_whole: bool = False  # the table was found off: proposals measured whole
    steps: int = 0  # fine-tuning steps the kept model has had
    seconds: float = 0.0
    done: bool = False


class Batches:
    """The short fine-tunes' training batches: ``take(n)`` the next ``n``, in the loader's order
    (read in this process: a few batches an iteration, shared by every proposal)."""

    def __init__(self, task, cfg: Config, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(task.train_dataset(), batch_size=cfg.data.batch_size, shuffle=True,
                                 drop_last=True, collate_fn=task.collate, generator=generator)
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


def fine_tune(model: nn.Module, task, cfg: Config, batches: list, device: torch.device) -> nn.Module:
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


def _largest_width(model: nn.Module, name: str, width: int, fits: Callable[[nn.Module], float | None],
                   importance: str) -> tuple[int, nn.Module, float] | None:
    """The widest multiple of 8 below ``width`` whose model ``fits`` (returns its latency, or None
    when over budget), by bisection (latency grows with width); None if not even 8 fits."""
    widths = list(range((width - 1) // 8 * 8, 7, -8))
    lo, hi, best = 0, len(widths) - 1, None
    while lo <= hi:  # widths[] falls: find the first index that fits
        mid = (lo + hi) // 2
        candidate = shrink_(copy.deepcopy(model), name, widths[mid], importance=importance)
        latency = fits(candidate)
        if latency is not None:
            best, hi = (widths[mid], candidate, latency), mid - 1
        else:
            lo = mid + 1
    return best


def table_proposals(model: nn.Module, units: list, table, budget_ms: float, importance: str, *,
                    desc: str = "proposals", progress: bool = True) -> list[tuple[Any, int, nn.Module, float]]:
    """``(unit, width, cut model, predicted latency)`` for each of ``units`` that can be cut to a
    model the table predicts at or under ``budget_ms``: its widest such multiple of 8."""
    from tqdm import tqdm

    def fits(candidate: nn.Module) -> float | None:
        latency = table.predict(candidate)
        return latency if latency <= budget_ms else None

    found = []
    for unit in tqdm(units, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        best = _largest_width(model, unit.name, unit.width, fits, importance)
        if best is not None:
            found.append((unit, *best))
    return found


def narrowest_proposals(model: nn.Module, units: list, table, importance: str) -> list[tuple[Any, int, nn.Module, float]]:
    """``(unit, 8, cut model, predicted latency)`` for each of ``units`` whose cut to 8 channels
    the table predicts faster than ``model``."""
    now, found = table.predict(model), []
    for unit in units:
        candidate = shrink_(copy.deepcopy(model), unit.name, 8, importance=importance)
        if (latency := table.predict(candidate)) < now:
            found.append((unit, 8, candidate, latency))
    return found


def search(model: nn.Module, task, cfg: Config, table, run_dir: Path, device: torch.device, *,
           state: SearchState | None = None, calibration=None, log: Callable[[str], None] = print,
           progress: bool = True) -> tuple[nn.Module, SearchState]:
    """Run (or continue, from ``state`` and the model saved with it) the search on ``model`` until
    its measured latency is at most ``cfg.netadapt.target`` × the original's."""
    from tqdm import tqdm

    n = cfg.netadapt
    val = task.val_dataset()
    quick = first_images(val, n.eval_images) if 0 < n.eval_images < len(val) else val
    model = model.to(device).eval()
    if state is None:
        predicted, measured = table.calibrate(model, calibration)
        state = SearchState(original_ms=measured, original_metric=quick_metric(model, task, quick, device),
                            glue_ms=table.glue_ms, latency_ms=measured, predicted_ms=predicted)
        state.metric = state.original_metric
        log(f"original: {measured:.1f} ms measured on {table.route} ({_describe(table)}), "
            f"{task.metric} {state.metric:.4f} on {len(quick)} val images (quick); "
            f"target {n.target:g}x = {n.target * measured:.1f} ms")
        _check_reachable(model, n, table, state.original_ms, calibration, log)
    else:
        table.glue_ms = state.glue_ms
    batches = Batches(task, cfg, seed=cfg.train.seed)
    for _ in range(state.iteration):  # a resumed run takes up the batches where it was
        batches.take(n.short_iters)
    goal = n.target * state.original_ms

    def measured_if_whole(proposals: list) -> list:
        """The table chose each width; after its fallback, a measurement scores each proposal
        (dropped if it is not faster than the current model)."""
        if not state.measure_whole:
            return proposals
        scored = [(unit, width, candidate, table.measure(candidate, calibration))
                  for unit, width, candidate, _ in proposals]
        return [p for p in scored if p[3] < current_ms]

    while state.latency_ms > goal:
        t0 = time.time()
        state.iteration += 1
        table_ms = table.predict(model)
        current_ms = state.latency_ms if state.measure_whole else table_ms
        goal_here = goal * (current_ms / state.latency_ms)  # the goal in the terms proposals are
        units = [u for u in width_units(model).values() if u.kind in n.kinds and u.width > 8]
        step, found = n.step, []
        while not found and step >= 0.01:  # where no unit alone cuts `step`, ask each for less
            # cut `step` of the original, or less where that passes the goal, but at least 1 % of it
            budget = min(max(current_ms - step * state.original_ms, goal_here), current_ms - 0.01 * state.original_ms)
            found = measured_if_whole(table_proposals(
                model, units, table, budget * table_ms / current_ms, n.importance,
                desc=f"iteration {state.iteration}: proposals", progress=progress))
            if not found:
                log(f"iteration {state.iteration}: no unit alone cuts {step:g}x the original latency; "
                    f"asking for {step / 2:g}x")
                step /= 2
        if not found:  # close to the floor, where every unit's cut is small: the largest each makes
            log(f"iteration {state.iteration}: every unit cut to 8 channels, where that cuts latency at all")
            found = measured_if_whole(narrowest_proposals(model, units, table, n.importance))
        if not found:
            raise UserError(f"no unit can be cut any more (at {state.latency_ms:.1f} ms, target {goal:.1f} "
                            f"ms): raise --target")
        shared = batches.take(n.short_iters)
        proposals, candidates = [], []
        for unit, width, candidate, latency in tqdm(found, desc=f"iteration {state.iteration}: fine-tune",
                                                    leave=False, disable=not progress, dynamic_ncols=True):
            fine_tune(candidate, task, cfg, shared, device)
            metric = quick_metric(candidate, task, quick, device)
            score = (metric - state.metric) / max(current_ms - latency, 1e-6)
            proposals.append(Proposal(state.iteration, unit.name, unit.kind, unit.width, width, latency, metric, score))
            candidates.append(candidate)
        best = max(range(len(proposals)), key=lambda i: (proposals[i].score, -i))
        proposals[best].kept = True
        model = candidates[best]
        measured = table.measure(model, calibration)
        predicted = table.predict(model)
        error = predicted / measured - 1
        if not state.measure_whole and abs(error) > PREDICTION_TOLERANCE:
            state.measure_whole = True
            log(f"the lookup table predicts {predicted:.1f} ms against {measured:.1f} ms measured "
                f"({error:+.0%}): measuring whole models from here on")
        kept = proposals[best]
        state.latency_ms, state.predicted_ms, state.metric = measured, predicted, kept.metric
        state.widths = widths_of(model)
        state.steps += n.short_iters
        state.seconds += time.time() - t0
        state.proposals += [asdict(p) for p in proposals]
        state.path.append({"iteration": state.iteration, "unit": kept.unit, "width": kept.width,
                           "new_width": kept.new_width, "predicted_ms": predicted, "measured_ms": measured,
                           "metric": kept.metric, "seconds": state.seconds})
        log(f"iteration {state.iteration}: kept {kept.unit} {kept.width}->{kept.new_width} ({kept.kind}) | "
            f"latency {predicted:.1f} ms predicted, {measured:.1f} measured ({error:+.1%}), "
            f"{measured / state.original_ms:.2f}x | {task.metric} {kept.metric:.4f} (quick) | "
            f"{len(proposals)} proposals, {time.time() - t0:.0f} s")
        save_state(run_dir, model, state, cfg)
    state.done = True
    save_state(run_dir, model, state, cfg)
    return model, state


def _check_reachable(model: nn.Module, n, table, original_ms: float, calibration, log: Callable[[str], None]) -> None:
    """Measure the narrowest model the search could reach (every unit of ``n.kinds`` at 8) and
    refuse a target under it: what no width reaches (per-node costs that do not shrink with
    channels, on a small network) is told in seconds, not after a search."""
    narrow = copy.deepcopy(model)
    for unit in width_units(model).values():
        if unit.kind in n.kinds and unit.width > 8:
            shrink_(narrow, unit.name, 8, importance=n.importance)
    floor = table.measure(narrow, calibration)
    if floor > n.target * original_ms:
        raise UserError(f"netadapt.target {n.target:g} is out of reach on {table.route}: with every width at 8 the "
                        f"model still takes {floor:.1f} ms, {floor / original_ms:.2f}x the original's "
                        f"{original_ms:.1f} ms; raise --target above {math.ceil(floor / original_ms * 100) / 100:g}, "
                        f"or measure at a larger --input-size")
    log(f"narrowest reachable: {floor:.1f} ms ({floor / original_ms:.2f}x), every width at 8")


def _describe(table) -> str:
    return f"{table.threads} threads, {table.size[0]}x{table.size[1]}"


def changed_widths(model: nn.Module, original: dict[str, int]) -> dict[str, int]:
    """The units of ``model`` whose width differs from ``original`` (unit -> width)."""
    return {name: w for name, w in widths_of(model).items() if w != original.get(name)}


def save_state(run_dir: Path, model: nn.Module, state: SearchState, cfg: Config) -> Path:
    """``search.pt``: a checkpoint of the kept model (it records its config, widths included, so
    every tool loads it) and the search's state."""
    shrunk = copy.deepcopy(cfg)
    shrunk.model.widths = changed_widths(model, state_original_widths(cfg)) or None
    shrunk.model.weights = shrunk.model.backbone_weights = None
    return atomic_save({"model": model.state_dict(), "config": asdict(shrunk), "arch": cfg.model.name,
                        "netadapt": asdict(state)}, run_dir / STATE_FILE,
                       hint="free some space, then continue with --resume")


def state_original_widths(cfg: Config) -> dict[str, int]:
    """The widths of the model ``cfg`` builds before any NetAdapt (``model.widths`` left out)."""
    from densemnv3.models import build_model

    plain = copy.deepcopy(cfg.model)
    plain.widths = plain.weights = plain.backbone_weights = None
    return widths_of(build_model(plain))


def load_state(path: Path) -> tuple[dict, SearchState]:
    """The checkpoint and :class:`SearchState` of ``search.pt``."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint, SearchState(**checkpoint["netadapt"])

