"""What a run leaves for people to read: ``results.csv``, ``results.png``, TensorBoard scalars."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from densemnv3.utils.files import atomic_write

__all__ = ["ResultsLog", "plot_results"]


class ResultsLog:
    """Appends one row per evaluation to ``results.csv`` (re-plotting ``results.png``) and writes
    scalars to TensorBoard under ``work_dir/tb``. Only rank 0 creates one."""

    def __init__(self, work_dir: str | Path, *, tensorboard: bool = True) -> None:
        self.work_dir = Path(work_dir)
        self.csv_path = self.work_dir / "results.csv"
        self.png_path = self.work_dir / "results.png"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.work_dir / "tb"))
            except ImportError:  # tensorboard is optional at run time
                self._tb = None

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)

    def row(self, values: dict[str, float]) -> None:
        self._write([*self.read(), {k: _fmt(v) for k, v in values.items()}])

    def _write(self, rows: list[dict[str, str]]) -> None:
        """Replace ``results.csv`` with ``rows`` (atomically) and redraw ``results.png``."""
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with atomic_write(self.csv_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        plot_results(self.csv_path, self.png_path)

    def read(self) -> list[dict[str, str]]:
        if not self.csv_path.is_file():
            return []
        with open(self.csv_path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate_after(self, iteration: int) -> None:
        """Drop rows past ``iteration`` (a resumed run re-does them)."""
        rows = [r for r in self.read() if int(float(r["iter"])) <= iteration]
        if rows:
            self._write(rows)
        else:
            self.csv_path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def plot_results(csv_path: str | Path, png_path: str | Path) -> None:
    """One small panel per numeric column of ``results.csv``, against iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    keys = [k for k in rows[0] if k not in ("iter", "epoch", "time")]
    iters = [float(r["iter"]) for r in rows]
    cols = min(4, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [
            (x, float(r[key])) for x, r in zip(iters, rows) if r.get(key) not in (None, "", "nan")
        ]
        if pts:
            ax.plot(*zip(*pts), marker=".", linewidth=1.5)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    try:
        with atomic_write(png_path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
