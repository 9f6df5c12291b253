"""The ``densemnv3`` command: the subcommand table, help, version, and both routes (``densemnv3
X`` and ``python tools/X.py``) running the same ``main``."""

import hashlib
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import densemnv3
from densemnv3.cli import COMMANDS, main
from densemnv3.config import shipped_configs
from densemnv3.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {
    "train": "train",
    "train-seg": "train_seg",
    "train-det": "train_det",
    "eval": "eval",
    "eval-seg": "eval_seg",
    "eval-det": "eval_det",
    "export": "export",
    "quantize": "quantize",
    "demo": "demo_video",
    "predict": "predict",
    "benchmark": "benchmark",
    "make-synthetic": "make_synthetic",
    "cache-dataset": "cache_dataset",
    "data": "data",
    "netadapt": "netadapt",
}


def densemnv3_command(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """The console script installed beside this interpreter (``pip install -e .`` made it)."""
    script = Path(sys.executable).parent / "densemnv3"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "densemnv3"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False
    )


def test_help_lists_every_command_and_version(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert (
        all(f"  {name} " in out for name in COMMANDS) and "densemnv3 train lraspp_synthetic" in out
    )
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"densemnv3 {densemnv3.__version__}\n"


def test_unknown_command_is_one_line_with_a_suggestion():
    with pytest.raises(
        UserError,
        match=r"unknown command 'exprot' \(did you mean 'export'\?\); the "
        r"commands are train, eval, export",
    ):
        main(["exprot"])


def test_configs_lists_the_shipped_configs_with_their_first_line(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == sorted(shipped_configs()) and "lraspp_synthetic" in names
    assert all(p.stem in names for p in (ROOT / "configs").glob("*.py") if p.stem != "__init__")
    synthetic = next(line for line in lines if line.startswith("lraspp_synthetic "))
    assert "LR-ASPP, MobileNetV3-Large, on the built-in synthetic street scenes" in synthetic


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "configs"])
def test_each_command_is_the_tools_main_and_has_help_with_an_example(name):
    module = importlib.import_module(f"densemnv3.cli.{COMMANDS[name][0]}")
    tool = importlib.import_module(f"tools.{TOOLS[name]}")
    assert tool.main is module.main  # the script in tools/ is the same function
    assert f"densemnv3 {name}" in module.__doc__  # an example of the command
    done = densemnv3_command(name, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: densemnv3 {name} ")


def test_every_tool_script_is_in_the_table():
    assert {p.stem for p in (ROOT / "tools").glob("*.py")} == set(TOOLS.values())


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_both_routes_give_the_same_result(tmp_path):
    args = ["--train", "2", "--val", "1", "--size", "32", "64", "--seed", "4"]
    command = densemnv3_command("make-synthetic", "--out", str(tmp_path / "a"), *args, cwd=tmp_path)
    script = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "make_synthetic.py"),
            "--out",
            str(tmp_path / "b"),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert command.returncode == 0 and script.returncode == 0, command.stderr + script.stderr
    assert (
        command.stdout.replace(str(tmp_path / "a"), "OUT").split("in ")[0]
        == script.stdout.replace(str(tmp_path / "b"), "OUT").split("in ")[0]
    )
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_a_failing_command_is_one_error_line(tmp_path):
    done = densemnv3_command("train", "no_such_config", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "error: unknown config 'no_such_config'; the shipped configs are "
    )
    assert len(done.stderr.strip().splitlines()) == 1
