"""LR-ASPP, MobileNetV3-Large, on Pascal VOC 2012 (21 classes): torchvision's recipe.

torchvision's ``lraspp_mobilenet_v3_large`` weights (57.9 mIoU) were trained on COCO images with
the VOC classes by this recipe: 30 epochs, SGD lr 0.01 (momentum 0.9, weight decay 1e-6), poly
0.9, batch 4 on 8 GPUs, random scale then 480x480 crops, global-pooling gate, ImageNet-pretrained
backbone. Point ``data.root`` at ``VOCdevkit/VOC2012`` (``JPEGImages/``,
``SegmentationClass/``, ``ImageSets/Segmentation/``); with SBD's ``SegmentationClassAug`` and
its list ``ImageSets/Segmentation/train_aug.txt`` beside them, train on the 10,582 images with
``--set data.train_split=train_aug``:
``torchrun --nproc_per_node=8 tools/train_seg.py configs/lraspp_voc.py --set
data.root=/data/VOCdevkit/VOC2012 model.backbone_weights=/ckpt/mobilenet_v3_large.pth``.
"""

from densemnv3.config import DataConfig, OptimConfig, ScheduleConfig
from densemnv3.configs.lraspp_cityscapes import cfg

cfg.model.num_classes = 21
cfg.model.options = {"pool": "global"}  # torchvision's gate; output stride 16 (dilated C5)
cfg.data = DataConfig(
    format="voc",
    root="data/VOCdevkit/VOC2012",
    batch_size=4,
    eval_batch_size=1,  # VOC images have different sizes
    workers=4,
    crop_size=(480, 480),
    scale_range=(0.5, 2.0),
)
cfg.optim = OptimConfig(lr=0.01, momentum=0.9, weight_decay=1e-6)
cfg.schedule = ScheduleConfig(epochs=30, policy="poly", power=0.9)
cfg.train.eval_interval = 2000
cfg.train.checkpoint_interval = 1000
cfg.work_dir = "work_dirs/lraspp_voc"
