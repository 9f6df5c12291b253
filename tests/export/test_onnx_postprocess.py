"""SSDLite's postprocess as ONNX nodes: the same detections as ssd_postprocess, in onnxruntime."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import clip_boxes_to_image

from densemnv3.models.heads.anchors import BoxCoder
from densemnv3.models.heads.postprocess import ssd_postprocess

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SIZE, CLASSES = (100, 120), 5
SETTINGS = dict(score_thresh=0.05, nms_thresh=0.5, detections_per_img=50, topk_candidates=40)


@pytest.fixture(scope="module")
def pp_session(tmp_path_factory):
    """A graph that passes (boxes, scores) through, with the postprocess appended (the image size
    comes from the shape of its first input, as in an exported detector)."""
    from onnx import TensorProto, helper

    from densemnv3.export.onnx_postprocess import append_ssd_postprocess

    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["in_boxes"], ["boxes"]),
            helper.make_node("Identity", ["in_scores"], ["scores"]),
        ],
        "passthrough",
        [
            helper.make_tensor_value_info(
                "images", TensorProto.FLOAT, ["batch", 3, "height", "width"]
            ),
            helper.make_tensor_value_info("in_boxes", TensorProto.FLOAT, ["batch", "anchors", 4]),
            helper.make_tensor_value_info(
                "in_scores", TensorProto.FLOAT, ["batch", "anchors", CLASSES]
            ),
        ],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", "anchors", 4]),
            helper.make_tensor_value_info(
                "scores", TensorProto.FLOAT, ["batch", "anchors", CLASSES]
            ),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    append_ssd_postprocess(proto, num_classes=CLASSES, **SETTINGS)
    onnx.checker.check_model(proto)
    path = tmp_path_factory.mktemp("pp") / "pp.onnx"
    onnx.save(proto, str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def raw_outputs(batch: int, anchors: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(anchors, 2, generator=g) * torch.tensor([SIZE[1], SIZE[0]])
    sizes = torch.rand(anchors, 2, generator=g) * 40 + 4
    anchor_boxes = torch.cat((centers - sizes / 2, centers + sizes / 2), 1)
    return (
        torch.randn(batch, anchors, CLASSES, generator=g) * 2,
        torch.randn(batch, anchors, 4, generator=g) * 0.5,
        anchor_boxes,
    )


@pytest.mark.parametrize("anchors", [200, 35])  # 35 < topk_candidates: k = A
def test_onnx_postprocess_gives_ssd_postprocess_detections(pp_session, anchors):
    cls_logits, bbox_regression, anchor_boxes = raw_outputs(3, anchors, seed=anchors)
    coder = BoxCoder()
    expected = ssd_postprocess(cls_logits, bbox_regression, anchor_boxes, SIZE, coder, **SETTINGS)
    boxes = clip_boxes_to_image(coder.decode(bbox_regression, anchor_boxes), SIZE)
    count, got_boxes, got_scores, got_labels = (
        torch.from_numpy(o)
        for o in pp_session.run(
            None,
            {
                "images": torch.zeros(3, 3, *SIZE).numpy(),
                "in_boxes": boxes.numpy(),
                "in_scores": F.softmax(cls_logits, -1).numpy(),
            },
        )
    )
    assert got_labels.dtype == torch.int64 and got_boxes.shape[1:] == (
        min(50, 4 * min(40, anchors)),
        4,
    )
    for i, exp in enumerate(expected):
        n = int(count[i])
        assert n == len(exp["scores"]) > 10
        got = {"boxes": got_boxes[i, :n], "scores": got_scores[i, :n], "labels": got_labels[i, :n]}
        assert all(
            torch.equal(got[k], exp[k]) for k in ("boxes", "scores", "labels")
        )  # same order, bits
        assert (
            not got_scores[i, n:].any()
            and not got_labels[i, n:].any()
            and not got_boxes[i, n:].any()
        )


def test_onnx_postprocess_with_nothing_above_the_threshold(pp_session):
    cls_logits, bbox_regression, anchor_boxes = raw_outputs(2, 60, seed=0)
    cls_logits[..., 0] = 30.0  # every box is background
    boxes = BoxCoder().decode(bbox_regression, anchor_boxes).clamp(min=0)
    count, boxes, scores, labels = pp_session.run(
        None,
        {
            "images": torch.zeros(2, 3, *SIZE).numpy(),
            "in_boxes": boxes.numpy(),
            "in_scores": F.softmax(cls_logits, -1).numpy(),
        },
    )
    assert count.tolist() == [0, 0] and not scores.any() and not labels.any()
