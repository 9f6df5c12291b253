"""SSDLite320, MobileNetV3-Large, on Pascal VOC detection (20 classes).

Point ``data.root`` at ``VOCdevkit/VOC2012`` (or VOC2007): ``Annotations/*.xml``,
``JPEGImages/``, and the splits' names in ``ImageSets/Main/{train,val}.txt``. Boxes marked
``difficult`` are neither trained on nor counted against the model (COCO's crowd), as VOC's own
metric does; evaluation is pycocotools' COCO AP (AP50 is the VOC-style number). Class names are
VOC's 20 unless ``classes.txt`` in the root or ``data.classes`` gives others. The schedule is
torchvision's SSDLite one for COCO, shortened for VOC's 11k images (not measured here):
``torchrun --nproc_per_node=8 tools/train_det.py configs/ssdlite_voc.py --set
data.root=/data/VOCdevkit/VOC2012``.
"""

from densemnv3.config import DataConfig
from densemnv3.configs.ssdlite_coco import cfg

cfg.model.num_classes = 21  # VOC's 20 classes + the background
cfg.data = DataConfig(
    format="voc",
    root="data/VOCdevkit/VOC2012",
    image_size=320,
    batch_size=24,
    eval_batch_size=32,
    workers=8,
)
cfg.schedule.epochs = 300
cfg.schedule.warmup_iters = 500
cfg.train.eval_interval = 5000
cfg.work_dir = "work_dirs/ssdlite_voc"
