"""Backbones with named feature taps and a registry: MobileNetV1/V2/V3 and ShuffleNetV2 natively,
any torchvision (``tv:``) or timm (``timm:``) model by name."""

from .base import BlockSpec, FeatureBackbone, FeatureInfo, FeatureInfoMap, make_divisible
from .mobilenet_v1 import mobilenet_v1
from .mobilenet_v2 import mobilenet_v2
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from .registry import FeatureList, create_backbone, list_backbones, register_backbone, select_taps
from .shufflenet_v2 import shufflenet_v2

__all__ = [
    "BlockSpec",
    "FeatureBackbone",
    "FeatureInfo",
    "FeatureInfoMap",
    "FeatureList",
    "create_backbone",
    "list_backbones",
    "make_divisible",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "register_backbone",
    "select_taps",
    "shufflenet_v2",
]
