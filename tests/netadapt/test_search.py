"""The search's proposal steps, on a stand-in table (latency = parameters), no runtime needed."""

from torch import nn

from densemnv3.config import ModelConfig
from densemnv3.models import build_model
from densemnv3.models.widths import width_units
from densemnv3.netadapt.search import narrowest_proposals, table_proposals


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
