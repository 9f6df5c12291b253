"""Semantic segmentation with an LR-ASPP model on a dataset of any layout (``data.format``)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from densemnv3.config import Config
from densemnv3.data.classes import ClassList
from densemnv3.data.formats import segmentation_classes, segmentation_dataset
from densemnv3.data.segmentation import SegmentationDataset
from densemnv3.data.transforms import seg_eval_transform, seg_train_transform
from densemnv3.engine import distributed as dist_utils
from densemnv3.engine.sampler import shard_indices
from densemnv3.errors import ConfigError, DataError
from densemnv3.evaluation.cityscapes import InstanceStats
from densemnv3.evaluation.segmentation import ConfusionMatrix, SegMetrics, format_iou_table
from densemnv3.inference.argmax import label_map
from densemnv3.inference.eval_modes import describe, seg_scores
from densemnv3.models.losses import segmentation_loss

from .common import TaskBase, eval_progress, prepare_for_eval
from .registry import register_task


class SegScoring:
    """One evaluation's segmentation scores: the confusion matrix, the ground truth's instances
    (for iIoU, where the dataset has instance ids) and the time the predictions took.

    Predictions are made as ``cfg.eval`` says (whole image or sliding window, test-time scales
    and flips; :func:`~densemnv3.inference.eval_modes.seg_scores`)."""

    def __init__(self, cfg: Config, dataset: Dataset, device: torch.device) -> None:
        self.cfg, self.dataset = cfg, dataset
        classes = dataset.classes
        self.confmat = ConfusionMatrix(len(classes), classes.ignore_index, device=device)
        self.official = dataset.official_scores
        find_missing = getattr(dataset, "missing_instance_ids", None)  # a Cityscapes layout's
        self.instances = (
            InstanceStats(device)
            if self.official and find_missing and find_missing() is None
            else None
        )
        self.crop = tuple(cfg.eval.crop or cfg.data.crop_size)
        self.seconds, self.images = 0.0, 0

    def predict(
        self,
        forward: Callable[[Tensor], Tensor],
        images: Tensor,
        targets: Tensor,
        indices: Sequence[int],
    ) -> Tensor:
        """Count a batch: ``forward(images)`` gives the logits; returns the predicted train ids
        ``(N, H, W)`` at the targets' size. ``indices``: the samples' dataset indices."""
        start = time.perf_counter()
        scores = seg_scores(
            forward, images, tuple(targets.shape[-2:]), self.cfg.eval, crop=self.crop
        )
        if scores.device.type == "cuda":
            torch.cuda.synchronize(scores.device)
        self.seconds += time.perf_counter() - start
        self.images += len(images)
        # label_map: argmax(1)'s labels, much faster over NCHW on the CPU (its own argmax otherwise)
        pred = (
            torch.from_numpy(label_map(scores)) if scores.device.type == "cpu" else scores.argmax(1)
        )
        self.confmat.update(pred, targets)
        if self.instances is not None:
            self.instances.update(
                pred, torch.stack([self._instance_ids(i, p.shape) for i, p in zip(indices, pred)])
            )
        return pred

    def _instance_ids(self, index: int, shape: torch.Size) -> Tensor:
        ids = self.dataset.instance_ids(index)
        if ids.shape != shape:
            raise DataError(
                f"{self.dataset.instance_path(index)}: instance ids are "
                f"{ids.shape[1]}x{ids.shape[0]} (WxH) but the label is {shape[1]}x{shape[0]}; "
                f"regenerate them"
            )
        return torch.from_numpy(ids.astype("int32"))

    def compute(self) -> tuple[SegMetrics, dict[str, Any]]:
        """The metrics over every process, and the timing entries of ``metrics.json``."""
        self.confmat.reduce_from_all_processes()
        if self.instances is not None:
            self.instances.reduce_from_all_processes()
        timing = {
            "eval_mode": describe(self.cfg.eval, crop=self.crop),
            "ms_per_image": 1000 * self.seconds / max(self.images, 1),
        }
        return self.confmat.compute(self.instances, official=self.official), timing


def timing_line(metrics: dict[str, Any]) -> str:
    """``prediction: whole, flip: 123.4 ms per image`` from an evaluation's metrics."""
    return (
        f"prediction: {metrics['eval_mode']}: {metrics['ms_per_image']:.1f} ms per image "
        f"(network and scores)"
    )


@register_task("segmentation")
class SegmentationTask(TaskBase):
    """Cross-entropy training (over the hard pixels only with ``loss.ohem_thresh``) and
    confusion-matrix evaluation (mIoU over the dataset's classes; Cityscapes' official
    category and instance scores on its layout)."""

    metric = "mIoU"

    #: The dataset class when not the format's own (the multi-task one), and whether training
    #: crops keep instance boxes.
    dataset_class: type[SegmentationDataset] | None = None
    boxes = False

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.last_metrics: SegMetrics | None = None
        self.seg_loss = segmentation_loss(cfg.loss)

    @functools.cached_property
    def classes(self) -> ClassList:
        """The dataset's classes (``data.format``'s rule: config, ``classes.txt``, standard).
        Read from the data, they are written into the config, so that checkpoints and the
        tools that read them (the Predictor, ``predict``, the demo) name and colour them."""
        d = self.cfg.data
        classes = segmentation_classes(d)
        if d.classes is None and (d.format or "cityscapes") != "cityscapes":
            d.classes = classes.names
            if classes.palette is not None and d.palette is None:
                d.palette = tuple(tuple(int(v) for v in c) for c in classes.palette)
        return classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes.names

    def dataset(self, split: str, *, train: bool) -> SegmentationDataset:
        d = self.cfg.data
        return segmentation_dataset(
            d,
            split,
            self.transform(train),
            classes=self.checked_classes(),
            dataset_class=self.dataset_class,
            decoded_cache=d.decoded_cache if train else None,
        )

    def build_model(self) -> nn.Module:
        if self.cfg.model.num_classes is None:
            self.checked_classes()
        return super().build_model()

    def checked_classes(self) -> ClassList:
        """:attr:`classes`, or a ConfigError when the model has another number of classes
        (``model.num_classes`` None: it becomes theirs)."""
        classes = self.classes
        if self.cfg.model.num_classes is None:
            self.cfg.model.num_classes = len(classes)
        if self.cfg.model.num_classes != len(classes):
            raise ConfigError(
                f"model.num_classes is {self.cfg.model.num_classes} but the dataset has "
                f"{len(classes)} classes ({classes.source}); set cfg.model.num_classes = "
                f"{len(classes)} (or --set model.num_classes={len(classes)})"
            )
        return classes

    def transform(self, train: bool):
        """The albumentations pipeline of training (random scale, crop, flip) or evaluation."""
        d = self.cfg.data
        if train:
            scales = tuple(d.scale_range)
            return seg_train_transform(tuple(d.crop_size), scale_range=scales, boxes=self.boxes)
        return seg_eval_transform(resize=tuple(d.eval_resize) if d.eval_resize else None)

    def collate(self, batch: list) -> Any:
        return default_collate(batch)

    def losses(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        images, targets = batch
        logits = model(self.images_on(images, device))
        return {"ce": self.seg_loss(logits, targets.to(device).long())}

    @torch.inference_mode()
    def evaluate(
        self,
        model: nn.Module,
        dataset: Dataset,
        device: torch.device,
        *,
        progress: bool = True,
        on_prediction=None,
    ) -> dict[str, Any]:
        """mIoU etc. (fractions) over ``dataset``, sharded across processes.
        ``on_prediction(index, pred)`` receives each train-id prediction at label resolution
        (for saving PNGs)."""
        memory_format = prepare_for_eval(model, self.cfg)
        rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
        indices = shard_indices(len(dataset), rank, world)
        loader = DataLoader(
            Subset(dataset, indices),
            batch_size=self.cfg.data.eval_batch_size,
            num_workers=min(self.cfg.data.workers, 2),
            collate_fn=default_collate,
        )
        scoring = SegScoring(self.cfg, dataset, device)
        position = 0
        for images, targets in eval_progress(loader, progress):
            images = images.to(device).contiguous(memory_format=memory_format)
            batch = indices[position : position + len(images)]
            pred = scoring.predict(model, images, targets.to(device), batch)
            for index, p in zip(batch, pred) if on_prediction is not None else ():
                on_prediction(index, p)
            position += len(images)
        self.last_metrics, timing = scoring.compute()
        return self.last_metrics.to_dict(self.class_names) | timing

    def report(self, metrics: dict[str, Any]) -> str:
        """The per-class IoU table of the last evaluation."""
        if self.last_metrics is None:
            return ""
        return f"{format_iou_table(self.last_metrics, self.class_names)}\n{timing_line(metrics)}"
