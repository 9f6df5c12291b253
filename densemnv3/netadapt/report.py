"""What a NetAdapt run shows: ``netadapt.csv`` (every proposal), ``pareto.png`` (latency against
the metric) and the final table (original / NetAdapt / uniform)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from densemnv3.utils.files import atomic_write

__all__ = ["format_table", "plot_pareto", "write_csv"]

CSV_FIELDS = (
    "iteration",
    "unit",
    "kind",
    "width",
    "new_width",
    "latency_ms",
    "metric",
    "score",
    "kept",
    "step_ratio",
    "ratio",
)


def write_csv(path: Path, proposals: Sequence[Mapping[str, Any]]) -> Path:
    """``netadapt.csv``: one row per proposal of every iteration (``kept``: 1 for the one kept;
    ``step_ratio``, ``ratio``: its time over the current model's and the original's, measured
    side by side, for those measured)."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for p in proposals:
            row = {k: p.get(k, math.nan) for k in CSV_FIELDS}
            row["kept"] = int(bool(row["kept"]))
            for k in ("latency_ms", "metric", "score", "step_ratio", "ratio"):
                row[k] = f"{row[k]:.6g}"
            writer.writerow(row)
    return path


def plot_pareto(
    path: Path,
    state: Mapping[str, Any],
    metric: str,
    finals: Mapping[str, tuple[float, float]] = {},  # noqa: B006 - read only
) -> Path | None:
    """``pareto.png``: every proposal (short fine-tune, predicted latency), the kept path (its
    ratios to the original, measured side by side, × the original's ms), and ``finals`` (name ->
    (latency ms, metric) after the long fine-tune: NetAdapt, uniform)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    props = [p for p in state["proposals"] if not math.isnan(p["metric"])]
    ax.scatter(
        [p["latency_ms"] for p in props],
        [p["metric"] for p in props],
        s=12,
        c="0.7",
        label="proposals (short fine-tune)",
    )
    xs = [state["original_ms"]] + [p["measured_ms"] for p in state["path"]]
    ys = [state["original_metric"]] + [p["metric"] for p in state["path"]]
    ax.plot(xs, ys, "o-", c="tab:blue", ms=4, label="kept path (measured)")
    ax.scatter(
        [state["original_ms"]],
        [state["original_metric"]],
        marker="s",
        c="k",
        zorder=3,
        label="original",
    )
    marks = {"NetAdapt": ("*", "tab:blue"), "uniform": ("*", "tab:red"), "original": ("s", "k")}
    for name, (ms, value) in finals.items():
        marker, colour = marks.get(name, ("D", "tab:green"))
        if name != "original":
            ax.scatter(
                [ms],
                [value],
                marker=marker,
                s=140,
                c=colour,
                zorder=4,
                label=f"{name} (long fine-tune)",
            )
    ax.axvline(
        state["original_ms"] * state.get("target", 0.7), ls="--", c="0.5", lw=1, label="target"
    )
    ax.set_xlabel("latency (ms): the original's x the ratio measured side by side")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def format_table(rows: Sequence[Mapping[str, Any]], metric: str, route: str) -> str:
    """The final table: per model its measured latency, ratio to the original, metric and params."""
    head = (
        f"| model | latency on {route} (ms) | x original | {metric} | parameters | "
        f"fine-tune steps |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    base = rows[0]["latency_ms"]
    for r in rows:  # the ratio measured round by round, beside the original, where there is one
        ratio = r.get("ratio", r["latency_ms"] / base)
        lines.append(
            f"| {r['name']} | {r['latency_ms']:.1f} | {ratio:.2f} | "
            f"{r['metric']:.4f} | {r['params'] / 1e6:.2f} M | {r.get('steps', 0)} |"
        )
    return "\n".join(lines)
