"""LR-ASPP, MobileNetV3-Large, on the built-in synthetic street scenes: the out-of-the-box run.

The dataset is generated under ``data/synthetic`` on first use (~15 s). Training uses 128x256
crops at the images' native scale, batch 8, channels_last, decoded images cached in RAM and no
loader processes. The backbone has the paper's *reduced tail* (the last stage's channels halved,
as the MobileNetV3 paper does for segmentation and detection): on this CPU the dilated last stage
is half the training step, so the reduced tail buys ~1.9x the iterations in the same time, which
is worth more here than its width (val mIoU 0.669 after 3000 iterations vs 0.579 after 1800 with
the full tail). See BENCHMARKS.md for each recipe measured.
"""

from configs.lraspp_cityscapes import cfg
from densemnv3.config import SyntheticConfig

cfg.model.options = {"pool": "global", "output_stride": 16, "reduced_tail": True}
cfg.data.root = "data/synthetic"
cfg.data.synthetic = SyntheticConfig(train=240, val=40, size=(256, 512), seed=0)
cfg.data.crop_size = (128, 256)
cfg.data.scale_range = (0.75, 1.25)
cfg.data.eval_resize = None
cfg.data.batch_size = 8
cfg.data.workers = 0  # on 2 cores loader processes only compete with the training threads
cfg.data.cache_images = True
cfg.optim.lr = 0.1
cfg.schedule.iters = 3000
cfg.schedule.warmup_iters = 50
cfg.schedule.min_lr = 0.0
cfg.train.sync_bn = False
cfg.train.channels_last = True
cfg.train.eval_interval = 500
cfg.train.checkpoint_interval = 500
cfg.train.log_interval = 10
cfg.work_dir = "work_dirs/lraspp_synthetic"
