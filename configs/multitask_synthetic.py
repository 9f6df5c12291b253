"""LR-ASPP + SSDLite on one MobileNetV3-Large pass, on the built-in synthetic street scenes.

Shares the generated set with configs/lraspp_synthetic.py and configs/ssdlite_synthetic.py
(``data/synthetic``, made on first use): the masks come from the ``_labelIds`` files, the boxes
from the ``_instanceIds`` files of the same images. Recipe (draft, being measured).
"""

from configs.multitask_cityscapes import cfg
from densemnv3.config import SyntheticConfig

cfg.model.options = {
    "output_stride": 32,
    "reduced_tail": True,
    "det_num_classes": 9,
    "anchor_scale_range": (0.1, 0.9),
    "anchor_size": (256, 512),
    "bn_momentum": 0.1,
}
cfg.data.root = "data/synthetic"
cfg.data.synthetic = SyntheticConfig(train=240, val=40, size=(256, 512), seed=0)
cfg.data.crop_size = (192, 384)
cfg.data.scale_range = (0.75, 1.25)
cfg.data.eval_resize = None
cfg.data.batch_size = 8
cfg.data.eval_batch_size = 8
cfg.data.workers = 0
cfg.data.cache_images = True
cfg.optim.name = "adamw"
cfg.optim.lr = 0.003
cfg.optim.weight_decay = 4e-5
cfg.schedule.iters = 1400
cfg.schedule.warmup_iters = 50
cfg.schedule.min_lr = 0.0
cfg.train.sync_bn = False
cfg.train.channels_last = True
cfg.train.eval_interval = 700
cfg.train.checkpoint_interval = 700
cfg.train.log_interval = 10
cfg.work_dir = "work_dirs/multitask_synthetic"
