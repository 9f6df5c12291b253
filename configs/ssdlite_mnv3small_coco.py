"""SSDLite320, MobileNetV3-Small (reduced tail), on COCO (paper: 16.1 mAP)."""

from densemnv3.configs.ssdlite_coco import cfg

cfg.model.name = "ssdlite320_mobilenet_v3_small"
cfg.work_dir = "work_dirs/ssdlite_mnv3small_coco"
