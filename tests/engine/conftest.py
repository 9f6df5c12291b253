"""A tiny synthetic dataset and a fast segmentation config shared by the engine tests."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
