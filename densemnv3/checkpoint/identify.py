"""What a file given as weights is, told by its content (:mod:`.files`), whatever its name: a
densemnv3 training checkpoint, a torchvision model (of which task and backbone family), a
densemnv3 exported file (:mod:`.exported`), something else, or no checkpoint at all."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from densemnv3.errors import CheckpointError

from .exported import inspect_onnx, inspect_pte
from .files import FIX, TORCH_KINDS, file_kind, not_a_checkpoint, read_checkpoint
from .info import CheckpointInfo
from .state import unwrap_state_dict

__all__ = ["backbone_family", "inspect_checkpoint"]

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
    checkpoint by its content (:func:`~densemnv3.checkpoint.files.sniff`), whatever its suffix."""
    path = Path(path)
    onnx_name, pte_name = path.suffix.lower() == ".onnx", path.suffix.lower() == ".pte"
    if not path.is_file() and onnx_name:
        raise CheckpointError(f"{path}: ONNX file not found; check the path (--weights)")
    if not path.is_file() and pte_name:
        raise CheckpointError(f"{path}: ExecuTorch program not found; check the path (--weights)")
    kind = file_kind(path) if path.is_file() else None
    if kind == "onnx":
        return inspect_onnx(path)
    if kind == "pte":
        return inspect_pte(path)
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
    weights = unwrap_state_dict(state)
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
        on = _recorded_backbone(state) or (family if arch and not _names(arch, family) else None)
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


def _names(arch: str, family: str | None) -> bool:
    """Whether model name ``arch`` names backbone ``family`` (``lraspp_mobilenet_v3_large``
    does ``MobileNetV3-Large``; a generic ``lraspp`` names none)."""
    squeeze = str.maketrans("", "", "_-")
    return family is None or family.lower().translate(squeeze) in arch.lower().translate(squeeze)


def _recorded_backbone(state: Mapping) -> str | None:
    """The ``model.backbone`` name a checkpoint's recorded config swapped in, if any."""
    config = state.get("config")
    model = config.get("model") if isinstance(config, Mapping) else None
    backbone = model.get("backbone") if isinstance(model, Mapping) else None
    if isinstance(backbone, Mapping):
        backbone = backbone.get("name")
    return backbone if isinstance(backbone, str) else None


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
