"""LR-ASPP + SSDLite on one MobileNetV3-Large pass, on the built-in synthetic street scenes.

Shares the generated set with configs/lraspp_synthetic.py and configs/ssdlite_synthetic.py
(``data/synthetic``, made on first use): the masks come from the ``_labelIds`` files, the boxes
from the ``_instanceIds`` files of the same images. 1000 steps of 8 crops; BENCHMARKS.md gives the
mIoU and AP50 it reaches and the time. How the recipe was chosen, each measured on this set:

- The shared backbone undilated with the reduced tail (the builder's default): the cheapest of
  the four options in training and inference, and as good as the dilated one after 150 steps
  (README, "the multi-task model").
- MobileNetV3-Large on 192x384 crops rather than V3-Small on whole 256x512 images: after about
  three minutes' training each, 0.26 mIoU / 0.18 AP50 (Large, 270 steps) against 0.21 / 0.08
  (Small, 150 steps); 128x256 crops gave 0.22 / 0.14 in 420 steps.
- Default boxes sized for the whole 256x512 image (``anchor_size``), since training sees crops:
  with boxes relative to the crop they would be smaller in training than at evaluation.
- As configs/ssdlite_synthetic.py: AdamW 3e-3, default-box scales 0.1-0.9 (small things), and
  BatchNorm momentum 0.1 (a short run); decoded images cached, one loader process (as
  configs/lraspp_synthetic.py: it overlaps decoding with the step on 2 cores).
- ``loss.seg_weight=2``: the detection loss is about three times the cross entropy late in the
  run. Weights 1 and 1 gave 0.514 mIoU / 0.606 AP50 at step 1000; 2 and 1 gave 0.552 / 0.591.
"""

from densemnv3.config import LossConfig, OptimConfig, ScheduleConfig, SyntheticConfig, TrainConfig
from densemnv3.configs.multitask_cityscapes import cfg

cfg.model.options = {
    "output_stride": 32,
    "reduced_tail": True,
    "det_num_classes": 9,
    "pool": "global",
    "anchor_scale_range": (0.1, 0.9),
    "anchor_size": (256, 512),
    "bn_momentum": 0.1,
}
cfg.data.root = "data/synthetic"
cfg.data.synthetic = SyntheticConfig(train=240, val=40, size=(256, 512), seed=0)
cfg.data.crop_size, cfg.data.scale_range, cfg.data.eval_resize = (192, 384), (0.75, 1.25), None
cfg.data.batch_size, cfg.data.eval_batch_size = 8, 8
cfg.data.workers, cfg.data.cache_images = 1, True
cfg.optim = OptimConfig(name="adamw", lr=0.003, weight_decay=4e-5)
cfg.schedule = ScheduleConfig(iters=1000, policy="poly", warmup_iters=50)
cfg.train = TrainConfig(
    sync_bn=False, channels_last=True, eval_interval=500, checkpoint_interval=500, log_interval=10
)
cfg.loss = LossConfig(seg_weight=2.0, det_weight=1.0)
cfg.work_dir = "work_dirs/multitask_synthetic"
