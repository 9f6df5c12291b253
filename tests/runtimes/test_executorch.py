"""The ExecuTorch engine: a ``.pte`` lowered to XNNPACK runs as PyTorch does, describes itself
(its metadata round-trips through a constant method), is told by its content, takes the thread
count it is given, and a damaged or foreign one is one :class:`CheckpointError` line; an int8
program stays close to fp32."""

import shutil

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("executorch")
pytestmark = pytest.mark.executorch

from densemnv3.checkpoint import pytorch_only  # noqa: E402
from densemnv3.checkpoint.files import sniff  # noqa: E402
from densemnv3.checkpoint.pte import pte_metadata_method, read_pte_metadata  # noqa: E402
from densemnv3.errors import CheckpointError  # noqa: E402
from densemnv3.export.pte import lower_to_xnnpack  # noqa: E402
from densemnv3.models import inspect_checkpoint, read_checkpoint  # noqa: E402
from densemnv3.models.resize import resize_bilinear  # noqa: E402
from densemnv3.runtimes import ExportedSegmenter, exported_model  # noqa: E402
from densemnv3.runtimes.executorch_engine import ExecuTorchEngine  # noqa: E402

SIZE = (16, 24)
#: Values of every type the metadata holds: a nested config, tuples, strings, numbers.
METADATA = {
    "config": {
        "model": {"name": "tiny", "options": {"k": [1, 2]}},
        "data": {"eval_resize": (16, 24)},
    },
    "task": "segmentation",
    "arch": "tiny",
    "outputs": "logits",
    "precision": "fp32",
    "input_size": SIZE,
    "calibration_images": 0,
    "scale": 0.5,
}


class Tiny(nn.Module):
    """Conv, hard-swish and an upsampling back to the input size: logits as an LR-ASPP gives."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.act = nn.Hardswish()

    def forward(self, x):
        return nn.functional.interpolate(
            self.act(self.conv(x)), size=x.shape[-2:], mode="bilinear", align_corners=False
        )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model, its ``.pte`` with densemnv3 metadata, and one without."""
    torch.manual_seed(0)
    model = Tiny().eval()
    folder = tmp_path_factory.mktemp("pte")
    for name, methods in (("tiny.pte", pte_metadata_method(METADATA)), ("foreign.pte", None)):
        (folder / name).write_bytes(lower_to_xnnpack(model, SIZE, constant_methods=methods).buffer)
    return model, folder / "tiny.pte", folder / "foreign.pte"


def test_metadata_round_trips_and_the_file_is_told_by_content(tiny, tmp_path):
    _, path, foreign = tiny
    assert path.read_bytes()[4:8] == b"ET12"  # ExecuTorch 1.x's flatbuffer file identifier
    assert read_pte_metadata(path) == METADATA
    assert read_pte_metadata(foreign) == {}
    renamed = tmp_path / "model.bin"
    shutil.copy(path, renamed)
    assert sniff(renamed) == "pte"
    info = inspect_checkpoint(renamed)
    assert (
        info.format == "pte"
        and info.exported
        and info.task == "segmentation"
        and info.arch == "tiny"
    )
    assert info.state == METADATA
    assert info.description == "an fp32 ExecuTorch segmentation model of tiny (tools/export.py)"


def test_engine_runs_the_program_as_pytorch(tiny):
    model, path, _ = tiny
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    (out,) = ExecuTorchEngine(path, 1, "fp32").run(x.numpy())
    assert isinstance(out, np.ndarray) and out.shape == (1, 4, *SIZE)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(torch.from_numpy(out), expected, atol=1e-5, rtol=1e-5)
    wrapped = exported_model(path, METADATA, model, ExecuTorchEngine)
    assert isinstance(wrapped, ExportedSegmenter) and wrapped.fixed_size == SIZE
    torch.testing.assert_close(wrapped(x), expected, atol=1e-5, rtol=1e-5)


def test_threads_reach_the_xnnpack_pool(tiny):
    model, path, _ = tiny
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(2)).numpy()
    one = ExecuTorchEngine(path, 1, "fp32")
    assert one.pool_threads() == 1
    expected = one.run(x)[0]
    two = ExecuTorchEngine(path, 2, "fp32")  # resizes the process's pool: `one`'s method is stale
    assert two.pool_threads() == 2
    np.testing.assert_allclose(
        one.run(x)[0], expected, atol=1e-6
    )  # loaded again on a 1-thread pool
    assert one.pool_threads() == 1
    np.testing.assert_allclose(two.run(x)[0], expected, atol=1e-5)
    assert two.pool_threads() == 2
    wrapped = exported_model(path, METADATA, model, ExecuTorchEngine)
    wrapped.threads = 1  # what Predictor.use_threads / the tools' thread budget set
    wrapped(torch.from_numpy(x))
    assert wrapped.engine().threads == 1 and wrapped.engine().pool_threads() == 1


def test_damaged_and_foreign_programs_are_one_line(tiny, tmp_path):
    _, path, foreign = tiny
    data = path.read_bytes()
    cut = tmp_path / "cut.pte"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        inspect_checkpoint(cut)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{cut}: not a readable ExecuTorch program")
    assert "write one with tools/export.py --format executorch" in message
    with pytest.raises(CheckpointError, match="ExecuTorch cannot load its forward method"):
        ExecuTorchEngine(cut, 1, "fp32")
    with pytest.raises(CheckpointError, match="an ExecuTorch program not written by densemnv3"):
        inspect_checkpoint(foreign)
    (tmp_path / "junk.pte").write_bytes(b"\x00\xff" * 100)
    with pytest.raises(
        CheckpointError, match=r"not a readable ExecuTorch program \(200 bytes, unknown binary"
    ):
        inspect_checkpoint(tmp_path / "junk.pte")
    with pytest.raises(CheckpointError, match="ExecuTorch program not found"):
        inspect_checkpoint(tmp_path / "missing.pte")


def test_a_pte_is_no_pytorch_checkpoint(tiny):
    _, path, _ = tiny
    with pytest.raises(
        CheckpointError,
        match=r"an ExecuTorch program \(.pte\), run by ExecuTorch, not a PyTorch "
        r"checkpoint; give the checkpoint it was exported from",
    ):
        read_checkpoint(path)
    with pytest.raises(
        CheckpointError,
        match="ExecuTorch segmentation model of tiny .*holds no PyTorch weights for export",
    ):
        pytorch_only(inspect_checkpoint(path), "export")


def _bn_calibrated_lraspp(images: list[torch.Tensor]) -> nn.Module:
    """A random LR-ASPP-Small whose BatchNorm statistics are those of ``images``: activations of a
    trained network's scale (random statistics make its logits all but constant), 19 classes that
    all win somewhere."""
    from densemnv3.models import lraspp_mobilenet_v3_small

    torch.manual_seed(0)
    model = lraspp_mobilenet_v3_small(num_classes=19)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # the average over all the batches
    with torch.no_grad():
        model.train()(torch.cat(images))
    return model.eval()


@pytest.mark.slow
def test_xnnpack_fp32_and_int8_stay_close_to_pytorch(tmp_path):
    """The figures behind FP32_TOLERANCE and the int8 check, on a network with spread-out logits."""
    from densemnv3.export.graphs import exportable
    from densemnv3.export.pte import FP32_TOLERANCE
    from densemnv3.inference.optimize import prepare_for_inference

    size, generator = (64, 128), torch.Generator().manual_seed(3)
    images = [
        nn.functional.interpolate(
            torch.randn(1, 3, 8, 16, generator=generator), size=size, mode="bilinear"
        )
        for _ in range(10)
    ]  # smooth, image-like inputs
    model = _bn_calibrated_lraspp(images)
    net, _ = exportable(prepare_for_inference(model))
    for name, calibration in (("fp32", None), ("int8", images[:8])):
        (tmp_path / f"{name}.pte").write_bytes(
            lower_to_xnnpack(net, size, calibration=calibration).buffer
        )
    fp32, int8 = (ExecuTorchEngine(tmp_path / f"{name}.pte", 2, name) for name in ("fp32", "int8"))
    agree = pixels = 0
    num = den = 0.0
    classes = set()
    noise = torch.randn(1, 3, *size, generator=generator)
    for x in [noise, *images[8:]]:
        with torch.no_grad():
            low, expected = model.network(x), model(x)  # the program's logits are at stride 8
        got = torch.from_numpy(fp32.run(x.numpy())[0])
        relative = float((got - low).abs().max() / low.abs().max())
        # measured 6e-7 on image-like inputs, 2e-5 on white noise (logits of ~150 there)
        assert relative < (FP32_TOLERANCE if x is noise else FP32_TOLERANCE / 100), relative
        if x is not noise:
            quantized = resize_bilinear(
                torch.from_numpy(int8.run(x.numpy())[0]), size
            )  # as the tools do
            agree += int((quantized.argmax(1) == expected.argmax(1)).sum())
            pixels += expected[:, 0].numel()
            num, den = (
                num + float(((quantized - expected) ** 2).sum()),
                den + float((expected**2).sum()),
            )
            classes |= set(expected.argmax(1).unique().tolist())
    assert len(classes) > 10
    # a random network has small margins: measured 0.845 agreement, 0.145 relative RMS (the int8
    # ONNX file of tools/quantize.py: 0.852 and 0.160 on the same network and images)
    assert agree / pixels > 0.8 and (num / den) ** 0.5 < 0.2, (agree / pixels, (num / den) ** 0.5)
