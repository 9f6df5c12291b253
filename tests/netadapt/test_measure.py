"""Side-by-side timing: models in turn, ratios round by round, and the judge that measures each
candidate beside the current model and the original (stand-in models and clocks: no test here
compares a latency)."""

import itertools

import pytest
from torch import nn

from densemnv3.netadapt import timing
from densemnv3.netadapt.measure import Judge, SideBySide


def test_interleaved_rounds_take_turns_and_their_ratios_cancel_the_load(monkeypatch):
    """Models whose calls cost 2 and 1 'ms' on a clock of the test's, under a load that changes
    from round to round: the ratio taken round by round is exact, each model's median is not."""
    monkeypatch.setattr(timing, "WARMUP_SECONDS", 0.0)
    now, order, loads = [0.0], [], (1.0, 3.0, 0.5, 2.0)
    block = 3  # `calls`: no `seconds` pass on the test's clock

    def model(name: str, cost: float):
        def run() -> None:
            k = max(len(order) - 2 * timing.WARMUP, 0)  # calls after both warm-ups
            order.append(name)
            now[0] += cost * loads[k // block // 2 % len(loads)]

        return run

    runs = {"a": model("a", 2e-3), "b": model("b", 1e-3)}
    times = timing.interleaved_ms(runs, rounds=4, seconds=0.0, calls=3, clock=lambda: now[0])
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}
    blocks = [name for name, _ in itertools.groupby(order[2 * timing.WARMUP :])]
    assert blocks == ["a", "b", "a", "b", "a"]  # in turns, reversed every round: ab|ba|ab|ba
    assert len(order) == 2 * timing.WARMUP + 4 * 2 * block
    assert SideBySide(times).ratio("a", "b") == pytest.approx(2.0)
    assert times["a"] == pytest.approx([2.0, 6.0, 1.0, 4.0])  # alone, each time moved with the load


def test_a_judge_measures_each_candidate_beside_the_current_model_and_the_original():
    class Table:
        def __init__(self) -> None:
            self.seen: list[list[str]] = []

        def runner(self, model, calibration=None):
            return lambda: model.ms

        def side_by_side(self, runners, rounds=5):
            self.seen.append(list(runners))
            return SideBySide({name: [run()] * rounds for name, run in runners.items()})

    def model(ms: float) -> nn.Module:
        m = nn.Identity()
        m.ms = ms
        return m

    table = Table()
    judge = Judge(table, model(10.0))
    first = judge.judge(model(8.0))
    assert (first.step, first.total) == (pytest.approx(0.8), pytest.approx(0.8))
    judge.keep(first)
    second = judge.judge(model(9.0))  # slower than the model it would replace
    assert (second.step, second.total) == (pytest.approx(9 / 8), pytest.approx(0.9))
    assert table.seen == [["candidate", "original"], ["candidate", "original", "current"]]


def test_rounds_that_disagree_are_measured_again_before_a_judgement():
    class Table:
        calls = 0

        def runner(self, model, calibration=None):
            return model

        def side_by_side(self, runners, rounds=4):
            self.calls += 1  # the candidate: faster in half the rounds, then clearly slower
            candidate = [9.0, 11.0, 9.0, 11.0] if self.calls == 1 else [11.0] * 4
            return SideBySide({"candidate": candidate, "original": [10.0] * 4})

    table = Table()
    judge = Judge(table, nn.Identity())
    verdict = judge.judge(nn.Identity())
    assert table.calls == 2 and verdict.step == pytest.approx(1.1)  # the median of all 8 rounds
