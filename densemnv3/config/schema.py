"""The config schema: every section of a run as a dataclass, and the tasks a run can be."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

#: The tasks a config (``Config.task``), a checkpoint and an exported file can be.
TASKS = ("segmentation", "detection", "multitask")
#: The task-specific tools of each task: ``tools/train{suffix}.py``, ``tools/eval{suffix}.py``
#: (``tools/train.py`` and ``tools/eval.py`` take any task).
TOOL_SUFFIX = {"segmentation": "_seg", "detection": "_det", "multitask": ""}


#: The kinds of unit NetAdapt shrinks (:mod:`densemnv3.models.prune`), and how it ranks channels.
PRUNABLE_KINDS = ("expansion", "chain", "head")
Importance = typing.Literal["l2", "bn"]
IMPORTANCE: tuple[str, ...] = typing.get_args(Importance)


def task_tools(task: str) -> str:
    """The tools that take a checkpoint of ``task``, in words."""
    suffix = TOOL_SUFFIX[task]
    return f"tools/*{suffix}.py" if suffix else "tools/train.py and tools/eval.py"


@dataclass
class ModelConfig:
    """Which model to build: ``name`` is a builder in :mod:`densemnv3.models`."""

    name: str = "lraspp_mobilenet_v3_large"
    #: Classifier outputs (detection: the classes + the background); None: the dataset's,
    #: read when a task builds its data or model (training writes the number into the run's
    #: config and checkpoints).
    num_classes: int | None = 19
    #: Extra keyword arguments of the builder (``pool``, ``width_mult``, ``output_stride``, ...).
    options: dict[str, Any] = field(default_factory=dict)
    #: The backbone, replacing the one ``name`` fixes: a registry name (``"mobilenet_v2"``,
    #: ``"tv:resnet18"``, ``"timm:efficientnet_b0"``) or a dict of it and its options
    #: (``{"name": "tv:resnet18", "output_stride": 16}``); None: the model's own.
    backbone: str | dict[str, Any] | None = None
    #: A torchvision ImageNet checkpoint for the backbone (a local file), or None.
    backbone_weights: str | None = None
    #: A checkpoint of the whole model to start from (a local file: torchvision's or a run's), or
    #: None. The multi-task model also takes single-task checkpoints, each loading into its part:
    #: give a tuple of files (an LR-ASPP's and an SSDLite's) to start both heads.
    weights: str | tuple[str, ...] | None = None
    #: Channel widths changed by NetAdapt (``tools/netadapt.py``): unit name -> channels (see
    #: :mod:`densemnv3.models.prune`); None: the architecture's own. Recorded in checkpoints.
    widths: dict[str, int] | None = None


@dataclass
class SyntheticConfig:
    """Generate the synthetic dataset at ``data.root`` if it is not there yet."""

    train: int = 200
    val: int = 50
    size: tuple[int, int] = (256, 512)
    seed: int = 0


@dataclass
class DataConfig:
    """Dataset location, layout and augmentation. ``format`` names the layout under ``root``
    (docs/data.md): by default segmentation reads a Cityscapes layout and detection COCO json +
    images (``*_ann``/``*_images`` relative to ``root``); multi-task reads a segmentation layout
    with its boxes from Cityscapes' ``_instanceIds`` or from ``det_format``, and takes the
    segmentation keys (``crop_size``, ``scale_range``, ``eval_resize``) for its one input."""

    root: str = "data/cityscapes"
    #: The layout under ``root``. Segmentation: ``cityscapes``, ``folder``, ``voc``, ``ade20k``;
    #: detection: ``coco``, ``yolo`` (``root`` a dataset YAML or its folder), ``voc``;
    #: None: ``cityscapes`` for segmentation and multi-task, ``coco`` for detection.
    format: str | None = None
    #: Multi-task: the layout of the boxes (a detection format over the same images, matched by
    #: file stem, under ``det_root`` or ``root``); None: Cityscapes' instance ids.
    det_format: str | None = None
    det_root: str | None = None
    #: Multi-task with ``det_format``: the detection class names (as ``classes``; training
    #: writes those it read here).
    det_classes: tuple[str, ...] | None = None
    #: Class names in label order and their RGB colours; None: from the data (``classes.txt`` /
    #: ``classes.json`` in ``root``, a YOLO YAML's ``names``) or the format's standard list.
    classes: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    #: The mask value of pixels that are not evaluated (segmentation formats other than
    #: Cityscapes, whose ignore is fixed by its label table).
    ignore_index: int = 255
    train_split: str = "train"
    val_split: str = "val"
    synthetic: SyntheticConfig | None = None
    batch_size: int = 8
    eval_batch_size: int = 1
    workers: int = 4
    skip_bad: bool = False
    # an image whose header declares more pixels is refused (skipped with skip_bad) before it
    # is decoded: a tiny file can claim 32000x32000. 2^28 is 32 times a 2048x4096 frame.
    max_image_pixels: int = 2**28
    # keep decoded images in RAM after the first epoch: small datasets only (one copy per worker)
    cache_images: bool = False
    # segmentation training split read from this decoded-sample cache (tools/cache_dataset.py)
    # instead of decoding PNGs; None: off
    decoded_cache: str | None = None
    # segmentation
    crop_size: tuple[int, int] = (512, 1024)
    scale_range: tuple[float, float] = (0.5, 2.0)
    eval_resize: tuple[int, int] | None = None
    # detection
    image_size: int | tuple[int, int] = 320  # network input: a side (square) or (height, width)
    zoom_out: bool = True  # SSD zoom-out (p=0.5) in training
    iou_crop: bool = True  # SSD random IoU crop in training
    train_images: str = "train2017"
    train_ann: str = "annotations/instances_train2017.json"
    val_images: str = "val2017"
    val_ann: str = "annotations/instances_val2017.json"
    label_mapping: str = "category_id"


@dataclass
class OptimConfig:
    """``sgd`` (with ``momentum``, optionally Nesterov) or ``adamw`` (betas ``(momentum, 0.999)``,
    decoupled weight decay); ``norm_weight_decay`` applies to norm layers and biases."""

    name: typing.Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-6
    norm_weight_decay: float | None = None
    nesterov: bool = False
    clip_grad_norm: float | None = None


@dataclass
class ScheduleConfig:
    """Length in iterations (or epochs) and the lr policy (``poly`` or ``cosine``) with warmup."""

    iters: int | None = None
    epochs: int | None = None
    policy: str = "poly"
    power: float = 0.9
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    """Engine options: intervals are in iterations."""

    device: str = "auto"
    amp: bool = True
    sync_bn: bool = False
    deterministic: bool = False
    seed: int = 0
    log_interval: int = 20
    eval_interval: int = 1000
    checkpoint_interval: int = 1000
    channels_last: bool = False


@dataclass
class LossConfig:
    """The training loss. Multi-task: ``seg_weight`` × the segmentation cross entropy +
    ``det_weight`` × (SSD box regression + classification); the weighted terms are what
    ``results.csv`` and TensorBoard log (``train/ce``, ``train/bbox_regression``,
    ``train/classification``) and what ``train/loss`` sums."""

    seg_weight: float = 1.0
    det_weight: float = 1.0
    #: Online hard example mining for the segmentation cross entropy (as mmsegmentation's
    #: ``OHEMPixelSampler``): when set, only the pixels whose target-class probability is below
    #: ``ohem_thresh`` count, and at least the ``ohem_min_kept`` hardest pixels of each batch.
    ohem_thresh: float | None = None
    ohem_min_kept: int = 100_000


@dataclass
class NetAdaptConfig:
    """``tools/netadapt.py``: shrink a trained model to ``target`` × its latency on ``runtime``.
    Each iteration cuts ``step`` × the original latency: every unit of a kind in ``kinds`` proposes
    its widest multiple of 8 that does, each proposal is fine-tuned ``short_iters`` steps and
    scored on ``eval_images`` validation images (0: all), the best Δmetric/|Δlatency| is kept;
    then ``long_iters`` steps of fine-tuning. Fine-tuning uses ``optim`` at ``lr_scale`` × its lr.
    The defaults fit a 2-core CPU; a GPU run affords the paper's step 0.01 and longer fine-tunes."""

    target: float = 0.7
    step: float = 0.025
    kinds: tuple[str, ...] = PRUNABLE_KINDS
    importance: Importance = "l2"
    short_iters: int = 10
    eval_images: int = 20
    long_iters: int = 1000
    lr_scale: float = 0.1


@dataclass
class TTAConfig:
    """Test-time augmentation of segmentation: the image at each of ``scales`` (× its size), and
    mirrored too with ``flip``; the softmax probabilities are averaged. The defaults: off."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False


@dataclass
class EvalConfig:
    """How segmentation is predicted in evaluation (the eval tools, training's evaluation) and
    by the Predictor: ``mode`` ``"whole"`` (the image at once) or ``"slide"`` (``crop`` windows
    every ``stride`` pixels, overlapping logits averaged, as mmsegmentation's slide inference;
    None: ``data.crop_size`` and 2/3 of the crop); ``tta``: scales and flips."""

    mode: typing.Literal["whole", "slide"] = "whole"
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    tta: TTAConfig = field(default_factory=TTAConfig)


@dataclass
class Config:
    """A whole run: task (``segmentation``, ``detection`` or ``multitask``), model, data,
    optimizer, schedule, engine, loss, evaluation and NetAdapt."""

    task: str = "segmentation"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    netadapt: NetAdaptConfig = field(default_factory=NetAdaptConfig)
    work_dir: str = "work_dirs/run"


# --------------------------------------------------------------------------- loading
