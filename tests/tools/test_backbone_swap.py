"""Backbone swaps end to end: ``--set model.backbone=...`` trains with the tools, the checkpoint
remembers the backbone (eval tools and the Predictor need no config), and LR-ASPP and SSDLite
learn on three non-MobileNet backbones (native ShuffleNetV2, ``tv:resnet18``, ``timm:regnetx_002``).

Training runs in this process through ``densemnv3.cli.commands.train_from_cli`` — all that
``tools/train_*.py`` do — to spare an interpreter start per run; one run goes through the tool
itself."""

import importlib
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import cv2
import pytest
import torch

from densemnv3.cli.commands import train_from_cli
from densemnv3.inference import Predictor

ROOT = Path(__file__).resolve().parents[2]
SEG_CONFIG = str(ROOT / "configs" / "lraspp_synthetic.py")
DET_CONFIG = str(ROOT / "configs" / "ssdlite_synthetic.py")
TIMM = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None,
    reason="timm is not installed (pip install 'densemnv3[timm]')",
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def tiny(root: Path, work: Path | None, task: str, iters: int) -> list[str]:
    values = {
        "data.root": root,
        "data.synthetic": None,
        "data.batch_size": 2,
        "data.eval_batch_size": 2,
        "data.workers": 0,
        "schedule.iters": iters,
        "schedule.warmup_iters": 2,
        "train.eval_interval": iters,
        "train.checkpoint_interval": iters,
        "train.log_interval": 1,
    }
    values |= {"data.crop_size": [64, 96]} if task == "seg" else {"data.image_size": [64, 128]}
    if work is not None:
        values["work_dir"] = work
    return [f"{k}={v}" for k, v in values.items()]


def step_losses(log: str) -> list[float]:
    """Each step's loss, from the running means of ``--no-progress`` log lines (no evaluation in
    between, so line k holds the mean of steps 1..k)."""
    means = [float(m.group(1)) for m in re.finditer(r"^iter \d+/\d+  loss ([\d.]+)", log, re.M)]
    return [k * m - (k - 1) * p for k, (m, p) in enumerate(zip(means, [0.0, *means]), start=1)]


def run_eval_tool(tool: str, argv: list[str], monkeypatch) -> None:
    module = importlib.import_module(f"tools.{tool}")
    monkeypatch.setattr(sys, "argv", [f"{tool}.py", *argv])
    assert module.main() == 0


def val_image(root: Path):
    return cv2.imread(str(sorted((root / "leftImg8bit" / "val").rglob("*.png"))[0]))


OTHER_BACKBONES = [
    pytest.param(task, backbone, marks=[TIMM] if backbone.startswith("timm:") else [])
    for task in ("seg", "det")
    for backbone in ("shufflenet_v2", "tv:resnet18", "timm:regnetx_002")
]


@pytest.mark.parametrize("task,backbone", OTHER_BACKBONES)
def test_twenty_steps_on_other_backbones_lower_the_loss_and_evaluate(
    task, backbone, tiny_synthetic, tmp_path, capsys, monkeypatch
):
    work = tmp_path / "run"
    config = SEG_CONFIG if task == "seg" else DET_CONFIG
    overrides = [f"model.backbone={backbone}", *tiny(tiny_synthetic, work, task, 20)]
    name = "segmentation" if task == "seg" else "detection"
    assert train_from_cli(name, "test", [config, "--no-progress", "--set", *overrides]) == 0
    losses = step_losses(capsys.readouterr().err)
    assert len(losses) == 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(
        f"{task} {backbone}: loss step 1 {losses[0]:.3f}, step 20 {losses[-1]:.3f}; "
        f"mean of steps 1-5 {first:.3f}, 16-20 {last:.3f}"
    )
    assert last < 0.9 * first
    trained = json.loads((work / "metrics.json").read_text())
    assert trained.pop("iter") == 20 and trained["images_evaluated"] == 2
    # the checkpoint alone: the eval tool rebuilds the backbone and gets the same numbers
    run_eval_tool(
        f"eval_{task}",
        ["--weights", str(work / "best.pt"), "--out", str(tmp_path / "ev")],
        monkeypatch,
    )
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for metrics in (evaluated, trained):
        metrics.pop("ms_per_image", None)  # a timing (segmentation)
    assert evaluated == trained
    predictor = Predictor.from_checkpoint(work / "best.pt", device="cpu")
    assert predictor.cfg.model.backbone == backbone
    out = predictor(val_image(tiny_synthetic))
    assert out.shape == (64, 128) if task == "seg" else set(out) >= {"boxes", "scores", "labels"}


@pytest.mark.parametrize(
    "backbone", ["mobilenet_v2", "tv:resnet18", pytest.param("timm:regnetx_002", marks=TIMM)]
)
def test_train_seg_tool_swaps_backbone_and_its_checkpoint_remembers_it(
    backbone, run_tool, tiny_synthetic, tmp_path, monkeypatch, capsys
):
    work = tmp_path / "run"
    argv = [
        SEG_CONFIG,
        "--no-progress",
        "--set",
        f"model.backbone={backbone}",
        *tiny(tiny_synthetic, work, "seg", 2),
    ]
    if backbone.startswith("tv:"):  # the tool itself, once
        proc = run_tool("train_seg.py", *argv)
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert train_from_cli("segmentation", "test", argv) == 0
    saved = torch.load(work / "best.pt")["config"]["model"]
    assert saved["backbone"] == backbone and saved["name"] == "lraspp_mobilenet_v3_large"
    run_eval_tool(
        "eval_seg", ["--weights", str(work / "best.pt"), "--out", str(tmp_path / "ev")], monkeypatch
    )
    assert "mIoU" in capsys.readouterr().out
    predictor = Predictor.from_checkpoint(work / "best.pt", device="cpu")
    assert predictor(val_image(tiny_synthetic)).shape == (64, 128)


def readme_backbones() -> str:
    """The "## The backbones" section of ``docs/backbones.md`` (its commands and examples)."""
    text = (ROOT / "docs" / "backbones.md").read_text()
    return text.split("\n## The backbones\n", 1)[1].split("\n## ", 1)[0]


def test_readme_backbone_commands_run_as_written(tiny_synthetic, tmp_path, monkeypatch, capsys):
    """Each command of docs/backbones.md's "The backbones" section, run from a fresh folder with
    the data and length made tiny by appended ``--set`` options (the page's own options are kept),
    and its Python examples."""
    section = readme_backbones()
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        exec(compile(block, "docs/backbones.md (The backbones)", "exec"), {})
    commands = [
        line.strip() for line in section.splitlines() if line.strip().startswith("python tools/")
    ]
    assert len(commands) >= 4
    if importlib.util.find_spec("timm") is None:
        commands = [c for c in commands if "timm:" not in c]
    monkeypatch.chdir(tmp_path)
    for command in commands:
        words = shlex.split(command)
        tool, argv = Path(words[1]).stem, words[2:]
        if tool.startswith("train_"):
            task = tool.removeprefix("train_")
            config = argv[0]
            argv = [
                str(ROOT / config),
                *argv[1:],
                "--no-progress",
                "--set",
                *tiny(tiny_synthetic, None, task, 2),
            ]
            assert (
                train_from_cli("segmentation" if task == "seg" else "detection", "test", argv) == 0
            ), command
        else:
            run_eval_tool(tool, argv, monkeypatch)
        capsys.readouterr()
