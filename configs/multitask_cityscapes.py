"""LR-ASPP + SSDLite on one MobileNetV3-Large pass, on Cityscapes (draft)."""

from densemnv3.config import (
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
)

cfg = Config(
    task="multitask",
    model=ModelConfig(
        name="multitask_mobilenet_v3_large",
        num_classes=19,
        options={"output_stride": 32, "reduced_tail": True, "det_num_classes": 9},
    ),
    data=DataConfig(root="data/cityscapes", batch_size=4, eval_batch_size=1, workers=4,
                    crop_size=(512, 1024), scale_range=(0.5, 2.0)),
    optim=OptimConfig(lr=0.01, momentum=0.9, weight_decay=4e-5),
    schedule=ScheduleConfig(iters=320_000, policy="poly", power=0.9, warmup_iters=1000, min_lr=1e-4),
    train=TrainConfig(amp=True, sync_bn=True, eval_interval=16_000, checkpoint_interval=4000, log_interval=50),
    loss=LossConfig(seg_weight=1.0, det_weight=1.0),
    work_dir="work_dirs/multitask_cityscapes",
)
