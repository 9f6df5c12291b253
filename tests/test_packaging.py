"""``pip install densemnv3`` is the whole product: the wheel and sdist hold the package and its
configs (no tests, data or artifacts), and the installed ``densemnv3`` command trains, evaluates
and exports from a folder that is not a checkout.

The wheel goes into a new virtual environment that sees this environment's packages through a
``.pth`` file (torch is not installed again: seconds, not minutes); its own site-packages come
first, so ``densemnv3`` is the wheel's, which the test checks.
"""

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from densemnv3.config import shipped_configs

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = (".pt", ".pth", ".onnx", ".ckpt", ".pte", ".mp4", ".avi", ".png", ".json", ".pyc")

pytestmark = pytest.mark.slow


def _run(*command, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(c) for c in command],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", out, ROOT)
    return out


def test_wheel_and_sdist_hold_the_package_and_its_configs_only(dist):
    wheel = zipfile.ZipFile(next(dist.glob("densemnv3-*.whl")))
    names = wheel.namelist()
    configs = {
        n.removeprefix("densemnv3/configs/").removesuffix(".py")
        for n in names
        if n.startswith("densemnv3/configs/")
    }
    assert configs == {*shipped_configs(), "__init__"}
    assert "densemnv3/cli/__init__.py" in names and "densemnv3/__main__.py" in names
    assert {n.split("/")[0] for n in names} == {"densemnv3", f"densemnv3-{_version()}.dist-info"}
    assert not [n for n in names if n.endswith(ARTIFACTS)]
    entry_points = wheel.read(f"densemnv3-{_version()}.dist-info/entry_points.txt").decode()
    assert "densemnv3 = densemnv3.cli:run" in entry_points

    with tarfile.open(next(dist.glob("densemnv3-*.tar.gz"))) as sdist:
        files = [m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile()]
    assert "densemnv3/configs/lraspp_synthetic.py" in files and "setup.cfg" in files
    assert not [f for f in files if f.startswith(("tests/", "tools/", "data/", "work_dirs/"))]
    assert not [f for f in files if f.endswith(ARTIFACTS)]


def _version() -> str:
    import densemnv3

    return densemnv3.__version__


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Path:
    """A new venv with the wheel installed (not editable); this environment's packages behind it."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "parent_env.pth").write_text("".join(f"{path}\n" for path in ours))
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "--quiet",
        next(dist.glob("densemnv3-*.whl")),
    )
    return venv


def test_the_installed_command_trains_evaluates_and_exports_outside_a_checkout(installed, tmp_path):
    command = installed / "bin" / "densemnv3"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{installed / 'bin'}:{env.get('PATH', '')}"
    work = tmp_path / "user"  # no configs/, tools/ or densemnv3/ here
    work.mkdir()

    def densemnv3(*args: str) -> subprocess.CompletedProcess:
        return _run(command, *args, cwd=work, env=env)

    where = _run(
        installed / "bin" / "python",
        "-c",
        "import densemnv3; print(densemnv3.__file__)",
        cwd=work,
        env=env,
    ).stdout
    assert where.startswith(str(installed)), where  # the wheel's package, not the checkout's
    assert "densemnv3 train lraspp_synthetic" in densemnv3("--help").stdout
    assert "lraspp_synthetic " in densemnv3("configs").stdout
    densemnv3(
        "make-synthetic", "--out", "data", "--train", "4", "--val", "2", "--size", "64", "128"
    )
    tiny = [
        "data.root=data",
        "data.synthetic=None",
        "model.name=lraspp_mobilenet_v3_small",
        "model.options={'output_stride': 16}",
        "data.crop_size=[64,96]",
        "data.batch_size=2",
        "data.workers=0",
        "schedule.warmup_iters=2",
        "train.eval_interval=20",
        "train.checkpoint_interval=20",
    ]
    train = densemnv3(
        "train",
        "lraspp_synthetic",
        "--no-progress",
        "--set",
        *tiny,
        "schedule.iters=20",
        "work_dir=run",
    )
    assert "final mIoU: " in train.stdout
    assert json.loads((work / "run" / "metrics.json").read_text())["iter"] == 20
    densemnv3("eval", "--weights", "run/last.pt", "--out", "ev")
    assert 0 <= json.loads((work / "ev" / "metrics.json").read_text())["mIoU"] <= 1
    pytest.importorskip("onnxruntime")
    densemnv3("export", "--weights", "run/last.pt", "--format", "onnx", "--out", "model.onnx")
    assert (work / "model.onnx").stat().st_size > 100_000

    # a user's config derives from a shipped one by the import that works after pip install
    (work / "mine.py").write_text(
        "from densemnv3.configs.lraspp_synthetic import cfg\ncfg.schedule.iters = 2\n"
    )
    densemnv3("train", "mine.py", "--no-progress", "--set", *tiny, "work_dir=mine")
    assert json.loads((work / "mine" / "metrics.json").read_text())["iter"] == 2
    # the clone's spelling, `from configs.X`, says what to write instead
    (work / "old.py").write_text("from configs.lraspp_synthetic import cfg\n")
    old = subprocess.run(
        [command, "train", "old.py"], capture_output=True, text=True, cwd=work, env=env, check=False
    )
    assert old.returncode == 2 and "write `from densemnv3.configs.NAME import cfg`" in old.stderr
