"""MobileNet backbones with named feature taps and a registry."""

from .base import BlockSpec, FeatureBackbone, FeatureInfo, make_divisible
from .mobilenet_v1 import mobilenet_v1
from .mobilenet_v2 import mobilenet_v2
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from .registry import create_backbone, list_backbones, register_backbone

__all__ = [
    "BlockSpec",
    "FeatureBackbone",
    "FeatureInfo",
    "create_backbone",
    "list_backbones",
    "make_divisible",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "register_backbone",
]
