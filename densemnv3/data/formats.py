"""Dataset layouts by name (``data.format``), and the one way to build a task's dataset from a
config: :func:`segmentation_dataset` (and its :func:`segmentation_classes`) and
:func:`detection_dataset`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from densemnv3.config import DataConfig
from densemnv3.data.cityscapes import CITYSCAPES_CLASSES, CityscapesSegmentation
from densemnv3.data.classes import ClassList
from densemnv3.data.coco import CocoDetection
from densemnv3.data.seg_formats import ADE20K, FolderSegmentation, VocSegmentation
from densemnv3.data.segmentation import SegmentationDataset
from densemnv3.data.voc_detection import VocDetection
from densemnv3.data.yolo import YoloDetection
from densemnv3.utils.registry import Registry

__all__ = [
    "DET_FORMATS",
    "SEG_FORMATS",
    "detection_dataset",
    "recorded_classes",
    "segmentation_classes",
    "segmentation_dataset",
    "segmentation_format",
]

#: Segmentation layouts: ``data.format`` -> dataset class (each with a ``class_list(data)``).
SEG_FORMATS: Registry[type[SegmentationDataset]] = Registry("segmentation format")
SEG_FORMATS.register("cityscapes")(CityscapesSegmentation)
SEG_FORMATS.register("folder")(FolderSegmentation)
SEG_FORMATS.register("voc")(VocSegmentation)
SEG_FORMATS.register("ade20k")(ADE20K)

#: Detection layouts: ``data.format`` -> builder ``(data, split, transform) -> dataset``, a
#: :class:`~densemnv3.data.coco.CocoDetection` (YOLO and VOC: their ground truth as COCO).
DET_FORMATS: Registry[Callable[..., CocoDetection]] = Registry("detection format")


@DET_FORMATS.register("coco")
def _coco(data: DataConfig, split: str, transform: Callable | None) -> CocoDetection:
    images, ann = (
        (data.train_images, data.train_ann)
        if split == data.train_split
        else (data.val_images, data.val_ann)
    )
    root = Path(data.root)
    return CocoDetection(
        root / images,
        root / ann,
        transform,
        label_mapping=data.label_mapping,
        skip_bad=data.skip_bad,
        cache=data.cache_images,
        max_pixels=data.max_image_pixels,
    )


@DET_FORMATS.register("yolo")
def _yolo(data: DataConfig, split: str, transform: Callable | None) -> CocoDetection:
    return YoloDetection(data.root, split, transform, **_det_options(data))


@DET_FORMATS.register("voc")
def _voc(data: DataConfig, split: str, transform: Callable | None) -> CocoDetection:
    return VocDetection(data.root, split, transform, **_det_options(data))


def _det_options(data: DataConfig) -> dict:
    return dict(
        classes=data.classes,
        skip_bad=data.skip_bad,
        cache=data.cache_images,
        max_pixels=data.max_image_pixels,
    )


def detection_dataset(
    data: DataConfig, split: str, transform: Callable | None, *, root: str | None = None
) -> CocoDetection:
    """The config's detection dataset of ``split`` (``data.format``, None: COCO json);
    ``root``: another root than ``data.root`` (the multi-task model's boxes)."""
    if root is not None:
        data = dataclasses.replace(data, root=root)
    return DET_FORMATS.get(data.format or "coco")(data, split, transform)


def recorded_classes(data: DataConfig) -> ClassList:
    """The segmentation classes a trained model's config names, reading no file: ``data.classes``
    (which training fills from the data) and ``data.palette``, else Cityscapes' 19."""
    if data.classes is None:
        return CITYSCAPES_CLASSES
    palette = np.asarray(data.palette, np.uint8) if data.palette is not None else None
    return ClassList(tuple(data.classes), palette, "the checkpoint's config", data.ignore_index)


def segmentation_format(data: DataConfig) -> type[SegmentationDataset]:
    """The dataset class of ``data.format`` (None: Cityscapes)."""
    return SEG_FORMATS.get(data.format or "cityscapes")


def segmentation_classes(data: DataConfig) -> ClassList:
    """The class list of the config's segmentation dataset (reads no image)."""
    return segmentation_format(data).class_list(data)


def segmentation_dataset(
    data: DataConfig,
    split: str,
    transform: Callable | None,
    *,
    classes: ClassList | None = None,
    dataset_class: type[SegmentationDataset] | None = None,
    decoded_cache: str | None = None,
) -> SegmentationDataset:
    """The config's segmentation dataset of ``split`` (``dataset_class``: a subclass of the
    format's, e.g. the multi-task one)."""
    cls = dataset_class or segmentation_format(data)
    return cls(
        Path(data.root),
        split,
        transform,
        classes=classes if classes is not None else cls.class_list(data),
        skip_bad=data.skip_bad,
        cache=data.cache_images,
        decoded_cache=decoded_cache,
        max_pixels=data.max_image_pixels,
    )
