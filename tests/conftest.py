import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `configs` and `tools` importable from a checkout

from tests.tool_process import run_tool_here  # noqa: E402

# Each of pytest-xdist's workers (``-n``) gets its share of the cores, the tools it starts too:
# OpenMP threads beyond the cores wait on each other rather than compute.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
torch.set_num_threads(_THREADS)
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook, where it is installed
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker per core, up to four (each holds its own models and files)."""
    return max(1, min(4, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    """Files with the most end-to-end (``slow``) tests first, each file's tests in their order:
    pytest-xdist's ``--dist loadfile`` then starts the long files first and ends on short ones."""
    slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


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

    return make_synthetic(
        tmp_path_factory.mktemp("synthetic"), train=8, val=2, size=(64, 128), seed=1, progress=False
    )


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


def _run_tool(
    tool: str, *args: str, timeout: float = 300, env=None, **kwargs
) -> subprocess.CompletedProcess:
    """``python tools/<tool> *args``, captured. In this process (a fresh interpreter costs seconds
    of imports) unless ``env`` or another ``subprocess.run`` option asks for a process of its own;
    :func:`tests.tool_process.run_tool_here` gives the tool what a process would."""
    if env is not None or kwargs:
        return subprocess.run(
            [sys.executable, str(ROOT / "tools" / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            **kwargs,
        )
    return run_tool_here(ROOT / "tools" / tool, list(args))


@pytest.fixture(scope="session")
def tiny_overrides():
    """``tiny_overrides(root, work_dir, section__key=value, ...)`` -> ``--set`` arguments."""
    return _tiny_overrides


@pytest.fixture(scope="session")
def run_tool():
    """``run_tool("train_seg.py", *args)`` -> CompletedProcess (text, captured)."""
    return _run_tool
