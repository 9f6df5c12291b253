"""A NetAdapt run in its folder: the search, the long fine-tune, the uniform baseline, the report.

Layout of ``RUN_DIR``::

    search.pt        the kept model and the search's state, after every iteration (--resume)
    finetune/        the long fine-tune (a training run: best.pt is the result)
    uniform/         the uniform baseline's fine-tune (--uniform)
    netadapt.csv     every proposal of every iteration
    pareto.png       latency against the metric: proposals, kept path, results
    summary.json     the final table's figures
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densemnv3.config import Config
from densemnv3.errors import UserError
from densemnv3.load import load_model
from densemnv3.models.prune import shrink_, width_units, widths_of
from densemnv3.utils.files import write_text

from .context import RunContext
from .measure import SIDE_ROUNDS
from .report import format_table, plot_pareto, write_csv
from .search import search
from .state import STATE_FILE, load_state

__all__ = ["finish", "fine_tune_long", "run_netadapt", "run_uniform", "uniform_widths"]

SUMMARY = "summary.json"
#: The uniform baseline's latency may exceed NetAdapt's by this factor (measurement noise).
SLACK = 1.03


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fine_tune_long(
    cfg: Config,
    weights: Path,
    widths: dict[str, int] | None,
    steps: int,
    work_dir: Path,
    device: str,
    *,
    resume: bool,
    progress: bool,
) -> Path:
    """``steps`` of training (``optim`` at ``netadapt.lr_scale`` × its lr, the config's policy)
    from ``weights`` with ``widths``, as a training run in ``work_dir``; returns its ``best.pt``."""
    from densemnv3.engine.trainer import Trainer
    from densemnv3.tasks import build_task

    tuned = copy.deepcopy(cfg)
    tuned.model.widths = widths or None
    tuned.model.weights, tuned.model.backbone_weights = str(weights), None
    tuned.optim.lr *= cfg.netadapt.lr_scale
    tuned.schedule.iters, tuned.schedule.epochs = max(steps, 1), None
    tuned.schedule.warmup_iters = min(cfg.schedule.warmup_iters, steps // 10)
    tuned.train.eval_interval = max(steps, 1)
    tuned.train.checkpoint_interval = max(steps // 4, 1)
    tuned.work_dir = str(work_dir)
    last = work_dir / "last.pt"
    trainer = Trainer(
        tuned,
        build_task(tuned),
        device=device,
        resume=last if resume and last.is_file() else None,
        progress=progress,
    )
    trainer.fit()
    return _result_of(work_dir)


def _result_of(work_dir: Path) -> Path:
    """A fine-tune's result: its ``best.pt``, or its ``last.pt`` where it kept no best."""
    return work_dir / "best.pt" if (work_dir / "best.pt").is_file() else work_dir / "last.pt"


def run_netadapt(model: nn.Module, run: RunContext, *, resume: bool) -> Path:
    """The search (continued from ``search.pt`` with ``resume``) then the long fine-tune; returns
    the fine-tuned checkpoint."""
    cfg, run_dir, log = run.cfg, run.run_dir, run.log
    state_path = run_dir / STATE_FILE
    state, current = None, None
    if state_path.is_file():
        if not resume:
            raise UserError(
                f"{run_dir} holds a NetAdapt run ({STATE_FILE}); continue it with "
                f"--resume, or choose another --work-dir"
            )
        _, state = load_state(state_path)
        current = load_model(None, state_path).model
        log(
            f"resuming {run_dir} after iteration {state.iteration} ({state.ratio:.2f}x the "
            f"original, side by side)"
        )
    if state is None or not state.done:
        model, state = search(model, run, state=state, current=current)
    write_csv(run_dir / "netadapt.csv", state.proposals)
    widths = load_model(None, state_path).cfg.model.widths
    if resume and _finished(run_dir / "finetune", cfg.netadapt.long_iters):
        return run_dir / "finetune" / "best.pt"
    log(f"long fine-tune: {cfg.netadapt.long_iters} steps in {run_dir / 'finetune'}")
    return fine_tune_long(
        cfg,
        state_path,
        widths,
        cfg.netadapt.long_iters,
        run_dir / "finetune",
        run.device,
        resume=resume,
        progress=run.progress,
    )


def _finished(work_dir: Path, steps: int) -> bool:
    """Whether the fine-tune in ``work_dir`` ran its ``steps`` (its ``best.pt`` is the result)."""
    last = work_dir / "last.pt"
    if not (last.is_file() and (work_dir / "best.pt").is_file()):
        return False
    return int(torch.load(last, map_location="cpu", weights_only=True).get("iter", 0)) >= steps


def uniform_widths(model: nn.Module, factor: float, kinds) -> dict[str, int]:
    """Every unit of ``kinds`` at ``factor`` × its width, to a multiple of 8 (at least 8)."""
    return {
        u.name: max(8, int(round(u.width * factor / 8)) * 8)
        for u in width_units(model).values()
        if u.kind in kinds
    }


def _shrunk(model: nn.Module, widths: dict[str, int], importance: str) -> nn.Module:
    model = copy.deepcopy(model)
    for name, width in widths.items():
        if width < widths_of(model)[name]:
            shrink_(model, name, width, importance=importance)
    return model


def _uniform_factor(model: nn.Module, table, aim: float, kinds, importance: str) -> float:
    """The largest factor (to 0.1 %) whose uniform model the table predicts at or under ``aim``."""
    lo, hi = 0.05, 1.0
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        if table.predict(_shrunk(model, uniform_widths(model, mid, kinds), importance)) <= aim:
            lo = mid
        else:
            hi = mid
    return lo


def run_uniform(model: nn.Module, run: RunContext, *, resume: bool) -> Path:
    """The uniform baseline: ``model`` with every prunable width scaled by the one factor that
    reaches the NetAdapt result's latency, fine-tuned as many steps as the NetAdapt model had
    (its short fine-tunes and its long one); returns its checkpoint. The factor is chosen on the
    table, whose goal each trial's ratio to the NetAdapt model, measured side by side, rescales
    (up to 4 trials); of those, the widest within :data:`SLACK` of NetAdapt's time is kept."""
    cfg, table, run_dir, calibration = run.cfg, run.table, run.run_dir, run.calibration
    summary = _read_summary(run_dir)
    netadapt = next((r for r in summary.get("rows", []) if r["name"] == "NetAdapt"), None)
    if netadapt is None:
        raise UserError(
            f"{run_dir}: no finished NetAdapt run to compare with; run "
            f"tools/netadapt.py without --uniform first"
        )
    steps = int(netadapt.get("steps", cfg.netadapt.long_iters))
    if resume and _finished(run_dir / "uniform", steps):
        return run_dir / "uniform" / "best.pt"
    kinds = cfg.netadapt.kinds
    model = model.cpu().eval()
    table.calibrate(model, calibration)
    # NetAdapt's result runs beside each trial: the same load, the same conditions
    netadapt_model = load_model(None, _result_of(run_dir / "finetune")).model.cpu().eval()
    goal = table.runner(netadapt_model, calibration)
    trials = []  # (factor, model, time over NetAdapt's, side by side)
    aim = table.predict(netadapt_model)  # in the table's terms: rescaled by each measured ratio
    for _ in range(4):
        factor = _uniform_factor(model, table, aim, kinds, cfg.netadapt.importance)
        trial = _shrunk(model, uniform_widths(model, factor, kinds), cfg.netadapt.importance)
        times = table.side_by_side({"trial": table.runner(trial, calibration), "netadapt": goal})
        ratio = times.ratio("trial", "netadapt")
        trials.append((factor, trial, ratio))
        if 1 <= ratio <= SLACK:
            break
        aim /= ratio
    # the widest within SLACK of NetAdapt's: the baseline is given equal latency or a little more
    under = [t for t in trials if t[2] <= SLACK]
    best = max(under, key=lambda t: t[0]) if under else min(trials, key=lambda t: t[2])
    chosen, candidate, ratio = best
    run.log(
        f"uniform: every width x{chosen:.3f} -> {ratio:.3f}x the NetAdapt model's time, side by "
        f"side"
    )
    start = run_dir / "uniform_start.pt"
    from densemnv3.engine.checkpoint import atomic_save

    shrunk_cfg = copy.deepcopy(cfg)
    before = widths_of(model)
    shrunk_cfg.model.widths = {k: v for k, v in widths_of(candidate).items() if v != before[k]}
    shrunk_cfg.model.weights = shrunk_cfg.model.backbone_weights = None
    atomic_save(
        {"model": candidate.state_dict(), "config": asdict(shrunk_cfg), "arch": cfg.model.name},
        start,
    )
    run.log(
        f"uniform fine-tune: {steps} steps (as many as the NetAdapt model had) in "
        f"{run_dir / 'uniform'}"
    )
    return fine_tune_long(
        cfg,
        start,
        shrunk_cfg.model.widths,
        steps,
        run_dir / "uniform",
        run.device,
        resume=resume,
        progress=run.progress,
    )


def _read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else {}


def finish(
    original: nn.Module, results: dict[str, Path], run: RunContext, *, rounds: int = SIDE_ROUNDS
) -> dict[str, Any]:
    """Evaluate every model on the whole validation split and time them side by side (``rounds``
    rounds: each model's median ms, and its ratio to the original's taken round by round); write
    ``summary.json``, ``netadapt.csv``, ``pareto.png``; print and return the table."""
    cfg, task, table, run_dir, device = run.cfg, run.task, run.table, run.run_dir, run.device
    summary = _read_summary(run_dir)
    known = {r["name"]: r for r in summary.get("rows", [])}
    models = {"original": original.cpu().eval()}
    for name, path in results.items():
        models[name] = load_model(None, path).model.cpu().eval()
    runners = {name: table.runner(model, run.calibration) for name, model in models.items()}
    times = table.side_by_side(runners, rounds=rounds)
    _, state = load_state(run_dir / STATE_FILE)
    steps = {"original": 0, "NetAdapt": state.steps + cfg.netadapt.long_iters}
    steps["uniform"] = known.get("uniform", {}).get("steps", steps["NetAdapt"])
    val = task.val_dataset()
    rows = []
    for name, model in models.items():
        scores = task.evaluate(model.to(device), val, torch.device(device), progress=False)
        rows.append(
            {
                "name": name,
                "latency_ms": times.ms(name),
                "ratio": times.ratio(name, "original"),
                "metric": float(scores[task.metric]),
                "params": _params(model),
                "steps": steps.get(name, 0),
            }
        )
        model.cpu()
    table_text = format_table(
        rows,
        task.metric,
        f"{table.route}, {table.size[0]}x{table.size[1]}, {table.threads} threads",
    )
    summary = {
        "route": table.route,
        "size": list(table.size),
        "threads": table.threads,
        "rows": rows,
        "metric": task.metric,
        "target": cfg.netadapt.target,
        "search_seconds": state.seconds,
        "iterations": state.iteration,
    }
    write_text(run_dir / SUMMARY, json.dumps(summary, indent=2))
    write_csv(run_dir / "netadapt.csv", state.proposals)
    plot = asdict(state) | {"target": cfg.netadapt.target}
    plot_pareto(
        run_dir / "pareto.png",
        plot,
        task.metric,
        {
            r["name"]: (state.original_ms * r["ratio"], r["metric"])
            for r in rows
            if not math.isnan(r["metric"])
        },
    )
    run.log(table_text)
    return summary
