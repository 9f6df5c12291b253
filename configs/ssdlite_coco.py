"""SSDLite320, MobileNetV3-Large (reduced tail), on COCO: torchvision's recipe (21.3 box mAP).

No ImageNet pretraining; SGD lr 0.15 with cosine decay, weight decay 4e-5, 660 epochs, batch 24
per GPU on 8 GPUs: ``torchrun --nproc_per_node=8 tools/train_det.py configs/ssdlite_coco.py
--set data.root=/data/coco`` (a folder with train2017/, val2017/ and annotations/).
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
    task="detection",
    model=ModelConfig(
        name="ssdlite320_mobilenet_v3_large",
        num_classes=91,  # labels are COCO category ids, as in torchvision (0 = background)
        options={"reduced_tail": True},
    ),
    data=DataConfig(
        root="data/coco",
        train_split="train",
        val_split="val",
        train_images="train2017",
        train_ann="annotations/instances_train2017.json",
        val_images="val2017",
        val_ann="annotations/instances_val2017.json",
        label_mapping="category_id",
        image_size=320,
        batch_size=24,
        eval_batch_size=32,
        workers=8,
    ),
    optim=OptimConfig(lr=0.15, momentum=0.9, weight_decay=4e-5),
    schedule=ScheduleConfig(epochs=660, policy="cosine", warmup_iters=0),
    train=TrainConfig(
        amp=True, sync_bn=False, eval_interval=20_000, checkpoint_interval=2000, log_interval=50
    ),
    work_dir="work_dirs/ssdlite_coco",
)
