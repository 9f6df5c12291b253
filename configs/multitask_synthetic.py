"""LR-ASPP + SSDLite on one MobileNetV3-Large pass, on the built-in synthetic street scenes.

Shares the generated set with configs/lraspp_synthetic.py and configs/ssdlite_synthetic.py
(``data/synthetic``, made on first use): the masks come from the ``_labelIds`` files, the boxes
from the ``_instanceIds`` files of the same images. Recipe (draft, being measured).
"""

from configs.multitask_cityscapes import cfg
from densemnv3.config import OptimConfig, ScheduleConfig, SyntheticConfig, TrainConfig

cfg.model.options = {
    "output_stride": 32,
    "reduced_tail": True,
    "det_num_classes": 9,
    "pool": "global",
    "anchor_scale_range": (0.1, 0.9),  # synthetic things are small: as configs/ssdlite_synthetic.py
    "anchor_size": (256, 512),  # default boxes sized for the whole image, also on training crops
    "bn_momentum": 0.1,
}
cfg.data.root = "data/synthetic"
cfg.data.synthetic = SyntheticConfig(train=240, val=40, size=(256, 512), seed=0)
cfg.data.crop_size, cfg.data.scale_range, cfg.data.eval_resize = (192, 384), (0.75, 1.25), None
cfg.data.batch_size, cfg.data.eval_batch_size = 8, 8
cfg.data.workers, cfg.data.cache_images = 0, True  # on 2 cores loader processes only compete
cfg.optim = OptimConfig(name="adamw", lr=0.003, weight_decay=4e-5)
cfg.schedule = ScheduleConfig(iters=1000, policy="poly", warmup_iters=50)
cfg.train = TrainConfig(sync_bn=False, channels_last=True, eval_interval=500, checkpoint_interval=500,
                        log_interval=10)
cfg.work_dir = "work_dirs/multitask_synthetic"
