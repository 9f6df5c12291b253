"""The search's decisions, on stand-ins (no runtime, no training): keeping only what measures
faster side by side, stopping and saying why where nothing does, the target judged by the
side-by-side ratio to the original, whatever the absolute times do."""

import math

import pytest
import torch
from torch import nn

from densemnv3.config import Config, ModelConfig
from densemnv3.errors import UserError
from densemnv3.models import build_model
from densemnv3.netadapt import search as search_module
from densemnv3.netadapt.context import RunContext
from densemnv3.netadapt.measure import SideBySide
from densemnv3.netadapt.search import MISSES, search
from densemnv3.netadapt.state import load_state

MODEL = ModelConfig(name="lraspp_mobilenet_v3_small", num_classes=5, options={"reduced_tail": True})


class Stub:
    """A model 'ready to run': its true time in ms."""

    def __init__(self, ms: float) -> None:
        self.ms = ms

    def __call__(self) -> None:
        pass


class StubTable:
    """A latency table whose models take (parameters + 0.1 M) 'ms'. Side by side, every round
    carries a load that scales all models alike; ``measure`` (alone) drifts by tens of per cent.
    ``slow``: the side-by-side measurements (counted from 1) in which the candidate takes 1.2x the
    time of the model it would replace; ``doubts``: how many confirmations of the target find
    the kept model at 0.99x the original."""

    route, threads, size, glue_ms = "stub", 1, (64, 128), 0.0
    LOADS = (1.0, 1.6, 0.7, 2.2, 1.1)

    def __init__(self, slow=(), doubts: int = 0) -> None:
        self.slow, self.calls, self.drift = set(slow), 0, iter([1.0, 1.4, 0.8, 1.3] * 100)
        self.doubts = doubts

    def predict(self, model: nn.Module) -> float:
        return sum(p.numel() for p in model.parameters()) / 1e6 + 0.1

    def measure(self, model: nn.Module, calibration=None) -> float:
        return self.predict(model) * next(self.drift)

    def calibrate(self, model: nn.Module, calibration=None) -> tuple[float, float]:
        return self.predict(model), self.measure(model)

    def runner(self, model: nn.Module, calibration=None) -> Stub:
        return Stub(self.predict(model))

    def side_by_side(self, runners: dict, rounds: int = 5) -> SideBySide:
        self.calls += 1
        ms = {name: run.ms for name, run in runners.items()}
        if "candidate" in ms and self.calls in self.slow:
            ms["candidate"] = 1.2 * ms.get("current", ms["original"])
        elif "candidate" not in ms and self.doubts:
            self.doubts -= 1
            ms["current"] = 0.99 * ms["original"]
        return SideBySide(
            {
                name: [t * self.LOADS[r % len(self.LOADS)] for r in range(rounds)]
                for name, t in ms.items()
            }
        )


class StubTask:
    """Batches and a validation split of placeholders; the metric is the stubbed quick metric."""

    metric = "mIoU"

    def train_dataset(self):
        return [torch.zeros(1)] * 4

    def val_dataset(self):
        return [torch.zeros(1)] * 2

    @staticmethod
    def collate(batch):
        return batch


@pytest.fixture
def run_search(monkeypatch, tmp_path):
    """``run_search(table, target=0.8) -> (model, state, log lines)``: the search on LR-ASPP-Small
    with the fine-tune a no-op and every proposal scored alike (so they are tried in unit order)."""
    monkeypatch.setattr(search_module, "fine_tune", lambda model, *args: model)
    monkeypatch.setattr(search_module, "quick_metric", lambda model, *args: 0.5)

    def run(table, target: float = 0.8, state=None, current=None):
        cfg = Config(model=MODEL)
        cfg.netadapt.target, cfg.netadapt.step, cfg.netadapt.short_iters = target, 0.05, 1
        cfg.data.batch_size, cfg.data.workers = 2, 0
        lines: list[str] = []
        torch.manual_seed(0)
        run = RunContext(cfg, StubTask(), table, tmp_path, "cpu", progress=False, log=lines.append)
        model, state = search(build_model(MODEL).eval(), run, state=state, current=current)
        return model, state, lines

    return run


def test_each_kept_step_runs_faster_side_by_side_and_the_target_is_a_ratio(run_search, tmp_path):
    table = StubTable()
    original_ms = table.predict(build_model(MODEL))
    model, state, lines = run_search(table, target=0.8)
    assert state.done and state.path
    step_ratios = [p["step_ratio"] for p in state.path]
    ratios = [p["ratio"] for p in state.path]
    assert all(r < 1 for r in step_ratios), step_ratios
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] <= 0.8 < ratios[-2]
    # the loads of the rounds cancel: each ratio is the models' true one
    assert ratios[-1] == pytest.approx(table.predict(model) / original_ms)
    assert state.ratio == ratios[-1]
    assert state.latency_ms == pytest.approx(state.original_ms * ratios[-1])
    kept = [(p["unit"], p["step_ratio"]) for p in state.proposals if p["kept"]]
    assert kept == [(p["unit"], p["step_ratio"]) for p in state.path]
    _, saved = load_state(tmp_path / "search.pt")
    assert saved.path == state.path and saved.done
    assert any("side by side" in line and "x the original" in line for line in lines)
    assert state.path[-1]["confirmed_ratio"] == ratios[-1] and "the target is reached" in lines[-1]


@pytest.mark.slow
def test_a_target_the_confirmation_does_not_find_reached_is_searched_on(run_search):
    _, sure, _ = run_search(StubTable(), target=0.8)
    _, state, lines = run_search(StubTable(doubts=1), target=0.8)
    assert len(state.path) == len(sure.path) + 1 and state.ratio <= 0.8
    assert state.path[len(sure.path) - 1]["confirmed_ratio"] == pytest.approx(0.99)
    assert any("over the target 0.8x, going on" in line for line in lines), lines


def test_a_candidate_that_measures_slower_is_not_kept_and_the_log_says_why(run_search):
    # measurement 1 is the narrowest model's; 2 is iteration 1's first proposal
    _, state, lines = run_search(StubTable(slow={2}), target=0.9)
    first = [p for p in state.proposals if p["iteration"] == 1]
    slower = [p for p in first if p["step_ratio"] == pytest.approx(1.2)]
    assert len(slower) == 1 and not slower[0]["kept"]
    kept = [p for p in first if p["kept"]]
    assert len(kept) == 1 and kept[0]["step_ratio"] < 1 and state.path[0]["unit"] == kept[0]["unit"]
    named = f"{slower[0]['unit']} {slower[0]['width']}->{slower[0]['new_width']} not kept"
    assert any(
        named in line and "1.200x the time of the model it would replace" in line for line in lines
    ), lines
    assert all(p["step_ratio"] < 1 for p in state.path)


def test_a_search_where_nothing_measures_faster_stops_and_says_why(run_search, tmp_path):
    table = StubTable(slow=range(2, 1000))
    with pytest.raises(
        UserError,
        match=r"the search stopped at 1\.00x the original, short of the "
        r"target 0\.8x: no proposal ran faster than the model it "
        r"would replace",
    ) as err:
        run_search(table, target=0.8)
    assert "--resume" in str(err.value) and "\n" not in str(err.value)
    _, state = load_state(tmp_path / "search.pt")
    assert state.iteration == MISSES and state.path == [] and not state.done and state.stopped
    assert state.misses == MISSES and state.cut_scale == 2**MISSES
    # the first iteration tried its best proposals; the next measured every one before its
    # fine-tune (and fine-tuned none); none kept, each recorded with its ratio
    tried = [p for p in state.proposals if not math.isnan(p["step_ratio"])]
    assert tried and all(p["step_ratio"] == pytest.approx(1.2) and not p["kept"] for p in tried)
    second = [p for p in state.proposals if p["iteration"] == 2]
    assert len(tried) == search_module.TRIES + len(second) and state.measure_whole
    assert all(math.isnan(p["metric"]) for p in second)


def test_a_resumed_search_keeps_judging_beside_the_original(run_search, tmp_path):
    table = StubTable()
    model, first, _ = run_search(table, target=0.9)
    before = list(first.path)
    again = StubTable()
    original_ms = again.predict(build_model(MODEL))
    model, state, _ = run_search(again, target=0.8, state=first, current=model)
    assert state.path[: len(before)] == before and len(state.path) > len(before)
    assert state.ratio == pytest.approx(again.predict(model) / original_ms) and state.ratio <= 0.8


def test_after_an_iteration_that_kept_nothing_every_proposal_is_measured(run_search):
    """... and then the table is trusted again."""
    _, state, lines = run_search(StubTable(slow={2, 3, 4}), target=0.85)  # iteration 1's tries
    by_iteration = {i: [p for p in state.proposals if p["iteration"] == i] for i in (1, 2, 3)}
    assert not any(p["kept"] for p in by_iteration[1]) and state.path[0]["iteration"] == 2
    measured = {i: sum(not math.isnan(p["step_ratio"]) for p in by_iteration[i]) for i in (2, 3)}
    assert measured == {2: len(by_iteration[2]), 3: 1}  # all before the fine-tune, then the best
    assert any("nothing kept" in line and "measures every proposal" in line for line in lines), (
        lines
    )
    assert state.misses == 0 and state.cut_scale == 1.0


class HalfTable(StubTable):
    """Models that save half the time the table predicts they save."""

    def runner(self, model: nn.Module, calibration=None) -> Stub:
        predicted = self.predict(model)
        self.original = getattr(self, "original", predicted)  # the judge's first runner
        return Stub((predicted + self.original) / 2)


def test_the_cut_asked_of_the_table_follows_what_the_measurements_show(run_search):
    """Where each kept step measures half the cut the table predicted, the search asks the table
    for more: the measured ratio still falls by about ``step`` an iteration."""
    _, state, _ = run_search(HalfTable(), target=0.8)
    drops = [a["ratio"] - b["ratio"] for a, b in zip(state.path, state.path[1:])]
    assert state.done and state.ratio <= 0.8
    assert len(state.path) <= 6  # 0.2 / 0.05 = 4 cuts, two of them before the measurements tell
    assert max(drops) >= 0.045
