"""Another model's ONNX graph carrying the metadata of a real densemnv3 export, and a densemnv3 file
whose weights are NaN: refused when opened, by the eval tool, the demo and the Predictor alike, in
one line naming the file and what differs — never a runtime's traceback, never a silent score."""

from pathlib import Path

import pytest
import torch
from torch import nn

from densemnv3.errors import CheckpointError

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
torchvision = pytest.importorskip("torchvision")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

DIFFERS = "its graph is not the model its densemnv3 metadata describes: "
#: What each foreign graph is told by, after the file's name.
FOREIGN = {
    # torchvision's classifier, fixed at 224x224 (onnxruntime once said "Got: 256 Expected: 224")
    "classifier": DIFFERS
    + "its input 'images' is [1, 3, 224, 224], its metadata (outputs: logits_raw, "
    "19 classes, input dynamic) implies [N, 3, H, W]",
    # torchvision's LR-ASPP: logits upsampled to the input in the graph, where stride 8 is declared
    "lraspp": DIFFERS
    + "output 'logits' is [batch, 19, height, width], its metadata (outputs: logits_raw, "
    "19 classes, input dynamic) implies [N, 19, H/8, W/8]",
}


class _Out(nn.Module):
    """torchvision's segmentation model's ``out`` alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images)["out"]


def _with_metadata(proto, source: Path, path: Path) -> Path:
    """``proto`` saved at ``path`` with the ``densemnv3.*`` metadata of the file at ``source``."""
    del proto.metadata_props[:]
    for entry in onnx.load(str(source), load_external_data=False).metadata_props:
        proto.metadata_props.add(key=entry.key, value=entry.value)
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def files(fitted_seg_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The fitted checkpoint's ONNX export (tools/export.py), torchvision's classifier and LR-ASPP
    with its metadata, and a copy of it with three NaN weights."""
    from densemnv3.cli.export import main

    folder = tmp_path_factory.mktemp("foreign")
    real = folder / "real.onnx"
    assert (
        main(["--weights", str(fitted_seg_checkpoint), "--format", "onnx", "--out", str(real)]) == 0
    )
    made = {"real": real}
    torch.manual_seed(0)
    classifier = torchvision.models.mobilenet_v3_small().eval()
    lraspp = _Out(
        torchvision.models.segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=19
        )
    ).eval()
    dims = {
        0: torch.export.Dim("batch"),
        2: torch.export.Dim("height", min=32, max=4096),
        3: torch.export.Dim("width", min=32, max=4096),
    }
    for name, model, example, shapes in (
        ("classifier", classifier, (1, 3, 224, 224), None),
        ("lraspp", lraspp, (2, 3, 128, 256), (dims,)),
    ):
        tmp = folder / f"{name}_plain.onnx"
        torch.onnx.export(
            model,
            (torch.randn(*example),),
            str(tmp),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        made[name] = _with_metadata(onnx.load(str(tmp)), real, folder / f"{name}.onnx")
    proto = onnx.load(str(real))
    weight = next(
        w
        for w in proto.graph.initializer
        if w.data_type == onnx.TensorProto.FLOAT and len(onnx.numpy_helper.to_array(w).ravel()) > 3
    )
    values = onnx.numpy_helper.to_array(weight).copy()
    values.reshape(-1)[:3] = float("nan")
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    made["nan"], made["nan_weight"] = folder / "nan.onnx", weight.name
    onnx.save(proto, str(made["nan"]))
    return made


def _one_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    return lines[0]


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_eval_refuses_a_foreign_graph_with_copied_metadata(files, name, run_in_process, tmp_path):
    from densemnv3.cli.eval_seg import main

    code, out, err = run_in_process(main, ["--weights", str(files[name]), "--out", str(tmp_path)])
    assert _one_line(code, err).startswith(f"error: {files[name]}: {FOREIGN[name]}")
    assert "mIoU" not in out


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_demo_and_predictor_refuse_a_foreign_graph(files, name, run_in_process, tmp_path):
    from densemnv3.cli.demo import main
    from densemnv3.data.synthetic import make_synthetic_video
    from densemnv3.inference import Predictor

    source = make_synthetic_video(tmp_path / "clip.avi", frames=2, size=(64, 128))
    code, _, err = run_in_process(
        main,
        [
            "--weights",
            str(files[name]),
            "--source",
            str(source),
            "--no-display",
            "--output",
            str(tmp_path / "out.mp4"),
        ],
    )
    assert _one_line(code, err).startswith(f"error: {files[name]}: {FOREIGN[name]}")
    assert not (tmp_path / "out.mp4").exists()
    with pytest.raises(CheckpointError, match="implies"):
        Predictor.from_checkpoint(files[name], runtime="onnxruntime")


def test_the_real_export_opens_and_runs(files):
    import numpy as np

    from densemnv3.inference import Predictor

    predictor = Predictor.from_checkpoint(files["real"], runtime="onnxruntime", threads=1)
    labels = predictor(np.zeros((64, 128, 3), np.uint8))
    assert labels.shape == (64, 128)


def test_nan_weights_in_an_onnx_file_are_one_line_naming_the_count(files, run_in_process, tmp_path):
    from densemnv3.cli.eval_seg import main

    code, out, err = run_in_process(main, ["--weights", str(files["nan"]), "--out", str(tmp_path)])
    line = _one_line(code, err)
    assert line.startswith(f"error: {files['nan']}: its graph holds non-finite values in 1 of "), (
        line
    )
    assert f"{files['nan_weight']} (3 NaN)" in line and "mIoU" not in out
