"""Models: backbones with feature taps, LR-ASPP segmentation, SSDLite detection, and both on one
backbone pass (the multi-task model)."""

from .backbones import (
    FeatureBackbone,
    FeatureInfo,
    FeatureInfoMap,
    create_backbone,
    list_backbones,
    register_backbone,
)
from .detection import (
    SSDLite,
    ssdlite,
    ssdlite320_mobilenet_v3_large,
    ssdlite320_mobilenet_v3_small,
)
from .frameworks import DetectionBackbone, torchvision_detection_backbone
from .identify import CheckpointInfo, inspect_checkpoint, load_weights, read_checkpoint
from .loader import LoadedModel, load_model
from .multitask import (
    LRASPPSSDLite,
    MultiTaskOutput,
    lraspp_ssdlite,
    multitask_mobilenet_v3_large,
    multitask_mobilenet_v3_small,
)
from .registry import MODELS, build_model, list_models, register_model
from .segmentation import LRASPP, lraspp, lraspp_mobilenet_v3_large, lraspp_mobilenet_v3_small
from .weights import LoadResult, load_state_dict_checked

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
    "LoadedModel",
    "MODELS",
    "MultiTaskOutput",
    "build_model",
    "create_backbone",
    "inspect_checkpoint",
    "list_backbones",
    "list_models",
    "load_model",
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
