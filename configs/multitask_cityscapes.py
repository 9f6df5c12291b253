"""LR-ASPP + SSDLite on one MobileNetV3-Large pass, on Cityscapes: label maps and thing boxes.

Data: ``data.root`` holds ``leftImg8bit/`` and ``gtFine/`` with ``*_labelIds.png`` (the 19
classes) and ``*_instanceIds.png`` (the boxes of person, rider, car, truck, bus, train,
motorcycle and bicycle; group regions are crowd, ignored). ``python tools/train.py
configs/multitask_cityscapes.py --set data.root=/data/cityscapes``, on 4 GPUs with ``torchrun
--nproc_per_node=4`` (4 x batch 4 = 16). Evaluation: the full 1024x2048 image, mIoU on the 19
classes and COCO AP on the 8 things, in ``metrics.json``.

The recipe joins the two single-task ones and has not been run here (no Cityscapes, no GPU in
this project's sessions; the synthetic config is what was measured):

- Backbone: undilated, reduced tail (``output_stride=32, reduced_tail=True``), the cheapest
  shared backbone measured (README, "the multi-task model"); the paper's LR-ASPP uses the
  reduced tail too. Train from scratch as the paper, or start the backbone from a local
  torchvision ImageNet checkpoint (``model.backbone_weights``), or the heads from single-task
  checkpoints (``model.weights=[lraspp.pt, ssdlite.pt]``).
- Data and engine from ``configs/lraspp_cityscapes.py`` (this config derives from it): 512x1024
  crops of the image scaled 0.5-2.0, flip, colour jitter, batch 4 per GPU, AMP, SyncBN; the
  paper's 49x49 gate pool (tuned for 1024x2048 input).
- Detection: the crops are half the evaluated image, so the default boxes keep the pixel size of
  a 1024x2048 image (``anchor_size``); their scales 0.02-0.5 of it (20-512 px high) span
  Cityscapes' things, which are far smaller than COCO's relative to the image.
- Optimiser: AdamW 1e-3 (SSDLite from scratch trains far faster with AdamW than with SGD here,
  see configs/ssdlite_synthetic.py), weight decay 4e-5, poly decay, 1000 warm-up iterations;
  160k iterations (half of mmsegmentation's 320k: the detection loss converges sooner, and the
  segmentation schedule is the longer one, so a run takes about as long as the LR-ASPP one per
  iteration allows). BatchNorm momentum 0.01 (MobileNetV3's) and synchronised across GPUs.
- Loss: cross entropy + SSD loss with weights 1 and 1 (``loss.seg_weight``, ``loss.det_weight``).
"""

from densemnv3.config import LossConfig, ModelConfig, OptimConfig, ScheduleConfig
from densemnv3.configs.lraspp_cityscapes import cfg

# data (512x1024 crops, batch 4 per GPU) and engine (AMP, SyncBN, intervals): LR-ASPP's
cfg.task = "multitask"
cfg.model = ModelConfig(
    name="multitask_mobilenet_v3_large",
    num_classes=19,
    options={
        "output_stride": 32,
        "reduced_tail": True,
        "det_num_classes": 9,  # 8 thing classes + background
        "pool": "paper",
        "anchor_size": (1024, 2048),
        "anchor_scale_range": (0.02, 0.5),
        "bn_momentum": 0.01,
    },
    backbone_weights=None,  # e.g. a local torchvision mobilenet_v3_large ImageNet checkpoint
)
cfg.optim = OptimConfig(name="adamw", lr=1e-3, weight_decay=4e-5)
cfg.schedule = ScheduleConfig(
    iters=160_000, policy="poly", power=0.9, warmup_iters=1000, min_lr=1e-5
)
cfg.loss = LossConfig(seg_weight=1.0, det_weight=1.0)
cfg.work_dir = "work_dirs/multitask_cityscapes"
