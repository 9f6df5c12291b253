"""Weights holding NaN or inf through every tool: one line naming the tensors, never an output
derived from them; with the forensic override, the export check refuses a non-finite file."""

import re
from pathlib import Path

import pytest
import torch

from densemnv3.checkpoint.state import ALLOW_NON_FINITE
from densemnv3.errors import CheckpointError

POISONED = "backbone.features.0.0.weight"


@pytest.fixture(scope="module", params=["nan", "inf"])
def poisoned(request, fitted_seg_checkpoint, tmp_path_factory) -> tuple[Path, str]:
    """The fitted checkpoint with three values of its first convolution set to NaN or +inf, and
    the counts the message must give."""
    state = torch.load(fitted_seg_checkpoint, weights_only=True)
    weight = state["model"][POISONED]
    assert torch.isfinite(weight).all()
    weight.view(-1)[:3] = float(request.param)
    path = tmp_path_factory.mktemp(f"poisoned_{request.param}") / "best.pt"
    torch.save(state, path)
    return path, "3 NaN" if request.param == "nan" else "3 +inf"


def _assert_refused(code: int, out: str, err: str, path: Path, counts: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {path}: ") and "non-finite values" in lines[0], lines[0]
    assert f"{POISONED} ({counts})" in lines[0] and ALLOW_NON_FINITE in lines[0], lines[0]
    assert "mIoU" not in out and "wrote" not in out, out


def test_eval_refuses_non_finite_weights(poisoned, tmp_path, run_in_process):
    from densemnv3.cli.eval_seg import main

    path, counts = poisoned
    _assert_refused(
        *run_in_process(main, ["--weights", str(path), "--out", str(tmp_path / "eval")]),
        path,
        counts,
    )
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_refuses_non_finite_weights(poisoned, tmp_path, run_in_process, fmt):
    from densemnv3.cli.export import main

    path, counts = poisoned
    out = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    _assert_refused(
        *run_in_process(main, ["--weights", str(path), "--format", fmt, "--out", str(out)]),
        path,
        counts,
    )
    assert list(tmp_path.iterdir()) == []


def test_quantize_refuses_non_finite_weights(poisoned, tmp_path, run_in_process):
    pytest.importorskip("onnxruntime")
    from densemnv3.cli.quantize import main

    path, counts = poisoned
    _assert_refused(
        *run_in_process(
            main,
            [
                "--weights",
                str(path),
                "--calib-images",
                "2",
                "--no-progress",
                "--out",
                str(tmp_path / "int8.onnx"),
            ],
        ),
        path,
        counts,
    )
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_non_finite_weights(poisoned, tmp_path, run_in_process):
    from densemnv3.cli.demo import main
    from densemnv3.data.synthetic import make_synthetic_video

    path, counts = poisoned
    source = make_synthetic_video(tmp_path / "clip.avi", frames=2, size=(64, 128))
    out = tmp_path / "out.mp4"
    _assert_refused(
        *run_in_process(
            main,
            [
                "--weights",
                str(path),
                "--source",
                str(source),
                "--output",
                str(out),
                "--no-display",
                "--device",
                "cpu",
            ],
        ),
        path,
        counts,
    )
    assert not out.exists()


def test_predictor_refuses_non_finite_weights(poisoned):
    from densemnv3.inference import Predictor

    path, counts = poisoned
    with pytest.raises(CheckpointError, match=re.escape(f"{POISONED} ({counts})")):
        Predictor.from_checkpoint(path, device="cpu")


@pytest.mark.slow
def test_override_loads_and_the_export_check_refuses_the_file(
    poisoned, tmp_path, run_in_process, monkeypatch
):
    """With the forensic override the checkpoint loads, with a warning; the export's check then
    fails on the non-finite outputs (exit 1), where it once compared NaN with NaN and passed."""
    pytest.importorskip("onnxruntime")
    from densemnv3.cli.export import main

    path, _ = poisoned
    monkeypatch.setenv(ALLOW_NON_FINITE, "1")
    code, out, err = run_in_process(
        main, ["--weights", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]
    )
    assert code == 1, err
    assert err.startswith("warning: the checkpoint holds non-finite values in 1 of "), err
    assert "error: " in err and "PyTorch's outputs hold" in err and "non-finite values" in err, err
    assert "-> OK" not in out
