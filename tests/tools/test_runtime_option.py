"""``--runtime`` in the tools: every runtime scores an exported file as PyTorch does, and what a
runtime cannot run is one line."""

import json

import pytest
import torch

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fp32_file(fitted_seg_checkpoint):
    from tools.export import main

    out = fitted_seg_checkpoint.with_name("runtimes.onnx")
    assert (
        main(["--weights", str(fitted_seg_checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    )
    return out


def _eval(run_in_process, weights, out, *extra):
    from tools.eval_seg import main

    code, stdout, err = run_in_process(main, ["--weights", str(weights), "--out", str(out), *extra])
    assert code == 0, err
    return stdout, json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_every_runtime_scores_the_file_as_pytorch_does(
    runtime, fp32_file, fitted_seg_checkpoint, run_in_process, tmp_path
):
    if runtime == "openvino":
        pytest.importorskip("openvino")
    _, reference = _eval(run_in_process, fitted_seg_checkpoint, tmp_path / "pt")
    extra = ["--precision", "fp32"] if runtime == "openvino" else []
    stdout, metrics = _eval(
        run_in_process, fp32_file, tmp_path / runtime, "--runtime", runtime, *extra
    )
    assert f"inference: cpu, fp32, {runtime} " in stdout and f"--runtime {runtime}" in stdout
    assert metrics["mIoU"] == pytest.approx(reference["mIoU"], abs=1e-4)
    assert metrics["images_evaluated"] == reference["images_evaluated"] == 2


def test_auto_says_which_runtime_and_why(fp32_file, run_in_process, tmp_path):
    stdout, _ = _eval(run_in_process, fp32_file, tmp_path)
    line = next(line for line in stdout.splitlines() if line.startswith("inference: "))
    assert "auto: fastest here" in line or "the only installed runtime for onnx files" in line


def test_what_a_runtime_cannot_run_is_one_line(
    fp32_file, fitted_seg_checkpoint, run_in_process, assert_one_error_line, tmp_path
):
    from types import SimpleNamespace

    from tools.demo_video import main as demo
    from tools.eval_seg import main as eval_seg

    def check(tool, argv, *needles):
        code, _, err = run_in_process(tool, argv)
        assert_one_error_line(SimpleNamespace(returncode=code, stderr=err), *needles)

    check(
        eval_seg,
        ["--weights", str(fitted_seg_checkpoint), "--runtime", "onnxruntime"],
        "--runtime onnxruntime",
        "is a PyTorch checkpoint, which runs in torch; export it first",
    )
    check(
        eval_seg,
        ["--weights", str(fp32_file), "--runtime", "torch"],
        "--runtime torch",
        "is an ONNX file, which runs in openvino or onnxruntime",
    )
    check(
        eval_seg,
        ["--weights", str(fitted_seg_checkpoint), "--precision", "bf16"],
        "--precision",
        "is a PyTorch checkpoint, evaluated in fp32",
    )
    from densemnv3.data.synthetic import make_synthetic_video

    video = make_synthetic_video(tmp_path / "v.avi", frames=2, size=(64, 128))
    check(
        demo,
        [
            "--weights",
            str(fp32_file),
            "--source",
            str(video),
            "--runtime",
            "executorch",
            "--no-display",
        ],
        "--runtime executorch",
        "an ONNX file, which runs in openvino or onnxruntime",
    )
    torch.set_num_threads(1)
