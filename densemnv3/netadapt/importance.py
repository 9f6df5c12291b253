"""Which channels a cut keeps: weight L2 norm (NetAdapt) against BatchNorm scale (network
slimming), measured on one proposal set.

The study takes the search's first iteration as it would run: every unit proposes the width the
table chooses (the same for both criteria: latency does not depend on which channels stay). Each
proposal is cut once per criterion and scored on the quick evaluation right after the cut, and
again after the short fine-tune, every proposal on the same batches. ``importance.csv`` holds the
rows; the summary says, per criterion, the mean metric, how many proposals it wins, and the
score of the proposal the search would keep.
"""

from __future__ import annotations

import copy
import csv
import statistics
from typing import Any

import torch
from torch import nn

from densemnv3.config.schema import IMPORTANCE
from densemnv3.models.prune import shrink_, width_units
from densemnv3.utils.files import atomic_write

from .context import RunContext
from .proposals import Batches, fine_tune, quick_metric, quick_set, table_proposals

__all__ = ["compare_importance", "summarize"]

FIELDS = (
    "unit",
    "kind",
    "width",
    "new_width",
    "latency_ms",
    "importance",
    "metric_cut",
    "metric_tuned",
)


def compare_importance(model: nn.Module, run: RunContext) -> list[dict[str, Any]]:
    """Cut every unit of ``cfg.netadapt.kinds`` to the first iteration's proposed width, keeping
    its channels by each criterion of :data:`IMPORTANCE`; write ``importance.csv`` in the run
    folder and return its rows."""
    from tqdm import tqdm

    cfg, task, table, progress = run.cfg, run.task, run.table, run.progress
    device, n = torch.device(run.device), cfg.netadapt
    quick = quick_set(task, n.eval_images)
    model = model.to(device).eval()
    table.calibrate(model, run.calibration)
    current, base = table.predict(model), quick_metric(model, task, quick, device)
    units = [u for u in width_units(model).values() if u.kind in n.kinds and u.width > 8]
    step, proposals = n.step, []
    while not proposals and step >= 0.01:  # as the search: where no unit cuts `step`, ask for less
        proposals = [
            (unit, width, latency)
            for unit, width, _, latency in table_proposals(
                model, units, table, current - step * current, n.importance, progress=progress
            )
        ]
        step /= 2
    shared = Batches(task, cfg, seed=cfg.train.seed).take(n.short_iters)
    rows = []
    for unit, width, latency in tqdm(
        proposals, desc="importance study", leave=False, disable=not progress, dynamic_ncols=True
    ):
        for method in IMPORTANCE:
            candidate = shrink_(copy.deepcopy(model), unit.name, width, importance=method)
            cut = quick_metric(
                copy.deepcopy(candidate), task, quick, device
            )  # evaluation may mark tensors
            tuned = quick_metric(
                fine_tune(candidate, task, cfg, shared, device), task, quick, device
            )
            rows.append(
                {
                    "unit": unit.name,
                    "kind": unit.kind,
                    "width": unit.width,
                    "new_width": width,
                    "latency_ms": latency,
                    "importance": method,
                    "metric_cut": cut,
                    "metric_tuned": tuned,
                }
            )
    with atomic_write(run.run_dir / "importance.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(
            {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows
        )
    run.log(summarize(rows, task.metric, current, base))
    return rows


def summarize(rows: list[dict[str, Any]], metric: str, current_ms: float, base: float) -> str:
    """A table, one line per criterion: the mean metric after the cut and after the fine-tune, the
    proposals it wins after the fine-tune (a tie wins for neither), and the metric of the proposal
    the search would keep with it (best Δmetric/|Δlatency| from ``base`` at ``current_ms``)."""
    by_unit: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_unit.setdefault(r["unit"], {})[r["importance"]] = r
    lines = [
        f"importance on {len(by_unit)} proposals ({metric} {base:.4f} before; kept = the proposal "
        f"the search would keep):",
        f"  {'importance':10s} {'mean after cut':>15s} {'mean tuned':>11s} {'wins':>5s} "
        f"{'kept':>11s}",
    ]
    for method in IMPORTANCE:
        mine = [u[method] for u in by_unit.values() if method in u]
        if not mine:
            continue
        wins = sum(
            1
            for u in by_unit.values()
            if all(u[method]["metric_tuned"] > u[o]["metric_tuned"] for o in u if o != method)
        )
        best = max(
            mine, key=lambda r: (r["metric_tuned"] - base) / max(current_ms - r["latency_ms"], 1e-6)
        )
        lines.append(
            f"  {method:10s} {statistics.fmean(r['metric_cut'] for r in mine):15.4f} "
            f"{statistics.fmean(r['metric_tuned'] for r in mine):11.4f} {wins:5d} "
            f"{best['metric_tuned']:11.4f}"
        )
    return "\n".join(lines)
