"""Weights files classified by their content, whatever their name, and the one-line message for
each kind that is no checkpoint (densemnv3.checkpoint.files, densemnv3.checkpoint)."""

import dataclasses
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from densemnv3.checkpoint.files import sniff
from densemnv3.config import load_config
from densemnv3.errors import CheckpointError
from densemnv3.models import inspect_checkpoint, read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SEG_CONFIG = ROOT / "configs" / "lraspp_synthetic.py"
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())


def onnx_file(path: Path, metadata: dict | None = None) -> Path:
    """A one-node ONNX model (Relu) written by onnx itself, with ``densemnv3.*`` metadata."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from densemnv3.runtimes import write_metadata

    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    proto = helper.make_model(graph, producer_name="pytorch")
    write_metadata(proto, metadata or {})
    onnx.save(proto, str(path))
    return path


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """One file of each kind, named so that the name says nothing."""
    made = {
        "empty": tmp_path / "empty",
        "zip": tmp_path / "zip",
        "pickle": tmp_path / "pickle",
        "torchscript": tmp_path / "torchscript",
        "text": tmp_path / "text",
        "config": tmp_path / "config",
        "random": tmp_path / "random",
    }
    made["empty"].write_bytes(b"")
    torch.save({"model": tiny().state_dict()}, made["zip"])
    torch.save({"model": tiny().state_dict()}, made["pickle"], _use_new_zipfile_serialization=False)
    torch.jit.save(torch.jit.trace(tiny(), torch.randn(1, 3, 8, 8)), str(made["torchscript"]))
    made["text"].write_text("hello, I am not a checkpoint\n")
    shutil.copy(SEG_CONFIG, made["config"])
    made["random"].write_bytes(random.Random(0).randbytes(4096))
    return made


def test_sniff_tells_each_kind_by_content(files, tmp_path):
    kinds = {name: sniff(path) for name, path in files.items()}
    assert kinds == {
        "empty": "empty",
        "zip": "zip",
        "pickle": "pickle",
        "torchscript": "torchscript",
        "text": "text",
        "config": "text",
        "random": "unknown binary",
    }
    assert sniff(onnx_file(tmp_path / "model")) == "onnx"


def test_sniff_finds_onnx_without_the_onnx_package(tmp_path, monkeypatch, files):
    path = onnx_file(tmp_path / "model")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import fails as if not installed
    assert sniff(path) == "onnx" and sniff(files["random"]) == "unknown binary"
    assert sniff(files["zip"]) == "zip" and sniff(files["text"]) == "text"


def test_random_bytes_are_never_onnx_or_text(tmp_path):
    path = tmp_path / "r"
    kinds = set()
    for seed in range(3000):
        path.write_bytes(random.Random(seed).randbytes(random.Random(seed).choice([16, 300, 4096])))
        kinds.add(sniff(path))
    assert kinds <= {"unknown binary", "pickle", "zip"}
    path.write_bytes(b"\x08\x0a" + random.Random(1).randbytes(4000))  # ir_version 10, then garbage
    assert sniff(path) == "unknown binary"


def message(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        inspect_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    return text[len(f"{path}: ") :]


def test_each_kind_that_is_no_checkpoint_says_what_it_is(files):
    assert message(files["empty"]).startswith("an empty file (0 bytes), not a checkpoint")
    assert message(files["random"]).startswith(
        "not a checkpoint at all (4096 bytes of unknown binary data)"
    )
    assert message(files["text"]).startswith(
        "a text file, not a checkpoint (it starts 'hello, I am not a checkpoint')"
    )
    assert message(files["config"]).startswith(
        "a densemnv3 config (Python that sets cfg), not a checkpoint; "
        "give it as the config (the first argument)"
    )
    assert message(files["torchscript"]).startswith(
        "a TorchScript model (as tools/export.py writes)"
    )
    for name in ("random", "text", "config", "empty", "torchscript"):
        assert "pickled" not in message(files[name])
        with pytest.raises(CheckpointError, match="not a checkpoint|TorchScript"):
            read_checkpoint(files[name])  # model.weights, backbone_weights


@pytest.mark.parametrize("zipped", [True, False])
def test_only_a_real_pickled_module_is_called_pickled_objects(tmp_path, zipped):
    path = tmp_path / "module.pt"
    torch.save(tiny(), path, _use_new_zipfile_serialization=zipped)
    assert sniff(path) == ("zip" if zipped else "pickle")
    assert message(path).startswith(
        "holds pickled Python objects (e.g. a whole nn.Module saved with "
        "torch.save(model)), which are not loaded, for safety"
    )


def test_truncated_files_keep_their_messages(files, tmp_path):
    for kind, ends in (
        ("zip", "the zip archive ends early"),
        ("pickle", "the pickle stream ends early"),
    ):
        path = tmp_path / f"cut_{kind}.pt"
        path.write_bytes(files[kind].read_bytes()[:300])
        assert sniff(path) == kind
        assert message(path).startswith(f"truncated checkpoint (300 bytes; {ends})")


def test_onnx_and_torch_files_are_read_by_content_not_suffix(files, tmp_path):
    # 3 classes: the one-node graph's output, which the metadata must describe
    cfg = load_config(SEG_CONFIG, ["model.name=lraspp_mobilenet_v3_small", "model.num_classes=3"])
    metadata = {
        "config": dataclasses.asdict(cfg),
        "task": "segmentation",
        "arch": cfg.model.name,
        "outputs": "logits",
        "precision": "int8",
    }
    info = inspect_checkpoint(onnx_file(tmp_path / "model_int8", metadata))
    assert info.format == "onnx" and info.task == "segmentation"
    assert (
        info.description
        == "an int8 ONNX segmentation model of lraspp_mobilenet_v3_small (tools/quantize.py)"
    )

    torch_named_onnx = tmp_path / "weights.onnx"
    shutil.copy(files["zip"], torch_named_onnx)
    info = inspect_checkpoint(torch_named_onnx)
    assert info.format == "pytorch" and set(info.weights) == {"0.weight", "0.bias"}


def test_damaged_onnx_files(tmp_path, files):
    path = onnx_file(tmp_path / "model")
    cut = tmp_path / "cut"
    cut.write_bytes(path.read_bytes()[:40])
    assert sniff(cut) == "onnx"
    assert message(cut).startswith("not a readable ONNX model (40 bytes, truncated or damaged)")
    junk = tmp_path / "junk.onnx"
    shutil.copy(files["random"], junk)
    assert message(junk).startswith("not a readable ONNX model (4096 bytes, unknown binary data)")
    assert message(tmp_path / "missing.onnx").startswith("ONNX file not found")
    assert message(tmp_path / "missing.pt").startswith("checkpoint not found")
