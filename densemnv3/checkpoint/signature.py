"""What an exported file's graph takes and gives, against what its metadata declares.

The tools trust a file by its metadata (:mod:`.metadata`): its config, task and ``outputs`` say
how to feed it and read what it returns. Another model's graph carrying a densemnv3 file's
metadata (copied, or written by hand) would end in a runtime's traceback, or worse run and be
scored silently. So a file is compared with the shapes its metadata implies twice, both free:
when it is opened, its graph's inputs and outputs (names, ranks, class counts, fixed or dynamic
sizes: :func:`graph_mismatch`), and at each run the shapes it returned for the input it was
given (:func:`output_mismatch`).

A dim is an ``int`` (fixed), a ``str`` (a dynamic dim's symbol, e.g. ``height`` or
``(((height - 1)//8)) + 1`` as ``torch.onnx.export`` names them) or ``None`` (unknown); an
unknown dim, or a symbol that does not name the input's, is taken on trust.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from densemnv3.errors import CheckpointError

from .metadata import OUTPUT_NAMES

__all__ = [
    "INPUT_NAME",
    "OUTPUT_DIMS",
    "Signature",
    "check_graph",
    "graph_mismatch",
    "onnx_float_weights",
    "onnx_signature",
    "output_mismatch",
]

Dim = int | str | None
#: A graph's inputs or outputs: (name or None where the format keeps none, dims or None
#: where the rank is unknown, element type or None).
Signature = list[tuple[str | None, tuple[Dim, ...] | None, str | None]]

INPUT_NAME = "images"
INPUT_DIMS = ("N", 3, "H", "W")
#: Each output's dims by the ``outputs`` metadata value: N the batch, C the classes (K: those of
#: a multi-task model's detector), H and W the input's size (H/8: at stride 8, rounded up), A the
#: default boxes, D the detections kept.
OUTPUT_DIMS: dict[str, tuple[tuple[Any, ...], ...]] = {
    "logits": (("N", "C", "H", "W"),),
    "logits_raw": (("N", "C", "H/8", "W/8"),),
    "decoded": (("N", "A", 4), ("N", "A", "C")),
    "raw": (("N", "A", "C"), ("N", "A", 4), ("A", 4)),
    "detections": (("N",), ("N", "D", 4), ("N", "D"), ("N", "D")),
    "multitask": (("N", "C", "H", "W"), ("N", "A", 4), ("N", "A", "K")),
    "multitask_raw": (("N", "C", "H/8", "W/8"), ("N", "A", "K"), ("N", "A", 4), ("A", 4)),
}
_FREE = ("N", "A", "D")  # any value (bound once per run: the same in every output)


def _classes(metadata: Mapping[str, Any]) -> dict[str, int | None]:
    """C and K from the recorded config (None: not recorded)."""
    config = metadata.get("config")
    model = config.get("model") if isinstance(config, Mapping) else None
    model = model if isinstance(model, Mapping) else {}
    options = model.get("options") if isinstance(model.get("options"), Mapping) else {}
    classes, det = model.get("num_classes"), options.get("det_num_classes")
    return {
        "C": classes if isinstance(classes, int) else None,
        "K": det if isinstance(det, int) else None,
    }


def _values(metadata: Mapping[str, Any]) -> dict[str, int | None]:
    """The dims the metadata fixes: C, K and, for a file of a fixed size, H, W, H/8, W/8."""
    size = metadata.get("input_size")
    fixed = isinstance(size, (list, tuple)) and len(size) == 2
    h, w = (int(size[0]), int(size[1])) if fixed else (None, None)
    return {
        **_classes(metadata),
        "H": h,
        "W": w,
        "H/8": None if h is None else -(-h // 8),
        "W/8": None if w is None else -(-w // 8),
    }


def _declared(metadata: Mapping[str, Any]) -> str:
    """What the metadata says in a few words: ``outputs: logits_raw, 19 classes, input dynamic``."""
    size = metadata.get("input_size")
    shown = "x".join(map(str, size)) if isinstance(size, (list, tuple)) else size or "of any size"
    classes = _classes(metadata)["C"]
    return (
        f"outputs: {metadata.get('outputs')}"
        + (f", {classes} classes" if classes else "")
        + f", input {shown}"
    )


def _show(dims: Sequence[Any] | None, values: Mapping[str, int | None] | None = None) -> str:
    """Dims as messages give them: ``[batch, 19, height, width]``; long symbols cut short;
    ``values`` fill in the metadata's symbols it fixes."""
    if dims is None:
        return "[?]"
    shown = []
    for d in dims:
        if values is not None and isinstance(d, str) and values.get(d) is not None:
            d = values[d]
        text = "?" if d is None else str(d)
        shown.append(text if len(text) <= 28 else text[:24] + "...")
    return "[" + ", ".join(shown) + "]"


def _names(symbol: str, text: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(symbol)}(?![\w])", text) is not None


def _dim_fits(
    got: Dim, want: Any, values: Mapping[str, int | None], input_dims: Sequence[Dim], sizes: str
) -> bool:
    """Whether a graph's dim ``got`` can be the declared ``want``; ``sizes``: the metadata's input
    size, ``"fixed"``, ``"dynamic"`` or ``"unknown"`` (not recorded)."""
    if got is None or want in _FREE:
        return True
    spatial = want in ("H", "W", "H/8", "W/8")
    own = None  # the input's symbol for this height or width
    if spatial and len(input_dims) == 4:
        own = input_dims[2 if want.startswith("H") else 3]
        own = own if isinstance(own, str) else None
    if not spatial:  # a fixed count (3 channels, 4 box coordinates) or a class count
        fixed = want if isinstance(want, int) else values.get(want)
        if isinstance(got, int):
            return fixed is None or got == fixed
        return fixed is None or got not in input_dims  # not the input's batch, height or width
    if want in ("H/8", "W/8") and own is not None and got == own:
        return False  # the input's full size where stride 8 is declared
    if isinstance(got, int):
        if sizes == "dynamic":
            return False  # fixed where the metadata says any size
        return sizes == "unknown" or got == values[want]
    if want in ("H", "W") and own is not None and got != own:
        return not _names(own, got)  # an expression of the input's size is not that size
    return True


def graph_mismatch(
    metadata: Mapping[str, Any], inputs: Signature, outputs: Signature
) -> str | None:
    """What differs between a graph's ``inputs``/``outputs`` and what ``metadata`` declares, in a
    few words for a message, or ``None``. A file whose ``outputs`` the tools do not know is left
    alone; one that records no ``input_size`` has its height and width taken on trust."""
    form = metadata.get("outputs")
    if form not in OUTPUT_DIMS:
        return None
    names, declared, values = OUTPUT_NAMES[form], _declared(metadata), _values(metadata)
    size = metadata.get("input_size")
    sizes = "dynamic" if size == "dynamic" else "fixed" if values["H"] is not None else "unknown"
    if len(inputs) != 1:
        return f"it takes {len(inputs)} inputs, the tools' files one ({INPUT_NAME})"
    name, dims, dtype = inputs[0]
    if name is not None and name != INPUT_NAME:
        return f"its input is named {name!r}, the tools' files' {INPUT_NAME!r}"
    if dtype is not None and dtype != "float32":
        return f"its input {INPUT_NAME!r} is {dtype}, the tools feed float32"
    got_names = [n for n, _, _ in outputs]
    renamed = any(n is not None and n != want for n, want in zip(got_names, names))
    if len(outputs) != len(names) or renamed:
        if all(got_names):
            return (
                f"it outputs ({', '.join(map(str, got_names))}), its metadata ({declared}) "
                f"declares ({', '.join(names)})"
            )
        count = f"{len(outputs)} tensor" + ("" if len(outputs) == 1 else "s")
        return (
            f"it outputs {count}, its metadata ({declared}) declares {len(names)} "
            f"({', '.join(names)})"
        )
    input_dims = tuple(dims) if dims is not None else ()
    if dims is not None and (
        len(dims) != 4
        or not all(_dim_fits(g, w, values, input_dims, sizes) for g, w in zip(dims, INPUT_DIMS))
    ):
        return (
            f"its input {INPUT_NAME!r} is {_show(dims)}, its metadata ({declared}) implies "
            f"{_show(INPUT_DIMS, values)}"
        )
    for i, ((name, dims, _), want) in enumerate(zip(outputs, OUTPUT_DIMS[form])):
        if dims is not None and (
            len(dims) != len(want)
            or not all(_dim_fits(g, w, values, input_dims, sizes) for g, w in zip(dims, want))
        ):
            return (
                f"output {name or names[i]!r} is {_show(dims)}, its metadata ({declared}) "
                f"implies {_show(want, values)}"
            )
    return None


def check_graph(
    path: Any, metadata: Mapping[str, Any], inputs: Signature, outputs: Signature, *, remedy: str
) -> None:
    """One :class:`CheckpointError` naming ``path`` and what differs (:func:`graph_mismatch`)."""
    problem = graph_mismatch(metadata, inputs, outputs)
    if problem:
        raise CheckpointError(
            f"{path}: its graph is not the model its densemnv3 metadata "
            f"describes: {problem} (another model's file with copied "
            f"metadata?); {remedy}"
        )


def output_mismatch(
    metadata: Mapping[str, Any], input_shape: Sequence[int], shapes: Sequence[Sequence[int]]
) -> str | None:
    """What differs between the output ``shapes`` a file returned for an ``input_shape``
    ``(N, 3, H, W)`` batch and those its ``metadata`` implies, or ``None``."""
    form = metadata.get("outputs")
    if form not in OUTPUT_DIMS:
        return None
    n, _, h, w = (int(s) for s in input_shape)
    values = {**_classes(metadata), "N": n, "H": h, "W": w, "H/8": -(-h // 8), "W/8": -(-w // 8)}
    wanted = OUTPUT_DIMS[form]
    fits = len(shapes) == len(wanted)
    bound: dict[str, int] = {}
    for shape, want in zip(shapes, wanted) if fits else ():
        fits = fits and len(shape) == len(want)
        for got, dim in zip(shape, want) if fits else ():
            expected = dim if isinstance(dim, int) else values.get(dim)
            if dim in ("A", "D"):
                expected = bound.setdefault(dim, int(got))
            fits = fits and (expected is None or int(got) == expected)
    if fits:
        return None
    got = ", ".join(_show(tuple(s)) for s in shapes)
    implied = ", ".join(_show(want, values) for want in wanted)
    return (
        f"it returned {got} for a {n}x3x{h}x{w} input, where its metadata "
        f"(outputs: {form}) implies {implied}"
    )


def onnx_signature(proto: Any) -> tuple[Signature, Signature]:
    """The inputs (initializers left out) and outputs of an ``onnx.ModelProto``'s graph."""
    from onnx import helper

    def entry(value: Any) -> tuple[str | None, tuple[Dim, ...] | None, str | None]:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            return value.name, None, "not a tensor"
        dims = None
        if tensor.HasField("shape"):
            dims = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tensor.shape.dim
            )
        try:
            dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        except (KeyError, ValueError, TypeError):
            dtype = None
        return value.name, dims, dtype

    weights = {i.name for i in proto.graph.initializer}
    return (
        [entry(v) for v in proto.graph.input if v.name not in weights],
        [entry(v) for v in proto.graph.output],
    )


def onnx_float_weights(proto: Any) -> dict[str, Any]:
    """The floating-point initializers stored in an ``onnx.ModelProto`` (external data left out),
    as tensors, by name."""
    import numpy as np
    import torch
    from onnx import TensorProto, numpy_helper

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    weights = {}
    for init in proto.graph.initializer:
        if init.data_type not in floats or init.data_location == TensorProto.EXTERNAL:
            continue
        weights[init.name] = torch.from_numpy(np.array(numpy_helper.to_array(init), np.float32))
    return weights
