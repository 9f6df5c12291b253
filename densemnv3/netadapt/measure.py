"""Side-by-side latency: what decides, in a NetAdapt run, whether one model is faster than another.

On a shared machine two measurements taken a minute apart differ widely, while two models run in
turn, round after round, see the same load, and the ratio of their times taken round by round holds
steady. So every decision of the search is such a ratio: a proposal is kept only if it runs faster
than the model it would replace, measured beside it, and the target is reached when the kept model
runs at most ``target`` × the original's time, measured beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["SIDE_ROUNDS", "Judge", "SideBySide", "Verdict"]

#: Rounds of a side-by-side measurement (:meth:`Judge.confirm`: twice as many).
SIDE_ROUNDS = 15
#: Where the candidate is faster in this share of the rounds (bounds included), the rounds
#: disagree too much to decide on: it is measured as many rounds again.
UNDECIDED = (0.3, 0.7)


@dataclass(frozen=True)
class SideBySide:
    """Models timed in turn: per model, its median ms in each round."""

    rounds: dict[str, list[float]]

    def ms(self, name: str) -> float:
        """``name``'s median ms over the rounds (an absolute figure: it drifts with the load)."""
        return statistics.median(self.rounds[name])

    def ratios(self, name: str, to: str) -> list[float]:
        """``name``'s time over ``to``'s, round by round."""
        return [a / b for a, b in zip(self.rounds[name], self.rounds[to], strict=True)]

    def ratio(self, name: str, to: str) -> float:
        """``name``'s time over ``to``'s: the median of the ratios taken round by round."""
        return statistics.median(self.ratios(name, to))

    def __add__(self, other: SideBySide) -> SideBySide:
        return SideBySide({name: times + other.rounds[name] for name, times in self.rounds.items()})


@dataclass(frozen=True)
class Verdict:
    """A candidate measured beside the current model and the original."""

    step: float  # its time over the current model's (the one it would replace)
    total: float  # its time over the original's
    ms: float  # its median ms in that measurement
    runner: Callable[[], Any] = field(repr=False, compare=False)


class Judge:
    """Keeps the original and the current model ready to run on the table's route (their files
    exported once) and measures each candidate beside both."""

    def __init__(
        self, table, original: nn.Module, calibration=None, *, current: nn.Module | None = None
    ) -> None:
        self.table, self.calibration = table, calibration
        self._original = table.runner(original, calibration)
        self._current = self._original if current is None else table.runner(current, calibration)

    def judge(self, candidate: nn.Module) -> Verdict:
        """``candidate`` timed in turn with the current model and the original (one of them
        while the current model is the original)."""
        run = self.table.runner(candidate, self.calibration)
        runs = {"candidate": run, "original": self._original}
        if self._current is not self._original:
            runs["current"] = self._current
        replaced = "current" if "current" in runs else "original"
        times = self.table.side_by_side(runs)
        ratios = times.ratios("candidate", replaced)
        if UNDECIDED[0] <= sum(r < 1 for r in ratios) / len(ratios) <= UNDECIDED[1]:
            times = times + self.table.side_by_side(runs)  # the rounds disagree: as many again
        step = times.ratio("candidate", replaced)
        return Verdict(
            step=step,
            total=times.ratio("candidate", "original"),
            ms=times.ms("candidate"),
            runner=run,
        )

    def confirm(self) -> float:
        """The current model's time over the original's, from twice the rounds: what decides
        that the target is reached."""
        if self._current is self._original:
            return 1.0
        runs = {"current": self._current, "original": self._original}
        return self.table.side_by_side(runs, rounds=2 * SIDE_ROUNDS).ratio("current", "original")

    def keep(self, verdict: Verdict) -> None:
        """The candidate of ``verdict`` becomes the current model."""
        self._current = verdict.runner
