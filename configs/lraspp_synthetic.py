"""LR-ASPP, MobileNetV3-Large, on the built-in synthetic street scenes: the out-of-the-box run.

The dataset is generated under ``data/synthetic`` on first use. Sized for 2 CPU cores in under
10 minutes, reaching val mIoU >= 0.60.
"""

from configs.lraspp_cityscapes import cfg
from densemnv3.config import SyntheticConfig

cfg.model.options = {"pool": "global", "output_stride": 16}
cfg.data.root = "data/synthetic"
cfg.data.synthetic = SyntheticConfig(train=240, val=40, size=(256, 512), seed=0)
cfg.data.crop_size = (192, 384)
cfg.data.scale_range = (0.5, 1.5)
cfg.data.eval_resize = None
cfg.data.batch_size = 8
cfg.data.workers = 2
cfg.optim.lr = 0.05
cfg.schedule.iters = 1000
cfg.schedule.warmup_iters = 50
cfg.schedule.min_lr = 0.0
cfg.train.sync_bn = False
cfg.train.eval_interval = 250
cfg.train.checkpoint_interval = 250
cfg.train.log_interval = 10
cfg.work_dir = "work_dirs/lraspp_synthetic"
