"""The rewrites that keep an exported ONNX graph in int8 kernels, each exact in real arithmetic,
and the nodes that stay in float. The two runtimes want different graphs (BENCHMARKS.md, where
int8's time goes), so an int8 file is shaped for one (:data:`FORMS`):

onnxruntime (:func:`int8_friendly`, before quantization):

- ``HardSwish(x)`` -> ``x * Clip(DepthwiseConv1x1(x; 1/6, 0.5), 0, 1)``: onnxruntime has no
  quantized hard-swish, so it would run in float, between a dequantize and a quantize, on the
  largest tensors of the network; as a 1x1 depthwise conv with a fused clip and a ``QLinearMul``
  it stays in int8.
- ``ReduceMean`` over H, W (squeeze-excitation's pool, as the exporter writes
  ``AdaptiveAvgPool2d(1)``) -> ``GlobalAveragePool``, which has an int8 kernel.

OpenVINO (:func:`fuse_activations`, after quantization): the graph as exported, less the
quantize/dequantize pair the quantizer puts between each convolution and the ``HardSwish`` or
``HardSigmoid`` after it. OpenVINO's CPU plugin then runs convolution + activation + the next
quantization as one int8 kernel; with the pair left in it converts and subtracts a zero point in
reference code between them, and the rewrite above costs it a grouped convolution per block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The runtimes an int8 file's graph is shaped for (``tools/quantize.py --runtime``).
FORMS = ("onnxruntime", "openvino")


def int8_friendly(proto: Any) -> None:
    """Rewrite ``proto`` (in place) so onnxruntime keeps it in int8: ``HardSwish`` as a 1×1
    depthwise conv + clip + mul, ``ReduceMean`` over H and W as ``GlobalAveragePool``."""
    import numpy as np
    from onnx import helper, numpy_helper, shape_inference

    graph = proto.graph
    inferred = shape_inference.infer_shapes(proto).graph
    channels = {
        v.name: v.type.tensor_type.shape.dim[1].dim_value
        for v in [*inferred.value_info, *inferred.input, *inferred.output]
        if len(v.type.tensor_type.shape.dim) == 4
    }
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(0, np.float32), "int8_hs_low"),
            numpy_helper.from_array(np.array(1, np.float32), "int8_hs_high"),
        ]
    )
    nodes = []
    for i, node in enumerate(graph.node):
        x = node.input[0] if node.input else ""
        if node.op_type == "HardSwish" and channels.get(x):
            c = channels[x]
            weight, bias, gate, clipped = (f"int8_hs{i}_{s}" for s in ("w", "b", "gate", "clip"))
            graph.initializer.extend(
                [
                    numpy_helper.from_array(np.full((c, 1, 1, 1), 1 / 6, np.float32), weight),
                    numpy_helper.from_array(np.full((c,), 0.5, np.float32), bias),
                ]
            )
            nodes += [
                helper.make_node(
                    "Conv", [x, weight, bias], [gate], name=gate, group=c, kernel_shape=[1, 1]
                ),
                helper.make_node(
                    "Clip", [gate, "int8_hs_low", "int8_hs_high"], [clipped], name=clipped
                ),
                helper.make_node(
                    "Mul", [x, clipped], list(node.output), name=node.name or f"int8_hs{i}"
                ),
            ]
        elif node.op_type == "ReduceMean" and _pools_spatially(node, constants):
            nodes.append(
                helper.make_node("GlobalAveragePool", [x], list(node.output), name=node.name)
            )
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def fuse_activations(proto: Any, ops: Sequence[str] = ("HardSwish", "HardSigmoid")) -> int:
    """Remove, in place, the ``QuantizeLinear`` -> ``DequantizeLinear`` pair between a ``Conv``
    and the activation of ``ops`` it alone feeds (the convolution's output then is quantized
    once, after the activation); return how many pairs went."""
    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    dropped: set[str] = set()

    def made_by(name: str, op_type: str) -> Any:
        node = producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    for node in graph.node:
        dq = made_by(node.input[0], "DequantizeLinear") if node.op_type in ops else None
        q = made_by(dq.input[0], "QuantizeLinear") if dq is not None else None
        conv = made_by(q.input[0], "Conv") if q is not None else None
        if conv is None:
            continue
        if any(readers.get(n.output[0], 0) != 1 for n in (conv, q, dq)):
            continue  # the quantized tensor is read elsewhere too
        node.input[0] = conv.output[0]
        dropped |= {id(q), id(dq)}
    kept = [node for node in graph.node if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    return len(dropped) // 2


def _pools_spatially(node: Any, constants: Mapping[str, Any]) -> bool:
    """Whether a ``ReduceMean`` averages a 4-d tensor over H and W, keeping the dims."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1:
        axes = constants.get(node.input[1])
    return (
        attrs.get("keepdims", 1) == 1
        and axes is not None
        and sorted(int(a) % 4 for a in axes) == [2, 3]
    )


def float_nodes(proto: Any) -> list[str]:
    """Names of the nodes to leave in float: the last convolutions (the classifiers, SSDLite's
    class and box predictors) and everything after them, and the nodes that only compute
    SSDLite's anchors."""
    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    network = [o.name for o in graph.output if o.name != "anchors"]
    keep = [node.name for node in graph.node if node.name not in _ancestors(producer, network)]
    stack, seen = list(network), set()
    while stack:  # from the outputs up to the first convolution on each path
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        keep.append(node.name)
        if node.op_type != "Conv":
            stack.extend(node.input)
    return keep


def _ancestors(producer: Mapping[str, Any], outputs: Sequence[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(node.input)
    return seen
