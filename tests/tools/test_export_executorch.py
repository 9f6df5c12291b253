"""tools/export.py --format executorch: fp32 and int8 ``.pte`` files that the eval tools, the
Predictor and ``load_model`` run with ``--weights``, matching PyTorch; one-line errors for the
options that do not apply."""

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("executorch")

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.executorch, pytest.mark.usefixtures("one_thread")]


def export(run_in_process, *argv: str) -> tuple[int, str, str]:
    from tools.export import main

    return run_in_process(main, list(argv))


@pytest.fixture(scope="module")
def seg_files(fitted_seg_checkpoint, tmp_path_factory):
    """The fitted LR-ASPP-Small checkpoint and its fp32 and int8 ``.pte`` files at 64x128."""
    from tools.export import main

    folder = tmp_path_factory.mktemp("pte")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = [
        "--weights",
        str(fitted_seg_checkpoint),
        "--format",
        "executorch",
        "--input-size",
        "64",
        "128",
    ]
    try:
        assert main([*base, "--out", str(folder / "seg")]) == 0  # the suffix is added
        assert (
            main([*base, "--int8", "--calib-images", "3", "--out", str(folder / "seg_int8.pte")])
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    return fitted_seg_checkpoint, folder / "seg.pte", folder / "seg_int8.pte"


def test_options_that_do_not_apply_are_one_line(run_in_process, tmp_path):
    ckpt = str(tmp_path / "none.pt")  # each is refused before the checkpoint is read
    cases = [
        (
            ["--format", "onnx", "--int8"],
            "--int8 applies to --format executorch",
            "tools/quantize.py",
        ),
        (
            ["--format", "executorch", "--calib-images", "4"],
            "--calib-images sets the calibration of --int8",
        ),
        (
            ["--format", "executorch", "--int8", "--calib-images", "0"],
            "--calib-images must be at least 1",
        ),
        (["--format", "executorch", "--postprocess"], "a .pte outputs the raw predictions"),
        (
            ["--format", "executorch", "--out", str(tmp_path / "m.onnx")],
            "an ExecuTorch file's name ends in .pte",
            "choose --out",
        ),
        (
            ["--format", "onnx", "--out", str(tmp_path / "m.pte")],
            "an ONNX file's name ends in .onnx, not .pte",
        ),
    ]
    for argv, *needles in cases:
        if "--out" not in argv:
            argv = [*argv, "--out", str(tmp_path / "m")]
        code, _, err = export(run_in_process, "--weights", ckpt, *argv)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert all(n in lines[0] for n in needles), (needles, lines[0])


def test_missing_executorch_says_what_to_install(run_in_process, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "executorch", None)  # import fails as if not installed
    code, _, err = export(
        run_in_process,
        "--weights",
        str(tmp_path / "none.pt"),
        "--format",
        "executorch",
        "--out",
        str(tmp_path / "m.pte"),
    )
    assert code == 2 and err.strip() == (
        "error: --format executorch needs the 'executorch' package, which is "
        "not installed: pip install densemnv3[executorch]"
    )


@pytest.mark.slow
def test_a_multitask_pte_runs_as_the_pytorch_model(tmp_path):
    """One program, both heads: the logits at stride 8 and SSDLite's tensors, as PyTorch's."""
    from densemnv3.benchmark.models import calibrate_bn_
    from densemnv3.checkpoint.pte import read_pte_metadata
    from densemnv3.config import ModelConfig
    from densemnv3.export.pte import export_executorch
    from densemnv3.models import build_model
    from densemnv3.runtimes import ExportedMultiTask, exported_model
    from densemnv3.runtimes.executorch_engine import ExecuTorchEngine

    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            name="multitask_mobilenet_v3_small",
            num_classes=4,
            options={"det_num_classes": 3, "score_thresh": 0.2},
        )
    )
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    calibrate_bn_(model, lambda: model.network(images))
    report = export_executorch(
        model,
        tmp_path / "mt.pte",
        input_size=(64, 96),
        metadata={"task": "multitask", "arch": "multitask_mobilenet_v3_small"},
    )
    assert report.ok and report.outputs == "multitask_raw", report.summary()
    meta = read_pte_metadata(tmp_path / "mt.pte")
    assert meta["outputs"] == "multitask_raw" and meta["task"] == "multitask"
    exported = exported_model(tmp_path / "mt.pte", meta, model, ExecuTorchEngine)
    assert isinstance(exported, ExportedMultiTask)
    with torch.no_grad():
        got, expected = exported.network(images[:1]), model.network(images[:1])
        assert got[0].shape == (1, 4, 8, 12)
        assert all(torch.allclose(g, e, atol=1e-4) for g, e in zip(got, expected))
        out = exported(images[:1])
    replay = model.det.postprocess(*got[1:], (64, 96))
    assert out.logits.shape == (1, 4, 64, 96)
    assert all(
        torch.equal(a[k], b[k]) for a, b in zip(out.detections, replay) for k in ("boxes", "labels")
    )


@pytest.mark.slow
def test_fp32_pte_matches_pytorch_and_describes_itself(seg_files, tiny_synthetic):
    from densemnv3.checkpoint.pte import read_pte_metadata
    from densemnv3.load import load_model
    from densemnv3.runtimes import ExportedSegmenter
    from densemnv3.tasks import build_task

    checkpoint, fp32, _ = seg_files
    reference = load_model(None, checkpoint)
    loaded = load_model(None, fp32)
    assert isinstance(loaded.model, ExportedSegmenter) and loaded.model.runtime == "executorch"
    assert loaded.checkpoint.description == (
        "an fp32 ExecuTorch segmentation model of lraspp_mobilenet_v3_small (tools/export.py)"
    )
    metadata = read_pte_metadata(fp32)
    assert metadata["input_size"] == (64, 128) and metadata["outputs"] == "logits_raw"  # stride 8
    assert metadata["precision"] == "fp32" and metadata["task"] == "segmentation"
    # the config as trained, and the size the file takes, which the tools resize frames to
    assert loaded.cfg.data.eval_resize == (64, 128)
    loaded.cfg.data.eval_resize = reference.cfg.data.eval_resize
    assert loaded.cfg == reference.cfg
    val = build_task(reference.cfg).dataset("val", train=False)
    for i in range(len(val)):
        image = val[i][0][None]
        with torch.no_grad():
            expected = reference.model.eval()(image)
        torch.testing.assert_close(
            loaded.model(image), expected, atol=1e-4, rtol=1e-4
        )  # measured 3e-7


@pytest.mark.slow
def test_int8_pte_agrees_with_fp32(seg_files, tiny_synthetic):
    from densemnv3.load import load_model
    from densemnv3.tasks import build_task

    checkpoint, _, int8 = seg_files
    loaded = load_model(None, int8)
    assert loaded.checkpoint.description.startswith("an int8 ExecuTorch segmentation model")
    state = loaded.checkpoint.state
    assert state["precision"] == "int8" and state["calibration_images"] == 3
    assert (
        state["calibration_split"] == "train"
        and int8.stat().st_size < seg_files[1].stat().st_size / 2.5
    )
    reference = load_model(None, checkpoint).model.eval()
    val = build_task(loaded.cfg).dataset("val", train=False)
    for i in range(len(val)):
        image = val[i][0][None]
        with torch.no_grad():
            expected = reference(image)
        got = loaded.model(image)
        # this checkpoint's labels have wide margins (agreement 1.0); the int8 route on a network
        # with narrow ones: tests/runtimes/test_executorch.py
        assert (got.argmax(1) == expected.argmax(1)).float().mean() > 0.9
        assert float((got - expected).norm() / expected.norm()) < 0.05  # measured 0.004


@pytest.mark.slow
def test_predictor_and_eval_tool_run_the_pte(seg_files, tiny_synthetic, run_tool, tmp_path):
    import cv2

    from densemnv3.inference import Predictor

    checkpoint, fp32, _ = seg_files
    frame = cv2.imread(str(next((tiny_synthetic / "leftImg8bit" / "val").rglob("*.png"))))
    predictor = Predictor.from_checkpoint(fp32, threads=1)
    assert predictor.settings.describe().startswith("inference: cpu, fp32, executorch ")
    labels = predictor(frame)
    assert (labels == Predictor.from_checkpoint(checkpoint, device="cpu")(frame)).mean() > 0.99
    assert (
        predictor.model.engine().pool_threads() == 1
    )  # the Predictor's thread budget reached XNNPACK
    proc = run_tool("eval_seg.py", "--weights", str(fp32), "--out", str(tmp_path / "pte"))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "inference: cpu, fp32, executorch" in proc.stdout
    reference = run_tool(
        "eval_seg.py",
        "--weights",
        str(checkpoint),
        "--set",
        "data.eval_resize=[64,128]",
        "--out",
        str(tmp_path / "pt"),
    )
    assert reference.returncode == 0, reference.stderr
    scores = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("pte", "pt")]
    assert scores[0]["images_evaluated"] == 2 and scores[0]["mIoU"] == pytest.approx(
        scores[1]["mIoU"], abs=1e-6
    )


@pytest.mark.slow
def test_a_pte_cannot_be_exported_again(seg_files, run_in_process, tmp_path):
    _, fp32, _ = seg_files
    code, _, err = export(
        run_in_process, "--weights", str(fp32), "--format", "onnx", "--out", str(tmp_path / "m")
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert (
        "an fp32 ExecuTorch segmentation model" in lines[0]
        and "holds no PyTorch weights for export" in lines[0]
    )


@pytest.mark.slow
def test_detection_pte_gives_pytorchs_detections(run_in_process, export_checkpoints, tmp_path):
    """SSDLite's raw outputs from the ``.pte``, decoded and NMS'd by the tools: PyTorch's boxes."""
    from densemnv3.export.check import unmatched
    from densemnv3.load import load_model
    from densemnv3.models import ssdlite320_mobilenet_v3_small

    det = ssdlite320_mobilenet_v3_small(num_classes=4)
    det.load_state_dict(torch.load(export_checkpoints / "det.pt")["model"])
    code, out, err = export(
        run_in_process,
        str(export_checkpoints / "det_config.py"),
        "--weights",
        str(export_checkpoints / "det.pt"),
        "--format",
        "executorch",
        "--out",
        str(tmp_path / "det.pte"),
    )
    assert code == 0, err
    assert "input (1, 3, 128, 128) fixed" in out and "-> OK" in out
    loaded = load_model(None, tmp_path / "det.pte")
    assert loaded.checkpoint.state["outputs"] == "raw" and loaded.cfg.data.image_size == 128
    reference = det.eval()
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        image = torch.randn(1, 3, 128, 128, generator=generator)
        with torch.no_grad():
            expected = reference(image)[0]
        got = loaded.model(image)[0]
        assert len(expected["boxes"]) == 300  # detections_per_img: enough to compare
        assert unmatched(expected, got, box_tol=1e-3, score_tol=1e-5) == 0  # boxes within 1e-3 px
