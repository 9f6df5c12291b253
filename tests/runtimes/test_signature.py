"""An exported file's graph against its metadata: the graphs densemnv3 writes pass (their dims as
``torch.onnx.export`` names them), another model's with copied metadata is told apart by what
differs, and a graph's outputs at run time must have the shapes its metadata implies."""

import numpy as np
import pytest
import torch

from densemnv3.checkpoint.signature import graph_mismatch, output_mismatch
from densemnv3.errors import UserError

BOXES = "6*((((height - 1)//16)) + 1)*((((width - 1)//16)) + 1) + 6*((((height - 1)//32)) + 1)"
STRIDE_8 = ("(((height - 1)//8)) + 1", "(((width - 1)//8)) + 1")
IMAGES = [("images", ("batch", 3, "height", "width"), "float32")]


def metadata(outputs: str, input_size=("dynamic"), classes: int = 19, **options) -> dict:
    return {
        "config": {"model": {"num_classes": classes, "options": options}},
        "task": "segmentation",
        "outputs": outputs,
        "precision": "fp32",
        "input_size": input_size,
    }


def test_the_graphs_densemnv3_writes_match_their_metadata():
    """Each form as tools/export.py, tools/quantize.py and --format executorch write it."""
    logits = ("logits", ("batch", 19, *STRIDE_8), "float32")
    assert graph_mismatch(metadata("logits_raw"), IMAGES, [logits]) is None
    full = ("logits", ("batch", 19, "height", "width"), "float32")
    assert graph_mismatch(metadata("logits"), IMAGES, [full]) is None
    raw = [
        ("cls_logits", ("batch", BOXES, 4), "float32"),
        ("bbox_regression", ("batch", BOXES, 4), "float32"),
        ("anchors", (BOXES, 4), "float32"),
    ]
    assert graph_mismatch(metadata("raw", classes=4), IMAGES, raw) is None
    detections = [
        ("num_detections", ("batch",), "int64"),
        ("boxes", ("batch", "detections", 4), "float32"),
        ("scores", ("batch", "detections"), "float32"),
        ("labels", ("batch", "detections"), "int64"),
    ]
    assert graph_mismatch(metadata("detections", classes=4), IMAGES, detections) is None
    multitask = [
        ("logits", ("batch", 4, *STRIDE_8), "float32"),
        ("cls_logits", ("batch", BOXES, 3), "float32"),
        *raw[1:],
    ]
    assert (
        graph_mismatch(metadata("multitask_raw", classes=4, det_num_classes=3), IMAGES, multitask)
        is None
    )
    # the paper pool below 784x784: fixed at its export size
    paper = (
        [("images", ("batch", 3, 64, 128), "float32")],
        [("logits", ("batch", 19, 8, 16), "float32")],
    )
    assert graph_mismatch(metadata("logits_raw", (64, 128)), *paper) is None
    # a .pte: no names, every size static
    pte = [(None, (1, 3, 64, 96), "float32")], [(None, (1, 19, 8, 12), "float32")]
    assert graph_mismatch(metadata("logits_raw", (64, 96)), *pte) is None


@pytest.mark.parametrize(
    "case,words",
    [
        (
            "classifier",
            "its input 'images' is [1, 3, 224, 224], its metadata (outputs: logits_raw, "
            "19 classes, input dynamic) implies [N, 3, H, W]",
        ),
        (
            "full_size",
            "output 'logits' is [batch, 19, height, width], its metadata (outputs: logits_raw, "
            "19 classes, input dynamic) implies [N, 19, H/8, W/8]",
        ),
        (
            "classes",
            "output 'logits' is [batch, 21, (((height - 1)//8)) + 1, (((width - 1)//8)) + 1], its "
            "metadata (outputs: logits_raw, 19 classes, input dynamic) implies [N, 19, H/8, W/8]",
        ),
        (
            "names",
            "it outputs (out, aux), its metadata (outputs: logits_raw, 19 classes, input dynamic) "
            "declares (logits)",
        ),
        ("input_name", "its input is named 'input', the tools' files' 'images'"),
        ("uint8", "its input 'images' is uint8, the tools feed float32"),
        (
            "pte_size",
            "its input 'images' is [1, 3, 224, 224], its metadata (outputs: logits_raw, "
            "19 classes, input 64x96) implies [N, 3, 64, 96]",
        ),
        (
            "pte_outputs",
            "it outputs 1 tensor, its metadata (outputs: raw, 4 classes, input 64x96) declares 3 "
            "(cls_logits, bbox_regression, anchors)",
        ),
    ],
)
def test_another_models_graph_says_what_differs(case, words):
    meta, inputs = metadata("logits_raw"), IMAGES
    outputs = [("logits", ("batch", 19, *STRIDE_8), "float32")]
    if case == "classifier":  # torchvision's mobilenet_v3_small exported at 224x224
        inputs, outputs = (
            [("images", (1, 3, 224, 224), "float32")],
            [("logits", (1, 1000), "float32")],
        )
    elif case == "full_size":  # torchvision's LR-ASPP: upsampled to the input in the graph
        outputs = [("logits", ("batch", 19, "height", "width"), "float32")]
    elif case == "classes":
        outputs = [("logits", ("batch", 21, *STRIDE_8), "float32")]
    elif case == "names":
        outputs = [
            ("out", ("batch", 19, *STRIDE_8), "float32"),
            ("aux", ("batch", 19, *STRIDE_8), "float32"),
        ]
    elif case == "input_name":
        inputs = [("input", ("batch", 3, "height", "width"), "float32")]
    elif case == "uint8":
        inputs = [("images", ("batch", 3, "height", "width"), "uint8")]
    elif case == "pte_size":
        meta, inputs, outputs = (
            metadata("logits_raw", (64, 96)),
            [(None, (1, 3, 224, 224), "float32")],
            [(None, (1, 19, 28, 28), "float32")],
        )
    else:
        meta, inputs, outputs = (
            metadata("raw", (64, 96), classes=4),
            [(None, (1, 3, 64, 96), "float32")],
            [(None, (1, 19, 8, 12), "float32")],
        )
    assert graph_mismatch(meta, inputs, outputs) == words


def test_unknown_dims_and_forms_are_taken_on_trust():
    """The legacy exporter names every output dim of its own (``Resizelogits_dim_2``): nothing
    to tell from them at open (the run checks the shapes); an unknown form is left alone."""
    legacy = [("logits", tuple(f"Resizelogits_dim_{i}" for i in range(4)), "float32")]
    assert graph_mismatch(metadata("logits_raw"), IMAGES, legacy) is None
    assert graph_mismatch(metadata("something_else"), IMAGES, []) is None
    unranked = [("logits", None, "float32")]
    assert graph_mismatch(metadata("logits_raw"), IMAGES, unranked) is None


def test_output_shapes_at_run_time():
    meta = metadata("logits_raw")
    assert output_mismatch(meta, (2, 3, 60, 100), [(2, 19, 8, 13)]) is None  # rounded up
    assert output_mismatch(meta, (2, 3, 64, 128), [(2, 19, 64, 128)]) == (
        "it returned [2, 19, 64, 128] for a 2x3x64x128 input, where its metadata "
        "(outputs: logits_raw) implies [2, 19, 8, 16]"
    )
    raw = metadata("raw", classes=4)
    assert output_mismatch(raw, (3, 3, 64, 64), [(3, 90, 4), (3, 90, 4), (90, 4)]) is None
    other_anchors = [(3, 90, 4), (3, 90, 4), (91, 4)]  # A differs
    assert output_mismatch(raw, (3, 3, 64, 64), other_anchors) is not None
    assert output_mismatch(raw, (3, 3, 64, 64), [(3, 90, 4), (3, 90, 4)]) is not None
    unknown_classes = {"outputs": "logits_raw"}
    assert output_mismatch(unknown_classes, (1, 3, 64, 64), [(1, 7, 8, 8)]) is None


def test_a_run_whose_outputs_are_not_what_the_metadata_implies_is_one_error(tmp_path):
    """The second guard: a graph that passed the open (dims it does not name) returns full-size
    logits where its metadata says stride 8."""
    from densemnv3.runtimes import Engine, ExportedSegmenter

    class FullSize(Engine):
        name = "fake"

        def run(self, x):
            return [np.zeros((len(x), 19, *x.shape[2:]), np.float32)]

    model = ExportedSegmenter(tmp_path / "m.onnx", metadata("logits_raw"), FullSize)
    with pytest.raises(UserError) as info:
        model(torch.zeros(1, 3, 64, 128))
    assert str(info.value) == (
        f"{tmp_path / 'm.onnx'}: its graph is not the model its densemnv3 metadata describes: "
        f"it returned [1, 19, 64, 128] for a 1x3x64x128 input, where its metadata "
        f"(outputs: logits_raw) implies [1, 19, 8, 16]; export the checkpoint again with "
        f"tools/export.py"
    )
