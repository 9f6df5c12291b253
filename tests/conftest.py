import subprocess
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


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory):
    """The runtimes' measured choices (``--runtime auto``) go to a cache of the test session's,
    never the user's (subprocesses inherit it)."""
    import os

    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads can run 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rand_init():
    return randomize_



@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    from densemnv3.data.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synthetic"), train=8, val=2, size=(64, 128),
                          seed=1, progress=False)


def _tiny_overrides(root: Path, work_dir: Path, **extra) -> list[str]:
    values = {
        "model.name": "lraspp_mobilenet_v3_small",
        "model.options": "{'output_stride': 16}",
        "data.root": str(root),
        "data.synthetic": "None",
        "data.crop_size": "[64,96]",
        "data.batch_size": "2",
        "data.workers": "0",
        "schedule.iters": "6",
        "schedule.warmup_iters": "2",
        "train.eval_interval": "3",
        "train.checkpoint_interval": "2",
        "train.log_interval": "1",
        "train.deterministic": "True",
        "work_dir": str(work_dir),
    }
    values.update({k.replace("__", "."): str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in values.items()]


def _run_tool(tool: str, *args: str, timeout: float = 300, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, **kwargs)




@pytest.fixture
def tiny_overrides():
    """``tiny_overrides(root, work_dir, section__key=value, ...)`` -> ``--set`` arguments."""
    return _tiny_overrides


@pytest.fixture
def run_tool():
    """``run_tool("train_seg.py", *args)`` -> CompletedProcess (text, captured)."""
    return _run_tool
