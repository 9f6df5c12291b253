"""Weights files through the tools, told by their content: random bytes, a config or a TorchScript
file given as ``--weights`` get one line saying what they are; an ONNX file runs whatever its name;
``--out`` names get the format's suffix, or one line when theirs is another format's."""

import dataclasses
import random
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SEG_CONFIG = ROOT / "configs" / "lraspp_synthetic.py"


def seg_set(root: Path, work: Path) -> list[str]:
    values = {
        "model.name": "lraspp_mobilenet_v3_small",
        "data.root": root,
        "data.synthetic": None,
        "data.cache_images": False,
        "work_dir": work,
    }
    return ["--set", *(f"{k}={v}" for k, v in values.items())]


@pytest.mark.parametrize("kind", ["random_bytes", "python_config", "pickled_module"])
def test_eval_says_what_a_file_that_is_no_checkpoint_is(
    run_tool, assert_one_error_line, tiny_synthetic, tmp_path, kind
):
    if kind == "random_bytes":
        weights, words = (
            tmp_path / "random.bin",
            "not a checkpoint at all (4096 bytes of unknown binary data)",
        )
        weights.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "python_config":
        weights, words = (
            tmp_path / "config.py",
            "a densemnv3 config (Python that sets cfg), not a checkpoint",
        )
        shutil.copy(SEG_CONFIG, weights)
    else:
        from densemnv3.models import lraspp_mobilenet_v3_small

        weights, words = tmp_path / "whole_model.pt", "holds pickled Python objects"
        torch.save(lraspp_mobilenet_v3_small(), weights)
    proc = run_tool(
        "eval_seg.py",
        str(SEG_CONFIG),
        "--weights",
        str(weights),
        "--out",
        str(tmp_path / "out"),
        *seg_set(tiny_synthetic, tmp_path / "run"),
    )
    assert_one_error_line(proc, f"{weights}: {words}")
    assert ("pickled" in proc.stderr) == (kind == "pickled_module")


@pytest.fixture(scope="module")
def random_weights(tiny_synthetic, tmp_path_factory) -> Path:
    """A self-describing LR-ASPP-Small checkpoint with random weights."""
    from densemnv3.config import load_config
    from densemnv3.models import build_model

    root = tmp_path_factory.mktemp("random_weights")
    cfg = load_config(SEG_CONFIG, seg_set(tiny_synthetic, root)[1:])
    torch.manual_seed(0)
    torch.save(
        {
            "model": build_model(cfg.model).state_dict(),
            "arch": cfg.model.name,
            "config": dataclasses.asdict(cfg),
        },
        root / "best.pt",
    )
    return root / "best.pt"


@pytest.mark.parametrize(
    "fmt,out,use",
    [
        ("onnx", "m.pt", "m.onnx"),
        ("torchscript", "m.onnx", "m.pt"),
        ("onnx", "m.safetensors", "m.onnx"),
    ],
)
def test_export_out_with_another_formats_suffix_is_one_line(
    random_weights, tmp_path, run_in_process, fmt, out, use
):
    from tools.export import main

    code, _, err = run_in_process(
        main, ["--weights", str(random_weights), "--format", fmt, "--out", str(tmp_path / out)]
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / out}: "), err
    assert f"choose --out {tmp_path / use}" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_export_out_without_a_suffix_gets_the_formats(
    random_weights, run_tool, assert_one_error_line, tmp_path, run_in_process
):
    from tools.export import main

    code, out, err = run_in_process(
        main,
        [
            "--weights",
            str(random_weights),
            "--format",
            "torchscript",
            "--out",
            str(tmp_path / "model"),
        ],
    )
    assert code == 0, err
    assert out.startswith(
        f"writing {tmp_path / 'model.pt'} (--out {tmp_path / 'model'} does not end in .pt)"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    proc = run_tool(
        "eval_seg.py", "--weights", str(tmp_path / "model.pt"), "--out", str(tmp_path / "ev")
    )
    assert_one_error_line(
        proc, f"{tmp_path / 'model.pt'}: a TorchScript model (as tools/export.py writes)"
    )


@pytest.mark.slow
def test_quantize_out_without_a_suffix_writes_an_onnx_file_the_tools_run(
    fitted_seg_checkpoint, run_tool, tmp_path, run_in_process, one_thread
):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tools.quantize import main

    code, out, err = run_in_process(
        main,
        [
            "--weights",
            str(fitted_seg_checkpoint),
            "--calib-images",
            "3",
            "--no-progress",
            "--out",
            str(tmp_path / "model_int8"),
        ],
    )
    written = tmp_path / "model_int8.onnx"
    assert code == 0, err
    assert out.startswith(
        f"writing {written} (--out {tmp_path / 'model_int8'} does not end in .onnx)"
    )
    assert f"wrote {written} (" in out and [p.name for p in tmp_path.iterdir()] == [
        "model_int8.onnx"
    ]
    unnamed = (
        tmp_path / "int8_weights"
    )  # the same file under a name that says nothing: read by content
    shutil.copy(written, unnamed)
    for weights in (written, unnamed):
        proc = run_tool(
            "eval_seg.py", "--weights", str(weights), "--out", str(tmp_path / f"ev_{weights.name}")
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "int8" in proc.stdout and "mIoU" in proc.stdout


def test_a_torch_checkpoint_named_onnx_is_read_as_torch(random_weights, tmp_path):
    from densemnv3.load import load_model

    named = tmp_path / "best.onnx"
    shutil.copy(random_weights, named)
    loaded = load_model(None, named)
    assert loaded.checkpoint.format == "pytorch" and isinstance(loaded.model, torch.nn.Module)
    assert loaded.checkpoint.description == (
        "a segmentation checkpoint of lraspp_mobilenet_v3_small (densemnv3 training)"
    )
