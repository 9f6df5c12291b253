"""What the tool tests share: a checkpoint worth quantizing, running a tool's ``main`` in-process,
and the check that a tool failed with one readable line."""

import dataclasses
from pathlib import Path

import pytest
import torch

from densemnv3.cli.entry import run_main

SEG_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "lraspp_synthetic.py"


def one_error_line(proc, *needles: str, code: int = 2) -> str:
    """Exit ``code`` and exactly one stderr line, ``error: ...``, naming ``needles``; returns it."""
    assert proc.returncode == code, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.split("\n") if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def assert_one_error_line():
    """``assert_one_error_line(proc, *needles, code=2)``: see :func:`one_error_line`."""
    return one_error_line


@pytest.fixture
def run_in_process(capsys):
    """``run_in_process(tool_main, argv)`` through the tools' entry point -> (exit code, stdout,
    stderr)."""

    def run(tool_main, argv: list[str]) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            run_main(lambda: tool_main(argv))
        out = capsys.readouterr()
        return exit_info.value.code, out.out, out.err

    return run


DET_CONFIG = """
from densemnv3.config import Config, ModelConfig

cfg = Config(
    task="detection", model=ModelConfig(name="ssdlite320_mobilenet_v3_small", num_classes=4)
)
cfg.data.image_size = 128
"""


@pytest.fixture(scope="session")
def export_checkpoints(tmp_path_factory) -> Path:
    """A folder with ``seg.pt`` (LR-ASPP-Small, 19 classes), ``det.pt`` (SSDLite-Small, 4
    classes) and ``det_config.py``: random weights and BatchNorm statistics, so folding is
    exercised, and spread-out detection scores (with ties either of two equal boxes may win)."""
    from densemnv3.models import lraspp_mobilenet_v3_small, ssdlite320_mobilenet_v3_small

    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    seg, det = (
        lraspp_mobilenet_v3_small(num_classes=19),
        ssdlite320_mobilenet_v3_small(num_classes=4),
    )
    with torch.no_grad():
        for model in (seg, det):
            for name, t in model.state_dict().items():
                if name.endswith("running_var"):
                    t.uniform_(0.5, 2.0)
                elif t.is_floating_point():
                    t.normal_(0, 0.1)
        for module in det.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
    torch.save({"model": seg.state_dict()}, root / "seg.pt")
    torch.save({"model": det.state_dict()}, root / "det.pt")
    (root / "det_config.py").write_text(DET_CONFIG)
    return root


@pytest.fixture(scope="session")
def fitted_seg_checkpoint(tiny_synthetic, tmp_path_factory) -> Path:
    """A self-describing LR-ASPP-Small checkpoint, fitted for 20 steps to the tiny synthetic set
    (an untrained network's logits are nearly flat, so any rounding flips its labels)."""
    import torch.nn.functional as F

    from densemnv3.config import load_config
    from densemnv3.models import build_model
    from densemnv3.tasks import build_task

    root = tmp_path_factory.mktemp("fitted_seg")
    cfg = load_config(
        SEG_CONFIG,
        [
            "model.name=lraspp_mobilenet_v3_small",
            f"data.root={tiny_synthetic}",
            "data.synthetic=None",
            "data.cache_images=False",
            f"work_dir={root}",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg.model)
    train = build_task(cfg).dataset("train", train=False)
    images, labels = (torch.stack(t) for t in zip(*(train[i] for i in range(len(train)))))
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(20):
        loss = F.cross_entropy(model(images), labels.long(), ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    torch.save(
        {"model": model.state_dict(), "arch": cfg.model.name, "config": dataclasses.asdict(cfg)},
        root / "best.pt",
    )
    return root / "best.pt"
