"""SSDLite on ShuffleNetV2 1.0 (a native backbone), on the built-in synthetic street scenes.

configs/ssdlite_synthetic.py with another backbone. ShuffleNetV2 has no expansion output, so
SSDLite's first map is its stage tap at stride 16, ``C4`` (``stage3``, 232 channels), and the
second ``C5`` (``conv5``, 1024 channels, stride 32). The head options (default-box scales,
BatchNorm momentum) are the MobileNetV3-Small config's.
"""

from densemnv3.configs.ssdlite_synthetic import cfg

cfg.model.name = "ssdlite"
cfg.model.backbone = "shufflenet_v2"
del cfg.model.options[
    "reduced_tail"
]  # MobileNetV3's; ShuffleNetV2 options would go in model.backbone
cfg.work_dir = "work_dirs/ssdlite_shufflenet_synthetic"
