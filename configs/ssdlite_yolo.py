"""SSDLite320, MobileNetV3-Large, on a YOLO-format dataset (ultralytics, Roboflow, CVAT exports).

Point ``data.root`` at the dataset's YAML (or the folder holding ``data.yaml``)::

    path: .                 # the dataset's root, relative to this file
    train: images/train     # image folders (or .txt lists of images), relative to path
    val: images/val
    names: {0: person, 1: car}

with one ``labels/.../NAME.txt`` per image (ultralytics' rule: ``images`` -> ``labels``), a line
``class cx cy w h`` per box, normalised to [0, 1]. ``model.num_classes`` is left to the dataset
(the names plus the background; training writes the number into its checkpoints). Evaluation is
pycocotools' COCO AP on the ground truth converted in memory; ``detections.json`` holds the
dataset's own class ids (0-based). Look at the data first:
``densemnv3 data check configs/ssdlite_yolo.py``. The schedule is torchvision's SSDLite one scaled
to a small set (not measured on a real one).
"""

from densemnv3.config import DataConfig
from densemnv3.configs.ssdlite_coco import cfg

cfg.model.num_classes = None  # the dataset's: the YAML's names + 1 (the background)
cfg.data = DataConfig(
    format="yolo",
    root="data/my_yolo/data.yaml",
    image_size=320,
    batch_size=24,
    eval_batch_size=32,
    workers=8,
)
cfg.schedule.epochs = 300
cfg.schedule.warmup_iters = 500
cfg.train.eval_interval = 2000
cfg.work_dir = "work_dirs/ssdlite_yolo"
