"""SSDLite's postprocess as ONNX nodes, appended to an exported graph so that it outputs detections.

``SSDLite.postprocess`` (decode, score threshold, per-class top-k, class-wise NMS, the best
``detections_per_img``) written with ``onnx.helper`` as ``TopK``, ``GatherElements``,
``NonMaxSuppression`` (one (image, class) pair per batch entry) and ``ScatterND``, so any ONNX
runtime runs the whole detector; traced, it would not export (``torchvision.ops.nms`` has no
translation in the ``torch.export``-based exporter). The input graph's outputs are
:class:`SSDLiteExport`'s ``boxes`` ``(N, A, 4)`` and ``scores`` ``(N, A, C)``; the outputs are
``num_detections`` ``(N,)`` int64 and ``boxes`` ``(N, D, 4)``, ``scores`` ``(N, D)``, ``labels``
``(N, D)`` best first, with ``D = min(detections_per_img, (C - 1) * min(topk_candidates, A))`` and
zeros past ``num_detections``.

Ties order as in ``SSDLite.postprocess`` (score, then class, then per-class rank), and the NMS sees
the boxes shifted per class as it does, so a pair whose IoU is the threshold to the last bit is
decided alike.
"""

from __future__ import annotations

from typing import Any

__all__ = ["append_ssd_postprocess"]


def _below(threshold: float) -> float:
    """The float32 ``t`` with ``iou > t`` (onnxruntime, in float32) exactly when ``iou > threshold``
    in double precision (torchvision's CPU NMS kernel): the float32 just below the smallest
    float32 above ``threshold``."""
    import numpy as np

    bound = np.float32(threshold)
    if float(bound) <= threshold:
        bound = np.nextafter(bound, np.float32(np.inf))
    return float(np.nextafter(bound, np.float32(-np.inf)))


def append_ssd_postprocess(
    proto: Any,
    *,
    num_classes: int,
    score_thresh: float,
    nms_thresh: float,
    topk_candidates: int,
    detections_per_img: int,
) -> None:
    """Append the postprocess to ``proto`` (an ``onnx.ModelProto`` with outputs ``boxes`` and
    ``scores``), in place; its outputs become ``num_detections``, ``boxes``, ``scores``,
    ``labels``."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    if [o.name for o in graph.output] != ["boxes", "scores"]:
        raise ValueError(
            f"expected a graph with outputs boxes, scores; got {[o.name for o in graph.output]}"
        )
    renamed = {"boxes": "pp_decoded_boxes", "scores": "pp_class_scores"}
    for node in graph.node:
        node.output[:] = [renamed.get(name, name) for name in node.output]
    nodes = []

    def const(name: str, value, dtype=np.int64) -> str:
        graph.initializer.append(
            numpy_helper.from_array(np.asarray(value, dtype=dtype), f"pp_{name}")
        )
        return f"pp_{name}"

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [f"pp_{name}"], name=f"pp_{name}", **attrs))
        return f"pp_{name}"

    foreground = num_classes - 1
    boxes, scores = renamed["boxes"], renamed["scores"]
    shape = node("Shape", [scores], "shape")
    batch = node("Slice", [shape, const("0", [0]), const("1", [1])], "batch")
    anchors = node("Slice", [shape, const("1b", [1]), const("2", [2])], "anchors")
    k = node("Min", [anchors, const("topk", [topk_candidates])], "k")
    fg = node(
        "Slice", [scores, const("1c", [1]), const("C", [num_classes]), const("2b", [2])], "fg"
    )
    per_class = node("Transpose", [fg], "per_class", perm=[0, 2, 1])  # (N, C-1, A)
    top_scores = "pp_top_scores"
    nodes.append(
        helper.make_node(
            "TopK", [per_class, k], [top_scores, "pp_top_index"], name="pp_topk", axis=2
        )
    )
    flat_index = node(
        "Reshape",
        ["pp_top_index", node("Concat", [batch, const("m1", [-1])], "flat_shape", axis=0)],
        "flat_index",
    )  # (N, M), M = (C-1) * k
    four = const("1x1x4", [1, 1, 4])
    gather4 = node(
        "Expand",
        [node("Unsqueeze", [flat_index, const("2c", [2])], "flat_index3"), four],
        "gather4",
    )
    candidates = node("GatherElements", [boxes, gather4], "candidates", axis=1)  # (N, M, 4)
    group_boxes = node(
        "Reshape",
        [
            candidates,
            node("Concat", [const("m1b", [-1]), k, const("4", [4])], "group_box_shape", axis=0),
        ],
        "group_boxes",
    )
    group_scores = node(
        "Reshape",
        [
            top_scores,
            node("Concat", [const("m1c", [-1]), const("1d", [1]), k], "group_score_shape", axis=0),
        ],
        "group_scores",
    )
    # NMS on boxes shifted by label * (max(H, W) + 1), as SSDLite.postprocess (and torchvision's
    # batched_nms) computes them: the same IoU bits, so a pair at the threshold is decided alike
    image_shape = node("Shape", [graph.input[0].name], "image_shape")
    side = node(
        "ReduceMax",
        [node("Slice", [image_shape, const("2f", [2]), const("4f", [4])], "hw")],
        "side",
        keepdims=0,
    )
    offset = node("Add", [side, const("one_o", 1)], "offset")
    groups = node(
        "Squeeze",
        [
            node(
                "Slice",
                [node("Shape", [group_boxes], "group_shape"), const("0g", [0]), const("1g", [1])],
                "groups1",
            )
        ],
        "groups",
    )
    group_index = node("Range", [const("zero_g", 0), groups, const("one_g", 1)], "group_index")
    label_of_group = node(
        "Add",
        [
            node("Mod", [group_index, const("num_fg4", foreground)], "class_of_group"),
            const("one_l", 1),
        ],
        "label_of_group",
    )
    shift = node(
        "Cast", [node("Mul", [label_of_group, offset], "shift_int")], "shift", to=TensorProto.FLOAT
    )
    shifted = node(
        "Add", [group_boxes, node("Unsqueeze", [shift, const("12", [1, 2])], "shift3")], "shifted"
    )
    selected = node(
        "NonMaxSuppression",
        [
            shifted,
            group_scores,
            k,
            const("iou", [_below(nms_thresh)], np.float32),
            const("score", [score_thresh], np.float32),
        ],
        "selected",
    )
    group = node(
        "Gather", [selected, const("0s", 0)], "group", axis=1
    )  # (K,): image * (C-1) + class
    rank = node("Gather", [selected, const("2s", 2)], "rank", axis=1)
    image = node("Div", [group, const("num_fg", foreground)], "image")
    position = node(
        "Add",
        [
            node("Mul", [node("Mod", [group, const("num_fg2", foreground)], "cls"), k], "cls_k"),
            rank,
        ],
        "position",
    )  # class * k + rank, within the image
    column = const("1e", [1])
    pair = node(
        "Concat",
        [node("Unsqueeze", [group, column], "group2"), node("Unsqueeze", [rank, column], "rank2")],
        "group_rank",
        axis=1,
    )
    flat_scores = node(
        "Reshape",
        [top_scores, node("Concat", [const("m1d", [-1]), k], "flat_score_shape", axis=0)],
        "flat_scores",
    )
    kept_scores = node("GatherND", [flat_scores, pair], "kept_scores")
    width = node("Mul", [const("num_fg3", [foreground]), k], "width")
    empty = node(
        "ConstantOfShape",
        [node("Concat", [batch, width], "dense_shape", axis=0)],
        "empty",
        value=helper.make_tensor("minus_one", TensorProto.FLOAT, [1], [-1.0]),
    )
    where = node(
        "Concat",
        [
            node("Unsqueeze", [image, column], "image2"),
            node("Unsqueeze", [position, column], "position2"),
        ],
        "image_position",
        axis=1,
    )
    dense = node("ScatterND", [empty, where, kept_scores], "dense")  # (N, M): kept scores, else -1
    count = node("Min", [const("dets", [detections_per_img]), width], "count")
    nodes.append(
        helper.make_node(
            "TopK", [dense, count], ["pp_best", "pp_best_position"], name="pp_best", axis=1
        )
    )
    valid = node("Greater", ["pp_best", const("half", -0.5, np.float32)], "valid")
    zero = const("zero", 0.0, np.float32)
    nodes.append(helper.make_node("Where", [valid, "pp_best", zero], ["scores"], name="pp_scores"))
    label = node(
        "Add", [node("Div", ["pp_best_position", k], "best_class"), const("one", 1)], "label"
    )
    nodes.append(
        helper.make_node("Where", [valid, label, const("zero_i", 0)], ["labels"], name="pp_labels")
    )
    best4 = node(
        "Expand",
        [node("Unsqueeze", ["pp_best_position", const("2d", [2])], "best3"), four],
        "best4",
    )
    best_boxes = node("GatherElements", [candidates, best4], "best_boxes", axis=1)
    valid3 = node("Unsqueeze", [valid, const("2e", [2])], "valid3")
    nodes.append(helper.make_node("Where", [valid3, best_boxes, zero], ["boxes"], name="pp_boxes"))
    counted = node("Cast", [valid], "valid_int", to=TensorProto.INT64)
    nodes.append(
        helper.make_node(
            "ReduceSum",
            [counted, const("1f", [1])],
            ["num_detections"],
            name="pp_num_detections",
            keepdims=0,
        )
    )
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("num_detections", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", "detections", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "detections"]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch", "detections"]),
        ]
    )
