"""The NetAdapt search (Yang et al., ECCV 2018), with MobileNetV3's proposals (section 4.2).

Each iteration asks for a cut of ``step`` × the original's latency, as the lookup table
predicts it (:class:`~densemnv3.netadapt.latency.LatencyTable`, :mod:`.proposals`), scaled by
how far the table's predictions of the kept steps fell from their measurements:

1. every unit of the kinds asked for (:mod:`densemnv3.models.prune`: an expansion layer, the
   width of a residual chain, a head's width) proposes its widest multiple of 8 whose model the
   table predicts at or under the iteration's budget, keeping its most important channels;
2. each proposal is fine-tuned ``short_iters`` steps — every proposal on the same batches — and
   scored on the first ``eval_images`` validation images;
3. the proposals are tried by Δmetric / |Δlatency|, best first: each is measured side by side
   with the model it would replace and with the original (:mod:`.measure`), and the first that
   runs faster than the model it would replace is kept. One that runs slower is not kept, and
   the log says so.

Where none of the :data:`TRIES` best runs faster, the iteration keeps nothing; the next asks
for twice the cut and measures every proposal side by side before its fine-tune (those not
faster are dropped). After :data:`MISSES` such iterations in a row the search stops and says
why, its state saved.

Before the first iteration, the narrowest model (every unit at 8) is measured beside the
original: a target under it is refused at once. The search stops once the kept model runs at
most ``target`` × the original's time, measured side by side. The state after each iteration
(the kept model, every proposal, each kept step's ratios) is saved in the run folder, so a
killed run continues from its last finished iteration.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from densemnv3.config import Config
from densemnv3.errors import UserError
from densemnv3.models.prune import shrink_, width_units, widths_of

from .context import RunContext
from .measure import SIDE_ROUNDS, Judge, Verdict
from .proposals import (
    Batches,
    Found,
    fine_tune,
    narrowest_proposals,
    quick_metric,
    quick_set,
    table_proposals,
)
from .state import STATE_FILE, SearchState, save_state

__all__ = ["MISSES", "TRIES", "Proposal", "SearchState", "search"]

#: Proposals measured per iteration, best score first, until one runs faster.
TRIES = 3
#: Iterations in a row that keep nothing before the search stops.
MISSES = 2
#: The smallest cut an iteration asks for, as a fraction of the original's latency.
MIN_CUT = 0.01


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
    step_ratio: float = math.nan  # measured side by side: its time over the current model's
    ratio: float = math.nan  # ... and over the original's


def search(
    model: nn.Module,
    run: RunContext,
    *,
    state: SearchState | None = None,
    current: nn.Module | None = None,
) -> tuple[nn.Module, SearchState]:
    """Run the search on the original ``model`` (or continue it from ``state`` and ``current``,
    the model saved with it) until the kept model runs at most ``cfg.netadapt.target`` × the
    original's time, side by side."""
    cfg, task, table, run_dir = run.cfg, run.task, run.table, run.run_dir
    device, n, calibration, log = torch.device(run.device), cfg.netadapt, run.calibration, run.log
    quick = quick_set(task, n.eval_images)
    original = model.to(device).eval()
    if state is None:
        predicted, measured = table.calibrate(original, calibration)
        state = SearchState(
            original_ms=measured,
            glue_ms=table.glue_ms,
            latency_ms=measured,
            original_metric=quick_metric(original, task, quick, device),
            predicted_ms=predicted,
        )
        state.metric = state.original_metric
        log(
            f"original: {measured:.1f} ms measured on {table.route} ({_describe(table)}), "
            f"{task.metric} {state.metric:.4f} on {len(quick)} val images (quick); "
            f"target {n.target:g}x, judged side by side with the original"
        )
        judge = Judge(table, original, calibration)
        _check_reachable(original, n, table, judge, log)
        model = original
    else:
        table.glue_ms = state.glue_ms
        model = (current if current is not None else original).to(device).eval()
        judge = Judge(table, original, calibration, current=model)
        if state.stopped:
            log(f"continuing a search that stopped: {state.stopped}")
            state.stopped, state.misses, state.cut_scale = "", 0, 1.0
    batches = Batches(task, cfg, seed=cfg.train.seed)
    for _ in range(state.iteration):  # a resumed run takes up the batches where it was
        batches.take(n.short_iters)
    c = _Context(
        task, cfg, table, judge, batches, quick, device, table.predict(original), log, run.progress
    )
    while state.ratio > n.target or not _confirmed(state, c):
        model = _iteration(model, state, c)
        save_state(run_dir, model, state, cfg)
        if state.misses >= MISSES:
            last = state.cut_scale / 2 * n.step
            state.stopped = (
                f"no proposal ran faster than the model it would replace in {MISSES} "
                f"iterations in a row (cuts up to {last:g}x the original), measured "
                f"side by side on {table.route}"
            )
            save_state(run_dir, model, state, cfg)
            raise UserError(
                f"the search stopped at {state.ratio:.2f}x the original, short of the "
                f"target {n.target:g}x: {state.stopped}; the machine may be too busy "
                f"to tell the cuts apart, or no width moves this network's time; "
                f"{run_dir / STATE_FILE} holds the model reached: --resume to try "
                f"again, or --resume --target {math.ceil(state.ratio * 100) / 100:g} "
                f"--work-dir {run_dir} to fine-tune it"
            )
    state.done = True
    save_state(run_dir, model, state, cfg)
    return model, state


@dataclass
class _Context:
    """What every iteration of one search uses."""

    task: Any
    cfg: Config
    table: Any
    judge: Judge
    batches: Batches
    quick: Any
    device: torch.device
    original_table_ms: float  # the table's prediction of the original
    log: Callable[[str], None]
    progress: bool


def _iteration(model: nn.Module, state: SearchState, c: _Context) -> nn.Module:
    """One iteration: propose, (measure,) fine-tune, score, measure side by side, keep or not;
    returns the model kept (``model`` where none ran faster)."""
    from tqdm import tqdm

    n, clock = c.cfg.netadapt, [time.time()]
    seconds = {"find": 0.0, "fine-tune": 0.0, "measure": 0.0}

    def lap(phase: str) -> None:
        seconds[phase] += time.time() - clock[-1]
        clock.append(time.time())

    state.iteration += 1
    it = state.iteration
    # after an iteration whose best proposals all ran slower, the table's choice is not trusted
    state.measure_whole = state.misses > 0
    found = _proposals(model, state, c)
    lap("find")
    verdicts: list[Verdict | None] = [None] * len(found)
    proposals = [
        Proposal(it, unit.name, unit.kind, unit.width, width, latency)
        for unit, width, _, latency in found
    ]
    if state.measure_whole:  # measured before the fine-tune: one that is not faster is dropped
        for i, (_, _, candidate, _) in enumerate(found):
            verdicts[i] = v = c.judge.judge(candidate)
            proposals[i].step_ratio, proposals[i].ratio = v.step, v.total
            proposals[i].latency_ms = state.latency_ms * v.step
        lap("measure")
    now_ms = state.latency_ms if state.measure_whole else c.table.predict(model)
    shared = c.batches.take(n.short_iters)
    live = [i for i, v in enumerate(verdicts) if v is None or v.step < 1]
    for i in tqdm(
        live,
        desc=f"iteration {it}: fine-tune",
        leave=False,
        disable=not c.progress,
        dynamic_ncols=True,
    ):
        candidate, p = found[i][2], proposals[i]
        fine_tune(candidate, c.task, c.cfg, shared, c.device)
        p.metric = quick_metric(candidate, c.task, c.quick, c.device)
        p.score = (p.metric - state.metric) / max(now_ms - p.latency_ms, 1e-6)
    lap("fine-tune")
    kept = None
    for i in sorted(live, key=lambda i: (-proposals[i].score, i))[:TRIES]:
        p = proposals[i]
        if verdicts[i] is None:
            verdicts[i] = c.judge.judge(found[i][2])
            p.step_ratio, p.ratio = verdicts[i].step, verdicts[i].total
        if verdicts[i].step < 1:
            kept = i
            break
        c.log(
            f"iteration {it}: {p.unit} {p.width}->{p.new_width} not kept: it measured "
            f"{p.step_ratio:.3f}x the time of the model it would replace, side by side"
        )
    lap("measure")
    if kept is not None:
        proposals[kept].kept = True
    state.proposals += [asdict(p) for p in proposals]
    state.seconds += time.time() - clock[0]
    spent = ", ".join(f"{phase} {s:.0f} s" for phase, s in seconds.items())
    if kept is None:
        _missed(state, proposals, c, spent)
        return model
    return _keep(
        found[kept][2],
        proposals[kept],
        verdicts[kept],
        state,
        c,
        f"{len(found)} proposals ({spent})",
    )


def _missed(state: SearchState, proposals: list[Proposal], c: _Context, spent: str) -> None:
    """Record an iteration that kept nothing: the next asks for twice the cut, every proposal
    measured side by side before its fine-tune (the table's choices did not hold)."""
    n = c.cfg.netadapt
    state.misses += 1
    state.cut_scale *= 2
    tried = sorted(p.step_ratio for p in proposals if not math.isnan(p.step_ratio))
    then = ""
    if state.misses < MISSES:
        then = (
            f"; the next iteration asks for {state.cut_scale * n.step:g}x and measures every "
            f"proposal side by side before its fine-tune"
        )
    c.log(
        f"iteration {state.iteration}: nothing kept: none of the {len(tried)} proposals measured "
        f"ran faster than the current model side by side (best {tried[0]:.3f}x){then} "
        f"| {spent}"
    )


def _proposals(model: nn.Module, state: SearchState, c: _Context) -> list[Found]:
    """The iteration's proposals: each unit's widest width under the budget in the table's
    terms (the cut asked for halved where no unit alone makes it), else each unit at 8.

    The cut is ``step`` (× ``cut_scale``) of the original's time as measured. The table asks
    for it as a fraction of the original's layers, the table's own scale (its glue, an absolute
    time measured once, drifts with the load), times the measured fraction the kept steps gained
    per fraction of the layers the table predicted them to cut; until the steps add up to enough
    to tell, the layers' share of the original's time stands in for that."""
    n, it = c.cfg.netadapt, state.iteration
    units = [u for u in width_units(model).values() if u.kind in n.kinds and u.width > 8]
    table_ms = c.table.predict(model)
    layers_ms = max(c.original_table_ms - c.table.glue_ms, 0.1 * c.original_table_ms)
    predicted_cut = (c.original_table_ms - table_ms) / layers_ms  # so far, of the layers
    if predicted_cut >= 2 * n.step:
        gain = min(max((1 - state.ratio) / predicted_cut, 0.25), 2.0)
    else:
        gain = min(max(layers_ms / c.original_table_ms, 0.5), 1.0)
    # the iteration's cut, or what is left to the target (and a little more) where that is less
    cut = min(n.step * state.cut_scale, state.ratio - n.target + MIN_CUT)
    found: list = []
    while not found and cut >= MIN_CUT:
        budget = table_ms - cut / gain * layers_ms
        found = table_proposals(
            model,
            units,
            c.table,
            budget,
            n.importance,
            desc=f"iteration {it}: proposals",
            progress=c.progress,
        )
        if not found:
            c.log(
                f"iteration {it}: no unit alone cuts {cut:g}x the original latency; asking "
                f"for {cut / 2:g}x"
            )
            cut /= 2
    if not found:  # close to the floor, where every unit's cut is small: the largest each makes
        c.log(f"iteration {it}: every unit cut to 8 channels, where that cuts latency at all")
        found = narrowest_proposals(model, units, c.table, n.importance)
    if not found:
        raise UserError(
            f"no unit can be cut any more (at {state.ratio:.2f}x the original, target "
            f"{n.target:g}x): raise --target"
        )
    return found


def _keep(
    model: nn.Module, kept: Proposal, verdict: Verdict, state: SearchState, c: _Context, spent: str
) -> nn.Module:
    """Make ``model`` the current one and record its step."""
    c.judge.keep(verdict)
    predicted = c.table.predict(model)
    state.ratio, state.latency_ms = verdict.total, state.original_ms * verdict.total
    state.predicted_ms, state.metric, state.widths = predicted, kept.metric, widths_of(model)
    state.misses, state.cut_scale = 0, 1.0
    state.steps += c.cfg.netadapt.short_iters
    state.path.append(
        {
            "iteration": state.iteration,
            "unit": kept.unit,
            "width": kept.width,
            "new_width": kept.new_width,
            "predicted_ms": predicted,
            "measured_ms": state.latency_ms,
            "step_ratio": verdict.step,
            "ratio": verdict.total,
            "ms": verdict.ms,
            "metric": kept.metric,
            "seconds": state.seconds,
        }
    )
    # a kept step is under 1: four digits where three would round it to 1.000
    step = f"{verdict.step:.3f}" if round(verdict.step, 3) < 1 else f"{verdict.step:.4f}"
    c.log(
        f"iteration {state.iteration}: kept {kept.unit} {kept.width}->{kept.new_width} "
        f"({kept.kind}) | side by side: {step}x the previous model, "
        f"{verdict.total:.3f}x the original (table: {predicted / c.original_table_ms:.3f}x) | "
        f"{c.task.metric} {kept.metric:.4f} (quick) | {spent}"
    )
    return model


def _confirmed(state: SearchState, c: _Context) -> bool:
    """Whether the kept model, measured beside the original once more over twice the rounds,
    still runs at most ``target`` × its time (the ratio recorded either way)."""
    target, ratio = c.cfg.netadapt.target, c.judge.confirm()
    state.ratio, state.latency_ms = ratio, state.original_ms * ratio
    if state.path:
        state.path[-1]["confirmed_ratio"] = ratio
    c.log(
        f"the kept model runs {ratio:.3f}x the original's time, side by side over "
        f"{2 * SIDE_ROUNDS} rounds: "
        + ("the target is reached" if ratio <= target else f"over the target {target:g}x, going on")
    )
    return ratio <= target


def _check_reachable(model: nn.Module, n, table, judge: Judge, log: Callable[[str], None]) -> None:
    """Measure the narrowest model the search could reach (every unit of ``n.kinds`` at 8) beside
    the original and refuse a target under it: what no width reaches (per-node costs that do not
    shrink with channels, on a small network) is told in seconds, not after a search."""
    narrow = copy.deepcopy(model)
    for unit in width_units(model).values():
        if unit.kind in n.kinds and unit.width > 8:
            shrink_(narrow, unit.name, 8, importance=n.importance)
    floor = judge.judge(narrow).total
    if floor > n.target:
        above = math.ceil(floor * 100) / 100
        raise UserError(
            f"netadapt.target {n.target:g} is out of reach on {table.route}: with "
            f"every width at 8 the model still takes {floor:.2f}x the original's "
            f"time (side by side); raise --target above {above:g}, or measure at a "
            f"larger --input-size"
        )
    log(f"narrowest reachable: {floor:.2f}x the original, every width at 8 (side by side)")


def _describe(table) -> str:
    return f"{table.threads} threads, {table.size[0]}x{table.size[1]}"
