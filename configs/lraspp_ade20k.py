"""LR-ASPP, MobileNetV3-Large, on ADE20K (SceneParsing, 150 classes): mmsegmentation's schedule.

Point ``data.root`` at ``ADEChallengeData2016`` (``images/{training,validation}/*.jpg`` and
``annotations/{training,validation}/*.png``; mask value 0, "other", is ignored and k is class
k-1). mmsegmentation trains its ADE20K models on 512x512 crops, batch 16, 160k iterations, SGD lr
0.01 with poly decay: ``torchrun --nproc_per_node=4 tools/train_seg.py configs/lraspp_ade20k.py
--set data.root=/data/ADEChallengeData2016``. Not measured here (no ADE20K on the benchmark
host); the synthetic set in the ADE20K layout runs it end to end
(``densemnv3 make-synthetic --out /tmp/ade --format ade20k``).
"""

from densemnv3.config import DataConfig
from densemnv3.configs.lraspp_cityscapes import cfg

cfg.model.num_classes = 150
cfg.model.options = {"pool": "global"}
cfg.data = DataConfig(
    format="ade20k",
    root="data/ADEChallengeData2016",
    batch_size=4,
    eval_batch_size=1,  # ADE20K images have different sizes
    workers=4,
    crop_size=(512, 512),
    scale_range=(0.5, 2.0),
)
cfg.schedule.iters = 160_000
cfg.work_dir = "work_dirs/lraspp_ade20k"
