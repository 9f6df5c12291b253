"""LR-ASPP, MobileNetV3-Large, on Cityscapes (the paper's set-up, mmsegmentation's schedule).

Paper (from scratch): 72.36 mIoU on val; mmseg LR-ASPP M-V3-D8: 69.54 mIoU (512x1024 crops, batch
16, 320k iterations). Point ``data.root`` at a folder with ``leftImg8bit/`` and ``gtFine/``:
``python tools/train_seg.py configs/lraspp_cityscapes.py --set data.root=/data/cityscapes``.
Run on 4 GPUs with ``torchrun --nproc_per_node=4`` (4 x batch 4 = 16).

PNG decoding is the loader's bottleneck on a GPU: write the decoded-sample cache once with
``python tools/cache_dataset.py configs/lraspp_cityscapes.py --set data.root=/data/cityscapes
data.decoded_cache=/fast/cache`` (~24 GB) and train with the same ``data.decoded_cache`` (and
enough ``data.workers``); see the README. Off by default.
"""

from densemnv3.config import (
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
)

cfg = Config(
    task="segmentation",
    model=ModelConfig(
        name="lraspp_mobilenet_v3_large",
        num_classes=19,
        # the paper's gate: a 49x49 average pool with stride (16, 20), tuned for 1024x2048 input
        options={"pool": "paper", "output_stride": 16},
        backbone_weights=None,  # e.g. a local torchvision mobilenet_v3_large ImageNet checkpoint
    ),
    data=DataConfig(
        root="data/cityscapes",
        batch_size=4,
        eval_batch_size=1,
        workers=4,
        crop_size=(512, 1024),
        scale_range=(0.5, 2.0),
    ),
    optim=OptimConfig(lr=0.01, momentum=0.9, weight_decay=4e-5),
    schedule=ScheduleConfig(
        iters=320_000, policy="poly", power=0.9, warmup_iters=1000, min_lr=1e-4
    ),
    train=TrainConfig(
        amp=True, sync_bn=True, eval_interval=16_000, checkpoint_interval=4000, log_interval=50
    ),
    work_dir="work_dirs/lraspp_cityscapes",
)
