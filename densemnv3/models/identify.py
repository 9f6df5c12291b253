"""What a checkpoint file is, and whether it fits the model a config builds.

The one place that classifies a file given as weights (``--weights``, ``--resume``,
``Predictor.from_config``, ``model.weights``) — a densemnv3 training checkpoint, a torchvision
model, a densemnv3 ONNX file (int8 from ``tools/quantize.py``, fp32 from ``tools/export.py``), a
densemnv3 ExecuTorch program (``.pte``, fp32 or int8 from ``tools/export.py``), something else, or no checkpoint at all (told by its content, in :mod:`.weight_files`) — and words the
one-line error when it does not fit. Every tool loads weights through :func:`load_weights`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from densemnv3.errors import CheckpointError

from .registry import HEADS
from .weight_files import FIX, TORCH_KINDS, file_kind, not_a_checkpoint, read_checkpoint

__all__ = [
    "CheckpointInfo",
    "backbone_family",
    "inspect_checkpoint",
    "load_weights",
    "pytorch_only",
    "read_checkpoint",
]

#: Blocks under ``features`` of each MobileNet family (width and dilation do not change them).
_FAMILY_BY_BLOCKS = {
    13: "MobileNetV3-Small",
    17: "MobileNetV3-Large",
    19: "MobileNetV2",
    14: "MobileNetV1",
}
_FEATURE_INDEX = re.compile(r"^(?:det\.)?(?:backbone\.features|backbone|features)\.(\d+)\.")
#: Other families by a layer name only they have, behind any prefix (``backbone.body.``, ...).
_FAMILY_BY_LAYER = (
    (re.compile(r"(?:^|\.)(?:features\.\d+|stage[234]\.\d+)\.branch2\."), "ShuffleNetV2"),
    (re.compile(r"(?:^|\.)layer1\.0\.conv1\."), "ResNet"),
)
#: The tools that take a checkpoint of each task.
_TOOLS = {
    "segmentation": "tools/*_seg.py",
    "detection": "tools/*_det.py",
    "multitask": "tools/train.py and tools/eval.py",
}
#: The tasks of the exported files the tools run.
EXPORTED_TASKS = ("segmentation", "detection", "multitask")


#: Key prefixes of torchvision models this toolkit does not build, and what they are.
_OTHER_MODELS = (
    ("rpn.", "a torchvision Faster/Mask R-CNN detector"),
    ("roi_heads.", "a torchvision Faster/Mask R-CNN detector"),
    ("backbone.body.", "a torchvision R-CNN/RetinaNet/FCOS detector"),
    ("aux_classifier.", "a torchvision DeepLabV3/FCN segmentation model"),
    ("classifier.4.", "a torchvision DeepLabV3 segmentation model"),
    ("backbone.layer1.", "a torchvision ResNet-based model"),
    ("layer1.", "a torchvision ResNet classifier"),
    ("conv_proj.", "a torchvision Vision Transformer"),
    ("features.0.0.block.", "a torchvision EfficientNet classifier"),
)


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint file, read and classified."""

    path: Path
    state: dict  # what the file holds
    weights: Mapping[str, Tensor]  # the model's state dict inside it
    task: str | None  # "segmentation", "detection", "multitask", "classification" or None
    arch: str | None  # the densemnv3 model name, when the file records it
    backbone: str | None  # the backbone family its layers show, e.g. "MobileNetV3-Small"
    description: (
        str  # "a detection checkpoint of ssdlite320_mobilenet_v3_small (densemnv3 training)"
    )
    format: str = (
        "pytorch"  # "onnx" / "pte": an exported file, run by a runtime (state: its metadata)
    )

    @property
    def exported(self) -> bool:
        """An exported file (ONNX, ExecuTorch), run by :mod:`densemnv3.runtimes`, not torch."""
        return self.format != "pytorch"

    @property
    def resumable(self) -> bool:
        """Written by the trainer, with the optimizer state that ``--resume`` needs."""
        return all(k in self.state for k in ("model", "optimizer", "scheduler", "iter", "rng"))


def backbone_family(weights: Mapping[str, Tensor]) -> str | None:
    """The backbone family a state dict shows — a layer name only one family has (ShuffleNetV2,
    ResNet), else the count of its MobileNet ``features`` blocks — or ``None`` (unknown)."""
    for pattern, family in _FAMILY_BY_LAYER:
        if any(pattern.search(k) for k in weights):
            return family
    blocks = {m.group(1) for k in weights if (m := _FEATURE_INDEX.match(k))}
    return _FAMILY_BY_BLOCKS.get(len(blocks))


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Read ``path`` and say what it is (see :class:`CheckpointInfo`): an ONNX model or a PyTorch
    checkpoint by its content (:func:`~densemnv3.models.weight_files.sniff`), whatever its suffix."""
    path = Path(path)
    onnx_name, pte_name = path.suffix.lower() == ".onnx", path.suffix.lower() == ".pte"
    if not path.is_file() and onnx_name:
        raise CheckpointError(f"{path}: ONNX file not found; check the path (--weights)")
    if not path.is_file() and pte_name:
        raise CheckpointError(f"{path}: ExecuTorch program not found; check the path (--weights)")
    kind = file_kind(path) if path.is_file() else None
    if kind == "onnx":
        return _inspect_onnx(path)
    if kind == "pte":
        return _inspect_pte(path)
    if (onnx_name or pte_name) and kind in ("empty", "unknown binary"):
        what = "an empty file" if kind == "empty" else "unknown binary data"
        model, tools = (
            ("ONNX model", "tools/export.py or tools/quantize.py")
            if onnx_name
            else ("ExecuTorch program", "tools/export.py --format executorch")
        )
        raise CheckpointError(
            f"{path}: not a readable {model} ({path.stat().st_size} bytes, {what}); "
            f"write one with {tools}"
        )
    if kind is not None and kind not in TORCH_KINDS:
        raise CheckpointError(f"{path}: {not_a_checkpoint(path, kind)}")
    state = read_checkpoint(path, kind)  # sniffed once, above
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(state).__name__}, not a checkpoint (a dict of tensors); {FIX}"
        )
    weights = state
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), Mapping):
            weights = state[key]
            break
    tensors = {k: v for k, v in weights.items() if isinstance(v, Tensor)}
    if not tensors:
        keys = ", ".join(map(repr, list(state)[:4]))
        raise CheckpointError(
            f"{path}: holds no weights (a dict with keys {keys}), not a checkpoint; {FIX}"
        )
    arch = state.get("arch") if isinstance(state.get("arch"), str) else None
    task = _task(tensors, arch)
    family = backbone_family(tensors)
    if task is None:
        what = next(
            (d for prefix, d in _OTHER_MODELS if any(k.startswith(prefix) for k in tensors)),
            f"weights of an unknown model (first key {next(iter(tensors))!r})",
        )
    elif task == "classification":
        what = f"an ImageNet classification checkpoint of {family} (torchvision)"
    else:
        torchvision = any(
            k.startswith("classifier.") or "classification_head" in k for k in tensors
        )
        made_by = "densemnv3 training" if arch else "torchvision" if torchvision else "densemnv3"
        of = arch or family
        on = _recorded_backbone(state) or (family if arch in HEADS.values() else None)
        if arch and on:
            of = f"{arch} on backbone {on}"
        what = f"a {task} checkpoint" + (f" of {of}" if of else "") + f" ({made_by})"
    return CheckpointInfo(
        path=path,
        state=dict(state),
        weights=tensors,
        task=task,
        arch=arch,
        backbone=family,
        description=what,
    )


def _recorded_backbone(state: Mapping) -> str | None:
    """The ``model.backbone`` name a checkpoint's recorded config swapped in, if any."""
    config = state.get("config")
    model = config.get("model") if isinstance(config, Mapping) else None
    backbone = model.get("backbone") if isinstance(model, Mapping) else None
    if isinstance(backbone, Mapping):
        backbone = backbone.get("name")
    return backbone if isinstance(backbone, str) else None


def _inspect_onnx(path: Path) -> CheckpointInfo:
    """A densemnv3 ONNX file: its metadata records the config, the task and what it outputs;
    its graph must take and give what the metadata declares, with finite weights (read without
    running it: :mod:`densemnv3.runtimes.signature`)."""
    try:
        import onnx

        from densemnv3.runtimes.metadata import metadata_of

        proto = onnx.load(str(path), load_external_data=False)
        metadata = metadata_of(proto)
    except ImportError:
        raise CheckpointError(
            f"{path}: reading an ONNX file needs the 'onnx' package, which is not "
            f"installed: pip install densemnv3[export]"
        ) from None
    except Exception:  # noqa: BLE001 - protobuf raises its own errors for arbitrary bytes
        raise CheckpointError(
            f"{path}: not a readable ONNX model ({path.stat().st_size} bytes, "
            f"truncated or damaged); "
            f"write one with tools/export.py or tools/quantize.py"
        ) from None
    if metadata.get("task") == "multitask" and metadata.get("outputs") != "multitask_raw":
        raise CheckpointError(
            f"{path}: a multi-task ONNX file (logits, boxes and scores without NMS), which "
            f"the tools do not run; run it in onnxruntime, or give the tools "
            f"tools/quantize.py's file or the checkpoint it was exported from (best.pt)"
        )
    if (
        not isinstance(metadata.get("config"), Mapping)
        or metadata.get("task") not in EXPORTED_TASKS
    ):
        raise CheckpointError(
            f"{path}: an ONNX model not written by densemnv3 (its metadata records no "
            f"config); the tools run the files of tools/export.py and tools/quantize.py"
        )
    from densemnv3.runtimes.signature import check_graph, onnx_float_weights, onnx_signature

    from .weights import check_finite

    check_graph(
        path,
        metadata,
        *onnx_signature(proto),
        remedy="export the checkpoint with tools/export.py or tools/quantize.py",
    )
    check_finite(onnx_float_weights(proto), what=f"{path}: its graph")
    arch = str(metadata.get("arch"))
    made_by = "tools/quantize.py" if metadata.get("precision") == "int8" else "tools/export.py"
    what = f"an {metadata.get('precision', 'fp32')} ONNX {metadata['task']} model of {arch} ({made_by})"
    return CheckpointInfo(
        path=path,
        state=metadata,
        weights={},
        task=metadata["task"],
        arch=arch,
        backbone=None,
        description=what,
        format="onnx",
    )


def _inspect_pte(path: Path) -> CheckpointInfo:
    """A densemnv3 ExecuTorch program: its ``densemnv3_metadata`` method returns the metadata an
    ONNX file records (:mod:`densemnv3.runtimes.executorch_engine`); its ``forward`` must take
    and give what the metadata declares (:mod:`densemnv3.runtimes.signature`)."""
    from densemnv3.runtimes.executorch_engine import read_pte

    try:
        metadata, signature = read_pte(path)
    except ImportError:
        raise CheckpointError(
            f"{path}: reading an ExecuTorch program needs the 'executorch' package, which "
            f"is not installed: pip install densemnv3[executorch]"
        ) from None
    except Exception:  # noqa: BLE001 - the runtime raises RuntimeError with an error code; JSON errors
        raise CheckpointError(
            f"{path}: not a readable ExecuTorch program ({path.stat().st_size} bytes, "
            f"truncated or damaged); write one with tools/export.py --format executorch"
        ) from None
    if (
        not isinstance(metadata.get("config"), Mapping)
        or metadata.get("task") not in EXPORTED_TASKS
    ):
        raise CheckpointError(
            f"{path}: an ExecuTorch program not written by densemnv3 (it records no "
            f"config); the tools run the .pte files of tools/export.py --format executorch"
        )
    if signature is not None:  # without a forward the engine says so when it loads
        from densemnv3.runtimes.signature import check_graph

        check_graph(
            path,
            metadata,
            *signature,
            remedy="export the checkpoint with tools/export.py --format executorch",
        )
    arch = str(metadata.get("arch"))
    what = f"an {metadata.get('precision', 'fp32')} ExecuTorch {metadata['task']} model of {arch} (tools/export.py)"
    return CheckpointInfo(
        path=path,
        state=metadata,
        weights={},
        task=metadata["task"],
        arch=arch,
        backbone=None,
        description=what,
        format="pte",
    )


def pytorch_only(info: CheckpointInfo, use: str) -> None:
    """Raise the one :class:`CheckpointError` for an exported file (ONNX, ``.pte``) where ``use``
    needs PyTorch weights."""
    if info.exported:
        raise CheckpointError(
            f"{info.path}: {info.description}, which runs in a runtime (eval tools, "
            f"Predictor, demo, benchmark) but holds no PyTorch weights for {use}; "
            f"give the checkpoint it was made from (best.pt)"
        )


def _task(weights: Mapping[str, Tensor], arch: str | None) -> str | None:
    keys = list(weights)
    if any(k.startswith("seg.") for k in keys) and any(k.startswith("det.head.") for k in keys):
        return "multitask"  # LRASPPSSDLite: an SSDLite ("det.") and an LR-ASPP head ("seg.")
    if arch is not None:
        return "segmentation" if arch.startswith("lraspp") else "detection"
    if any(k.endswith("low_classifier.weight") for k in keys):
        return "segmentation"  # LR-ASPP: densemnv3 "head." or torchvision "classifier."
    if any(k.startswith(("head.classification", "head.regression")) for k in keys):
        return "detection"  # SSDLite: densemnv3 or torchvision layout
    if backbone_family(weights) and not any(
        k.startswith(("backbone.", "head.", "extra.", "rpn.", "roi_heads.")) for k in keys
    ):
        return "classification"  # a torchvision MobileNet, ShuffleNet or ResNet (ImageNet)
    return None


def load_weights(
    model: nn.Module, checkpoint: str | os.PathLike | CheckpointInfo, *, task: str, model_name: str
) -> CheckpointInfo:
    """Load a checkpoint into ``model`` (a ``model_name`` for ``task``); a file of another task,
    architecture or model raises :class:`CheckpointError` naming the file and what it is.

    A multi-task model also takes a segmentation or detection checkpoint: it loads into that
    part (:meth:`~densemnv3.models.LRASPPSSDLite.single_task_view`), backbone included."""
    from .weights import load_state_dict_checked

    info = checkpoint if isinstance(checkpoint, CheckpointInfo) else inspect_checkpoint(checkpoint)
    pytorch_only(info, "a PyTorch model (training, --resume, model.weights, export, quantization)")
    builds = f"the config builds a {task} model, {model_name}"
    part = None
    if task == "multitask" and info.task in ("segmentation", "detection"):
        model = part = model.single_task_view(info.task)  # an architecture of its own: any arch
        builds += f" (loading its {info.task} part)"
    if info.task == "classification":
        raise CheckpointError(
            f"{info.path}: {info.description}, without the {task} head; use it "
            f"as model.backbone_weights, and give the whole model's checkpoint here"
        )
    if info.task is None:
        raise CheckpointError(
            f"{info.path}: {info.description}, not an LR-ASPP or SSDLite checkpoint; {builds}"
        )
    if info.task != task and part is None:
        raise CheckpointError(
            f"{info.path}: {info.description}, but {builds}; use it with "
            f"{_TOOLS[info.task]} and the config it was trained with"
        )
    own = backbone_family(model.state_dict())
    other_arch = part is None and info.arch not in (None, model_name)
    if other_arch or (info.backbone and own and info.backbone != own):
        raise CheckpointError(
            f"{info.path}: {info.description}, but {builds}"
            + (f" on {own}" if own else "")
            + "; pass the config it was trained with"
        )
    try:
        load_state_dict_checked(model, info.weights)
    except CheckpointError as err:
        into = f" into the {info.task} part of the multi-task model" if part is not None else ""
        raise CheckpointError(f"{info.path}: {info.description}{into}; {err}") from None
    return info
