"""LR-ASPP, MobileNetV3-Large, on your own images and masks: a template to copy and edit.

The layout (``data.format = "folder"``)::

    data/my_dataset/
      classes.txt          one class per line in label order: "road" or "road 128 64 128"
      images/train/...     any image files (.jpg, .png, ...), in subfolders if you like
      masks/train/...      one mask per image: the same relative path and name, .png
      images/val/...
      masks/val/...

Without the ``train/``/``val/`` folders, list each split's names in ``train.txt`` and ``val.txt``
beside ``images/`` and ``masks/``. A mask holds class indices 0..K-1 and 255 for pixels not to
learn from (single-channel or palette PNGs), or RGB colours given in ``classes.txt`` (black:
ignore). Instead of ``classes.txt``, the names can be ``cfg.data.classes`` below (and the
colours ``cfg.data.palette``). Look at the data before training:
``densemnv3 data check configs/lraspp_folder.py`` (class shares, every problem, a contact sheet).
"""

from densemnv3.config import DataConfig, ScheduleConfig
from densemnv3.configs.lraspp_cityscapes import cfg

cfg.model.num_classes = None  # the dataset's: as many as classes.txt names
cfg.model.options = {"pool": "global"}
cfg.model.backbone_weights = None  # a local torchvision ImageNet checkpoint: worth it on small sets
cfg.data = DataConfig(
    format="folder",
    root="data/my_dataset",
    classes=None,  # e.g. ("background", "crack"); None: classes.txt / classes.json
    palette=None,  # e.g. ((0, 0, 0), (255, 0, 0)) for RGB masks; None: from classes.txt
    ignore_index=255,
    batch_size=8,
    eval_batch_size=1,
    workers=4,
    crop_size=(512, 512),
    scale_range=(0.5, 2.0),
)
cfg.schedule = ScheduleConfig(iters=20_000, policy="poly", power=0.9, warmup_iters=500)
cfg.train.sync_bn = False
cfg.train.eval_interval = 1000
cfg.train.checkpoint_interval = 1000
cfg.train.log_interval = 20
cfg.work_dir = "work_dirs/lraspp_folder"
