"""Models: backbones with feature taps, LR-ASPP segmentation, SSDLite detection."""

from .backbones import (
    FeatureBackbone,
    FeatureInfo,
    create_backbone,
    list_backbones,
    register_backbone,
)
from .weights import LoadResult, load_torchvision_weights, read_checkpoint

__all__ = [
    "FeatureBackbone",
    "FeatureInfo",
    "LoadResult",
    "create_backbone",
    "list_backbones",
    "load_torchvision_weights",
    "read_checkpoint",
    "register_backbone",
]
