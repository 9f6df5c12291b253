"""The tools never write where they should not: evaluation reads a data root and never generates
one, the generator replaces only a set of its own, and an evaluation never overwrites a training
run's ``metrics.json``."""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from densemnv3.cli.commands import default_output_dir

ROOT = Path(__file__).resolve().parents[2]
SEG_CONFIG = ROOT / "configs" / "lraspp_synthetic.py"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> the SHA-256 of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synthetic_trained(fitted_seg_checkpoint, tmp_path_factory) -> Path:
    """The fitted checkpoint, recording a config that trains on the built-in synthetic set (as
    the README's main job does) at a data root that does not exist here."""
    from densemnv3.config import load_config

    state = torch.load(fitted_seg_checkpoint, weights_only=True)
    folder = tmp_path_factory.mktemp("synthetic_trained")
    cfg = load_config(
        SEG_CONFIG,
        [
            "model.name=lraspp_mobilenet_v3_small",
            "data.cache_images=False",
            f"data.root={folder / 'never_made'}",
            "data.synthetic.train=4",
            "data.synthetic.val=2",
            "data.synthetic.size=[64,128]",
        ],
    )
    assert cfg.data.synthetic is not None
    state["config"] = dataclasses.asdict(cfg)
    torch.save(state, folder / "best.pt")
    return folder / "best.pt"


def users_own_data(tiny_synthetic: Path, folder: Path) -> Path:
    """A Cityscapes-layout folder of the user's: the tiny set's images and labels without the
    generator's markers, and a file of notes."""
    shutil.copytree(
        tiny_synthetic, folder, ignore=shutil.ignore_patterns(".complete", ".in_progress")
    )
    (folder / "notes.txt").write_text("my own labels, do not touch\n")
    return folder


def test_eval_reads_the_users_data_root_and_changes_nothing(
    synthetic_trained, tiny_synthetic, tmp_path, run_in_process
):
    from densemnv3.cli.eval_seg import main

    data = users_own_data(tiny_synthetic, tmp_path / "my_data")
    before = snapshot(data)
    code, out, err = run_in_process(
        main,
        [
            "--weights",
            str(synthetic_trained),
            "--out",
            str(tmp_path / "eval"),
            "--set",
            f"data.root={data}",
        ],
    )
    assert code == 0, err
    assert "generating" not in out + err and "mIoU" in out
    assert snapshot(data) == before


def test_eval_never_generates_a_missing_data_root(synthetic_trained, tmp_path, run_in_process):
    from densemnv3.cli.eval_seg import main

    missing = tmp_path / "nothing_here"
    code, out, err = run_in_process(
        main,
        [
            "--weights",
            str(synthetic_trained),
            "--out",
            str(tmp_path / "eval"),
            "--set",
            f"data.root={missing}",
        ],
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {missing}: "), err
    assert "make_synthetic" in lines[0]
    assert not missing.exists() and "generating" not in out


def test_make_synthetic_replaces_only_a_set_of_its_own(tiny_synthetic, tmp_path, run_in_process):
    """An earlier synthetic set with a user's file added: the generator refuses, naming the file,
    and leaves every file as it was; the set alone is replaced."""
    from densemnv3.cli.make_synthetic import main

    data = tmp_path / "set"
    shutil.copytree(tiny_synthetic, data)
    mine = data / "leftImg8bit" / "val" / "my_city" / "my_photo_leftImg8bit.png"
    mine.parent.mkdir()
    mine.write_bytes(b"not really a png")
    before = snapshot(data)
    code, _, err = run_in_process(
        main, ["--out", str(data), "--train", "2", "--val", "1", "--size", "64", "128"]
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(
        f"error: {data} holds 1 files the synthetic generator did not write (e.g. {mine})"
    ), lines[0]
    assert snapshot(data) == before
    mine.unlink()
    code, out, err = run_in_process(
        main, ["--out", str(data), "--train", "2", "--val", "1", "--size", "64", "128"]
    )
    assert code == 0, err
    counts = json.loads((data / ".complete").read_text())
    assert (counts["train"], counts["val"]) == (2, 1)


@pytest.mark.slow
def test_evaluating_an_exported_file_keeps_the_runs_metrics(
    fitted_seg_checkpoint, tmp_path, run_in_process
):
    """An ONNX file exported into a training run's folder and evaluated without --out: the run's
    metrics.json stays as training wrote it; the results go to eval/<file>/, which the tool
    names."""
    pytest.importorskip("onnxruntime")
    from densemnv3.cli.eval_seg import main as eval_main
    from densemnv3.cli.export import main as export_main

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(fitted_seg_checkpoint, run / "best.pt")
    record = json.dumps({"iter": 20, "mIoU": 0.25}, indent=2)
    (run / "metrics.json").write_text(record)
    code, _, err = run_in_process(
        export_main,
        ["--weights", str(run / "best.pt"), "--format", "onnx", "--out", str(run / "model.onnx")],
    )
    assert code == 0, err
    for weights in ("model.onnx", "best.pt"):
        code, out, err = run_in_process(
            eval_main,
            ["--weights", str(run / weights), "--runtime", "onnxruntime"]
            if weights.endswith(".onnx")
            else ["--weights", str(run / weights)],
        )
        assert code == 0, err
        folder = default_output_dir(run / weights)
        assert folder == run / "eval" / weights.replace(".", "_")
        assert f"wrote {folder / 'metrics.json'}" in out
        assert json.loads((folder / "metrics.json").read_text())["images_evaluated"] == 2
    assert (run / "metrics.json").read_text() == record
