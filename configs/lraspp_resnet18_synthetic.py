"""LR-ASPP on torchvision's ResNet-18 (``tv:resnet18``), on the built-in synthetic street scenes.

The out-of-the-box run (configs/lraspp_synthetic.py) with another backbone: ``model.name`` is the
generic ``lraspp`` and ``model.backbone`` names any backbone — a registered one
(``shufflenet_v2``), ``tv:<torchvision model>`` or ``timm:<timm model>``. Here ResNet-18 is dilated
to output stride 16 (its ``layer4`` runs at stride 16 with dilation 2, as torchvision's
``replace_stride_with_dilation`` would); LR-ASPP reads ``C3`` (``layer2``, 128 channels, stride 8)
and ``C5`` (``layer4``, 512 channels). Load ImageNet weights from a local torchvision file with
``--set model.backbone_weights=/path/to/resnet18-f37072fd.pth``; none are downloaded.
"""

from densemnv3.configs.lraspp_synthetic import cfg

cfg.model.name = "lraspp"
cfg.model.backbone = {"name": "tv:resnet18", "output_stride": 16}
cfg.model.options = {"pool": "global"}
cfg.work_dir = "work_dirs/lraspp_resnet18_synthetic"
