"""LR-ASPP, MobileNetV3-Small, on Cityscapes (paper: 68.38 mIoU from scratch; mmseg: 64.16)."""

from densemnv3.configs.lraspp_cityscapes import cfg

cfg.model.name = "lraspp_mobilenet_v3_small"
cfg.work_dir = "work_dirs/lraspp_mnv3small_cityscapes"
