import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `configs` and `tools` importable from a checkout

torch.set_num_threads(2)


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights AND BatchNorm statistics, so eval-mode parity tests are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return module


@pytest.fixture
def rand_init():
    return randomize_
