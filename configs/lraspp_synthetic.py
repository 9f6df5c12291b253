"""LR-ASPP, MobileNetV3-Large, on the built-in synthetic street scenes: the out-of-the-box run.

The dataset is generated under ``data/synthetic`` on first use (~20 s). Training uses 128x256
crops at the images' native scale: about 0.27 s per iteration on 2 CPU cores with channels_last,
decoded images cached in RAM and no loader processes, so the 1800 iterations take about 8
minutes there; see BENCHMARKS.md for the mIoU it reaches.
"""

from configs.lraspp_cityscapes import cfg
from densemnv3.config import SyntheticConfig

cfg.model.options = {"pool": "global", "output_stride": 16}
cfg.data.root = "data/synthetic"
cfg.data.synthetic = SyntheticConfig(train=240, val=40, size=(256, 512), seed=0)
cfg.data.crop_size = (128, 256)
cfg.data.scale_range = (0.75, 1.25)
cfg.data.eval_resize = None
cfg.data.batch_size = 8
cfg.data.workers = 0  # on 2 cores loader processes only compete with the training threads
cfg.data.cache_images = True
cfg.optim.lr = 0.1
cfg.schedule.iters = 1800
cfg.schedule.warmup_iters = 50
cfg.schedule.min_lr = 0.0
cfg.train.sync_bn = False
cfg.train.channels_last = True
cfg.train.eval_interval = 300
cfg.train.checkpoint_interval = 300
cfg.train.log_interval = 10
cfg.work_dir = "work_dirs/lraspp_synthetic"
