"""Segmentation and detection of the same frames with one multi-task model (LR-ASPP + SSDLite).

Data: a Cityscapes layout, masks from ``_labelIds`` and boxes from ``_instanceIds``
(:class:`~densemnv3.data.multitask.CityscapesMultiTask`), or any segmentation layout with a
detection layout of the same images (``data.det_format``,
:class:`~densemnv3.data.multitask_pairs.PairedMultiTask`); one albumentations pipeline for both.
Training: ``loss.seg_weight`` × cross entropy + ``loss.det_weight`` × the SSD losses, each
logged. Evaluation: one pass gives the per-class IoU (the segmentation task's confusion matrix)
and pycocotools' AP (the detection task's evaluator); ``best.pt`` follows
``mIoU_AP_mean = (mIoU + AP) / 2``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from densemnv3.config import Config
from densemnv3.data.coco import detection_collate
from densemnv3.data.formats import detection_dataset, segmentation_dataset
from densemnv3.data.multitask import THING_LABEL_IDS, CityscapesMultiTask
from densemnv3.data.multitask_pairs import PairedMultiTask
from densemnv3.engine import distributed as dist_utils
from densemnv3.engine.sampler import shard_indices
from densemnv3.errors import ConfigError
from densemnv3.evaluation.coco import CocoEvaluator, DetMetrics, format_ap_table
from densemnv3.evaluation.segmentation import format_iou_table
from densemnv3.inference.eval_modes import is_plain

from .common import eval_progress, prepare_for_eval
from .detection import add_detections, category_table, coco_metrics
from .registry import register_task
from .segmentation import SegmentationTask, SegScoring, timing_line

#: The detection outputs of the multi-task builders by default: the 8 Cityscapes things + 1.
CITYSCAPES_DET_CLASSES = len(THING_LABEL_IDS) + 1


def _check_det_classes(have: int, needed: int, source: str) -> None:
    if have < needed:
        raise ConfigError(
            f"model.options.det_num_classes: {source} has {needed - 1} classes with boxes "
            f"plus the background; set it to {needed}"
        )


@register_task("multitask")
class MultiTaskTask(SegmentationTask):
    """Weighted joint losses for training; mIoU and COCO AP from one evaluation pass. The
    splits, class names and input keys are the segmentation task's."""

    metric = "mIoU_AP_mean"
    dataset_class = CityscapesMultiTask
    boxes = True

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.last_det: DetMetrics | None = None

    def build_model(self) -> nn.Module:
        model = super().build_model()
        if self.cfg.data.det_format is None:  # Cityscapes' instance boxes
            have = getattr(model, "det_num_classes", CITYSCAPES_DET_CLASSES)
            _check_det_classes(have, CITYSCAPES_DET_CLASSES, "the multi-task data")
        model.seg_loss = self.seg_loss
        return model

    def dataset(self, split: str, *, train: bool):
        """Cityscapes' masks and instance boxes, or (``data.det_format``) a segmentation layout
        and a detection layout of the same images, paired by file name."""
        d = self.cfg.data
        if d.det_format is None:
            return super().dataset(split, train=train)
        seg = segmentation_dataset(d, split, None, classes=self.checked_classes())
        boxes = dataclasses.replace(d, format=d.det_format, classes=d.det_classes)
        det = detection_dataset(boxes, split, None, root=d.det_root)
        have = self.cfg.model.options.get("det_num_classes", CITYSCAPES_DET_CLASSES)
        _check_det_classes(have, det.num_classes, str(det.ann_file))
        if d.det_classes is None:  # recorded, so that the checkpoint names its boxes
            d.det_classes = tuple(det.class_names[1:])
        return PairedMultiTask(seg, det, self.transform(train), skip_bad=d.skip_bad)

    def collate(self, batch: list) -> Any:
        return detection_collate(batch)

    def losses(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        images, targets = batch
        losses = model(
            self.images_on(images, device),
            [{key: t[key].to(device) for key in ("mask", "boxes", "labels")} for t in targets],
        )
        weights = {
            "ce": self.cfg.loss.seg_weight,
            "bbox_regression": self.cfg.loss.det_weight,
            "classification": self.cfg.loss.det_weight,
        }
        return {name: weights[name] * value for name, value in losses.items()}

    @torch.inference_mode()
    def evaluate(
        self,
        model: nn.Module,
        dataset: CityscapesMultiTask,
        device: torch.device,
        *,
        progress: bool = True,
        on_prediction=None,
        results_path: str | Path | None = None,
    ) -> dict[str, Any]:
        """Segmentation metrics (as the segmentation task) and COCO metrics (as the detection
        task) of ``dataset`` in one pass, plus ``mIoU_AP_mean``. ``on_prediction(index, pred)``
        receives each train-id prediction; ``results_path`` gets the COCO results file."""
        memory_format = prepare_for_eval(model, self.cfg)
        rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
        indices = shard_indices(len(dataset), rank, world)
        loader = DataLoader(
            Subset(dataset, indices),
            batch_size=max(self.cfg.data.eval_batch_size, 1),
            num_workers=min(self.cfg.data.workers, 2),
            collate_fn=detection_collate,
        )
        scoring = SegScoring(self.cfg, dataset, device)
        evaluator = CocoEvaluator(dataset.coco)
        to_category = category_table(dataset)
        plain = is_plain(self.cfg.eval)
        for step, (images, targets) in enumerate(eval_progress(loader, progress)):
            images = images.to(device).contiguous(memory_format=memory_format)
            masks = torch.stack([t["mask"] for t in targets]).to(device)
            first = step * loader.batch_size
            batch = indices[first : first + len(images)]
            outputs = {}

            def segment(x: Tensor, outputs=outputs) -> Tensor:
                logits, outputs["detections"] = model(x)
                return logits

            pred = scoring.predict(segment, images, masks, batch)
            # test-time augmentation or windows: the detections of the image as it is, apart
            detections = outputs["detections"] if plain else model(images)[1]
            add_detections(evaluator, detections, targets, images.shape[-2:], to_category)
            for index, labels in zip(batch, pred) if on_prediction else ():
                on_prediction(index, labels)
        self.last_metrics, timing = scoring.compute()
        self.last_det = coco_metrics(evaluator, dataset, results_path)
        metrics = None
        if self.last_det is not None:
            metrics = self.last_metrics.to_dict(self.class_names) | timing | self.last_det.to_dict()
            miou = metrics["mIoU"] if metrics["mIoU"] is not None else float("nan")
            metrics[self.metric] = (miou + metrics["AP"]) / 2
        return dist_utils.broadcast_object(metrics)

    def report(self, metrics: dict[str, Any]) -> str:
        """The per-class IoU table, pycocotools' summary and the per-class AP table."""
        if self.last_metrics is None or self.last_det is None:
            return ""
        return "\n\n".join(
            [
                format_iou_table(self.last_metrics, self.class_names) + "\n" + timing_line(metrics),
                self.last_det.summary_text.rstrip(),
                format_ap_table(self.last_det),
                f"{self.metric} {metrics[self.metric]:.4f} = (mIoU + AP) / 2",
            ]
        )
