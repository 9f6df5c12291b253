"""Models: backbones with feature taps, LR-ASPP segmentation, SSDLite detection, and both on one
backbone pass (the multi-task model). A file to a ready model (a checkpoint or an exported file):
:func:`densemnv3.load.load_model`."""

from densemnv3.checkpoint import (
    CheckpointInfo,
    LoadResult,
    inspect_checkpoint,
    load_state_dict_checked,
    load_weights,
    read_checkpoint,
)
from densemnv3.utils.lazy import moved_names

from .backbones import (
    FeatureBackbone,
    FeatureInfo,
    FeatureInfoMap,
    create_backbone,
    list_backbones,
    register_backbone,
)
from .build import build_model
from .detection import (
    SSDLite,
    ssdlite,
    ssdlite320_mobilenet_v3_large,
    ssdlite320_mobilenet_v3_small,
)
from .frameworks import DetectionBackbone, torchvision_detection_backbone
from .multitask import (
    LRASPPSSDLite,
    MultiTaskOutput,
    lraspp_ssdlite,
    multitask_mobilenet_v3_large,
    multitask_mobilenet_v3_small,
)
from .registry import MODELS, list_models, register_model
from .segmentation import LRASPP, lraspp, lraspp_mobilenet_v3_large, lraspp_mobilenet_v3_small

__all__ = [
    "LRASPP",
    "LRASPPSSDLite",
    "SSDLite",
    "CheckpointInfo",
    "DetectionBackbone",
    "FeatureBackbone",
    "FeatureInfo",
    "FeatureInfoMap",
    "LoadResult",
    "MODELS",
    "MultiTaskOutput",
    "build_model",
    "create_backbone",
    "inspect_checkpoint",
    "list_backbones",
    "list_models",
    "load_state_dict_checked",
    "load_weights",
    "lraspp",
    "lraspp_mobilenet_v3_large",
    "lraspp_mobilenet_v3_small",
    "lraspp_ssdlite",
    "multitask_mobilenet_v3_large",
    "multitask_mobilenet_v3_small",
    "read_checkpoint",
    "register_backbone",
    "register_model",
    "ssdlite",
    "ssdlite320_mobilenet_v3_large",
    "ssdlite320_mobilenet_v3_small",
    "torchvision_detection_backbone",
]


#: Names that moved out of this package, kept for one release with a warning.
_MOVED = {"load_model": "densemnv3.load", "LoadedModel": "densemnv3.load"}
__getattr__ = moved_names(__name__, _MOVED)
