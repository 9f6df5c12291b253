"""tools/export.py: ONNX and TorchScript files of both heads that match PyTorch at any batch size;
ONNX files at any height and width too, SSDLite's with its postprocess inside."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from densemnv3.cli.entry import run_main
from densemnv3.export.check import unmatched
from densemnv3.models import lraspp_mobilenet_v3_small, ssdlite320_mobilenet_v3_small

ROOT = Path(__file__).resolve().parents[2]
SEG_CONFIG = ROOT / "configs" / "lraspp_mnv3small_cityscapes.py"


pytestmark = pytest.mark.usefixtures("one_thread")


def load_tool():
    spec = importlib.util.spec_from_file_location("export_tool", ROOT / "tools" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return load_tool()


@pytest.fixture(scope="module")
def checkpoints(export_checkpoints):
    return export_checkpoints


def run(tool, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: tool.main(argv))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("head", ["seg", "det"])
def test_export_matches_pytorch_at_batch_1_and_3(tool, checkpoints, tmp_path, capsys, head, fmt):
    config = SEG_CONFIG if head == "seg" else checkpoints / "det_config.py"
    out = tmp_path / f"{head}.{fmt}"
    argv = [
        str(config),
        "--weights",
        str(checkpoints / f"{head}.pt"),
        "--format",
        fmt,
        "--out",
        str(out),
    ]
    if head == "seg":
        argv += ["--input-size", "64", "96"]
    if head == "det" and fmt == "onnx":  # the graph's own postprocess, checked against SSDLite's
        argv += ["--postprocess"]
    code, stdout, stderr = run(tool, argv, capsys)
    assert code == 0, stderr
    assert "batch 1:" in stdout and "batch 3:" in stdout and "-> OK" in stdout
    if fmt == "onnx" and head == "det":  # one file for every size: checked at a second one too
        assert "128x128 batch 1: same, 128x128 batch 3: same, 96x160 batch 2: same) -> OK" in stdout
    if fmt == "onnx" and head == "seg":  # pool='paper' at 64x96: below its fixed window, so fixed
        assert "note: pool='paper'" in stdout and "takes that size only" in stdout
    assert stdout.startswith(
        "inference: cpu, fp32, NCHW, compile off, cuda-graphs off (the file runs on any"
    )
    assert (
        out.is_file()
        and out.stat().st_size > 1e6
        and f"{out.stat().st_size / 2**20:.2f} MiB" in stdout
    )
    assert list(tmp_path.iterdir()) == [out]  # one self-contained file, no temp left behind

    images = torch.randn(2, 3, *((64, 96) if head == "seg" else (128, 128)))
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["images"]
        dynamic = (
            [str, int, int, int] if head == "seg" else [str, int, str, str]
        )  # N (and H, W) dynamic
        assert [type(d) for d in session.get_inputs()[0].shape] == dynamic
        names = [o.name for o in session.get_outputs()]
        outputs = session.run(None, {"images": images.numpy()})
    else:
        outputs = torch.jit.load(str(out))(images)
        outputs, names = (outputs if isinstance(outputs, tuple) else (outputs,)), None
    if head == "seg":  # the logits at stride 8 (the tools take the labels of their upsampling)
        assert names in (None, ["logits"]) and tuple(outputs[0].shape) == (2, 19, 8, 12)
    elif fmt == "onnx":
        assert names == ["num_detections", "boxes", "scores", "labels"]
        count, boxes, scores, labels = (torch.as_tensor(o) for o in outputs)
        assert (
            count.shape == (2,)
            and boxes.shape[:2] == scores.shape == labels.shape
            and boxes.shape[2] == 4
        )
        from densemnv3.load import load_model

        detector = load_model(
            None, out, runtime="onnxruntime"
        ).model  # fp32 exactly (auto may be bf16)
        model = ssdlite320_mobilenet_v3_small(num_classes=4)
        model.load_state_dict(torch.load(checkpoints / "det.pt")["model"])
        images = torch.randn(2, 3, 160, 96)  # a third size, through the file's loader
        with torch.no_grad():
            expected, got = model.eval()(images), detector(images)
        assert all(unmatched(e, g) == 0 and len(g["scores"]) > 0 for e, g in zip(expected, got))
    else:
        boxes, scores = (torch.as_tensor(o) for o in outputs)
        assert names in (None, ["boxes", "scores"])
        assert boxes.shape[:2] == scores.shape[:2] and boxes.shape[2] == 4 and scores.shape[2] == 4
        assert torch.allclose(scores.sum(-1), torch.ones(1), atol=1e-5)
        assert boxes.min() >= 0 and boxes.max() <= 128


@pytest.mark.slow
def test_full_size_logits_put_the_upsample_in_the_graph(tool, checkpoints, tmp_path, capsys):
    """--full-size-logits: logits at the input size, as the model's forward; both files give the
    model's logits through the loader (the stride-8 file upsampled outside the graph)."""
    import onnxruntime as ort

    from densemnv3.load import load_model
    from densemnv3.runtimes import read_metadata

    model = load_model(SEG_CONFIG, checkpoints / "seg.pt").model.eval()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(images)
    for flag, outputs, shape in (
        ([], "logits_raw", (2, 19, 8, 12)),
        (["--full-size-logits"], "logits", (2, 19, 64, 96)),
    ):
        out = tmp_path / f"seg{len(flag)}.onnx"
        argv = [
            str(SEG_CONFIG),
            "--weights",
            str(checkpoints / "seg.pt"),
            "--format",
            "onnx",
            "--out",
            str(out),
            "--input-size",
            "64",
            "96",
            *flag,
        ]
        code, stdout, stderr = run(tool, argv, capsys)
        assert code == 0 and "-> OK" in stdout, stderr
        assert read_metadata(out)["outputs"] == outputs
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert session.run(None, {"images": images.numpy()})[0].shape == shape
        exported = load_model(None, out, runtime="onnxruntime").model
        with torch.no_grad():
            assert torch.allclose(exported(images), expected, atol=1e-3)
            assert exported.network(images).shape == shape
    argv = [
        str(checkpoints / "det_config.py"),
        "--weights",
        str(checkpoints / "det.pt"),
        "--format",
        "onnx",
        "--out",
        str(tmp_path / "det.onnx"),
        "--full-size-logits",
    ]
    code, _, stderr = run(tool, argv, capsys)
    assert code == 2 and "--full-size-logits applies to segmentation models" in stderr


def test_exported_detector_reproduces_its_postprocess(checkpoints):
    """boxes/scores of the export module + per-class NMS = SSDLite's own detections."""
    from torchvision.ops import batched_nms

    from densemnv3.export.graphs import SSDLiteExport

    model = ssdlite320_mobilenet_v3_small(num_classes=4, score_thresh=0.3, topk_candidates=10**4)
    model.load_state_dict(torch.load(checkpoints / "det.pt")["model"])
    model.eval()
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected = model(images)[0]
        boxes, scores = SSDLiteExport(model)(images)
    scores = scores[0, :, 1:]
    anchor, label = (scores > model.score_thresh).nonzero(as_tuple=True)
    keep = batched_nms(boxes[0, anchor], scores[anchor, label], label, model.nms_thresh)[:300]
    assert len(keep) == len(expected["scores"]) > 0
    got_scores, got_boxes, got_labels = (
        scores[anchor, label][keep],
        boxes[0, anchor][keep],
        label[keep] + 1,
    )
    assert torch.allclose(got_scores.sort().values, expected["scores"].sort().values, atol=1e-6)
    for box, lab in zip(
        got_boxes, got_labels
    ):  # same detections; order may differ among tied scores
        assert (
            ((expected["boxes"] - box).abs().amax(1) < 1e-3) & (expected["labels"] == lab)
        ).any()


def test_postprocess_is_for_an_onnx_detector(tool, checkpoints, tmp_path, capsys):
    argv = [
        str(SEG_CONFIG),
        "--weights",
        str(checkpoints / "seg.pt"),
        "--format",
        "onnx",
        "--postprocess",
        "--out",
        str(tmp_path / "m.onnx"),
    ]
    assert_one_line_error(*run(tool, argv, capsys)[::2], 2, "--postprocess", "detection model")


def assert_one_line_error(code, stderr, expected_code, *needles):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == expected_code and len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_checkpoint_of_another_architecture_is_one_readable_line(
    tool, checkpoints, tmp_path, capsys
):
    argv = [
        str(SEG_CONFIG),
        "--weights",
        str(checkpoints / "det.pt"),
        "--format",
        "torchscript",
        "--out",
        str(tmp_path / "m.pt"),
    ]
    code, _, stderr = run(tool, argv, capsys)
    assert_one_line_error(
        code,
        stderr,
        2,
        f"{checkpoints / 'det.pt'}: a detection checkpoint",
        "builds a segmentation model",
    )
    assert not (tmp_path / "m.pt").exists()


def test_missing_checkpoint_and_unwritable_out(tool, checkpoints, tmp_path, capsys):
    argv = [
        str(SEG_CONFIG),
        "--weights",
        str(tmp_path / "nope.pt"),
        "--format",
        "onnx",
        "--out",
        str(tmp_path / "m.onnx"),
    ]
    assert_one_line_error(*run(tool, argv, capsys)[::2], 2, "nope.pt", "not found")
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = [
        str(SEG_CONFIG),
        "--weights",
        str(checkpoints / "seg.pt"),
        "--format",
        "onnx",
        "--out",
        str(blocker / "m.onnx"),
    ]
    assert_one_line_error(*run(tool, argv, capsys)[::2], 2, "is a file, not a folder")


def test_missing_onnx_packages_say_what_to_install(
    tool, checkpoints, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    argv = [
        str(SEG_CONFIG),
        "--weights",
        str(checkpoints / "seg.pt"),
        "--format",
        "onnx",
        "--out",
        str(tmp_path / "m.onnx"),
    ]
    assert_one_line_error(
        *run(tool, argv, capsys)[::2], 2, "onnxruntime", "pip install densemnv3[export]"
    )


def test_a_failed_check_exits_with_code_1(checkpoints, tmp_path):
    from densemnv3.errors import ExportCheckError
    from densemnv3.export.onnx_export import export_model

    model = lraspp_mobilenet_v3_small(num_classes=19)
    model.load_state_dict(torch.load(checkpoints / "seg.pt")["model"])
    with pytest.raises(ExportCheckError, match="disagrees with PyTorch") as error:
        export_model(
            model, tmp_path / "m.pt", fmt="torchscript", input_size=(32, 32), tolerance=-1.0
        )
    assert error.value.exit_code == 1


@pytest.mark.slow
def test_a_self_describing_checkpoint_exports_without_a_config(tool, tmp_path, capsys):
    import dataclasses

    from densemnv3.config import load_config

    cfg = load_config(SEG_CONFIG, ["model.num_classes=3", "data.eval_resize=[800,800]"])
    torch.save(
        {
            "model": lraspp_mobilenet_v3_small(num_classes=3, pool="paper").state_dict(),
            "arch": cfg.model.name,
            "config": dataclasses.asdict(cfg),
        },
        tmp_path / "best.pt",
    )
    code, out, err = run(
        tool,
        [
            "--weights",
            str(tmp_path / "best.pt"),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "m.onnx"),
        ],
        capsys,
    )
    assert code == 0, err
    # the paper pool's window is fixed from 784x784 up: one file for all those sizes
    assert (
        "input (N, 3, 800, 800), H and W dynamic from 784x784 up" in out
        and "784x992 batch 2" in out
    )

    from densemnv3.errors import UserError
    from densemnv3.export.sizes import dynamic_size
    from densemnv3.load import load_model
    from densemnv3.runtimes import ExportedSegmenter

    # fp32 exactly: onnxruntime (auto may take OpenVINO's bf16 hint, checked by agreement elsewhere)
    onnx_file = load_model(None, tmp_path / "m.onnx", runtime="onnxruntime")
    checkpoint = load_model(None, tmp_path / "best.pt")
    assert isinstance(onnx_file.model, ExportedSegmenter) and onnx_file.cfg == checkpoint.cfg
    for size in ((784, 784), (800, 1056)):
        images = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert torch.allclose(
                onnx_file.model(images), checkpoint.model.eval()(images), atol=1e-3
            )
    with pytest.raises(UserError, match="takes inputs of at least 784x784"):
        onnx_file.model(torch.randn(1, 3, 400, 800))
    assert dynamic_size(lraspp_mobilenet_v3_small()) and not dynamic_size(
        checkpoint.model, (512, 1024)
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize(
    "task,backbone", [("segmentation", "tv:resnet18"), ("detection", "shufflenet_v2")]
)
def test_a_swapped_backbone_exports_from_its_checkpoint_alone(
    tool, tmp_path, capsys, task, backbone
):
    """The checkpoint records model.backbone: export rebuilds LR-ASPP on a torchvision ResNet
    (an FX graph module) or SSDLite on ShuffleNetV2, and the file matches PyTorch."""
    import dataclasses

    from densemnv3.config import Config, DataConfig, ModelConfig
    from densemnv3.models import build_model

    name = "lraspp" if task == "segmentation" else "ssdlite"
    cfg = Config(
        task=task,
        model=ModelConfig(name=name, num_classes=3, backbone=backbone),
        data=DataConfig(eval_resize=(64, 96), image_size=(64, 96)),
    )
    torch.manual_seed(0)
    model = build_model(cfg.model)
    torch.save(
        {"model": model.state_dict(), "arch": name, "config": dataclasses.asdict(cfg)},
        tmp_path / "best.pt",
    )
    code, out, err = run(
        tool,
        [
            "--weights",
            str(tmp_path / "best.pt"),
            "--format",
            "torchscript",
            "--out",
            str(tmp_path / "m.pt"),
        ],
        capsys,
    )
    assert code == 0, err
    assert f"exporting {name} (torchscript, input (N, 3, 64, 96))" in out and "-> OK" in out
