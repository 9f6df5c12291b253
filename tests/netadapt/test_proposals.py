"""The proposals: each unit's widest width under a budget, on a stand-in table (latency =
parameters), and the cut copies they are tried on."""

import copy

import pytest
import torch
from torch import nn

from densemnv3.config import ModelConfig
from densemnv3.config.schema import PRUNABLE_KINDS as KINDS
from densemnv3.models import build_model
from densemnv3.models.prune import shrink_, width_units, widths_of
from densemnv3.netadapt.proposals import cut_copy, narrowest_proposals, table_proposals


class ParameterTable:
    """Predicts a model's 'latency' as its parameter count in millions."""

    def predict(self, model: nn.Module) -> float:
        return sum(p.numel() for p in model.parameters()) / 1e6


def _model_and_units():
    model = build_model(ModelConfig(name="lraspp_mobilenet_v3_small", num_classes=19)).eval()
    units = [u for u in width_units(model).values() if u.kind == "expansion" and u.width > 8][:4]
    return model, units


def test_table_proposals_take_each_units_widest_width_under_the_budget():
    model, units = _model_and_units()
    table = ParameterTable()
    now = table.predict(model)
    budget = now - 0.005  # 5000 parameters fewer
    found = table_proposals(model, units, table, budget, "l2", progress=False)
    assert found
    for unit, width, candidate, latency in found:
        assert width % 8 == 0 and 8 <= width < unit.width
        assert latency == table.predict(candidate) <= budget
        if width + 8 < unit.width:  # one notch wider would be over the budget
            wider = table_proposals(model, [unit], table, latency + 1e-9, "l2", progress=False)
            assert wider[0][1] == width


def test_narrowest_proposals_cut_each_unit_to_8_where_that_cuts_at_all():
    model, units = _model_and_units()
    table = ParameterTable()
    found = narrowest_proposals(model, units, table, "l2")
    assert [u.name for u, *_ in found] == [u.name for u in units]
    for unit, width, candidate, latency in found:
        assert width == 8 and width_units(candidate)[unit.name].width == 8
        assert latency < table.predict(model)


@pytest.mark.parametrize(
    "name",
    ["lraspp_mobilenet_v3_small", "ssdlite320_mobilenet_v3_small", "multitask_mobilenet_v3_small"],
)
def test_a_cut_copy_is_the_cut_model_and_leaves_the_model_as_it_was(name):
    model = build_model(ModelConfig(name=name, num_classes=5)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    widths, x = widths_of(model), torch.randn(1, 3, 64, 128)
    units = [u for u in width_units(model).values() if u.kind in KINDS and u.width > 8]
    for unit in units[::3] + units[-1:]:  # a third of them, and the head
        width = max(8, unit.width // 2 // 8 * 8)
        cut = cut_copy(model, unit, width, "l2")
        expected = shrink_(copy.deepcopy(model), unit.name, width, importance="l2")
        assert widths_of(cut) == widths_of(expected) and widths_of(model) == widths
        assert cut.state_dict().keys() == expected.state_dict().keys()
        assert all(torch.equal(t, expected.state_dict()[k]) for k, t in cut.state_dict().items())
    assert all(torch.equal(t, before[k]) for k, t in model.state_dict().items())
    with torch.no_grad():
        assert _outputs_equal(cut(x), expected(x))


def _outputs_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.allclose(a, b)
    if isinstance(a, dict):
        return all(_outputs_equal(a[k], b[k]) for k in a)
    return all(_outputs_equal(p, q) for p, q in zip(a, b, strict=True))
