"""densemnv3: MobileNetV3 dense prediction (LR-ASPP segmentation, SSDLite detection)."""

__version__ = "0.1.0"
