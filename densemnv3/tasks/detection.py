"""Object detection on COCO-format data with an SSDLite model, evaluated by pycocotools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from densemnv3.config import Config
from densemnv3.data.coco import CocoDetection, detection_collate
from densemnv3.data.formats import detection_dataset
from densemnv3.data.transforms import det_eval_transform, det_train_transform
from densemnv3.engine import distributed as dist_utils
from densemnv3.engine.sampler import shard_indices
from densemnv3.errors import ConfigError
from densemnv3.evaluation.coco import CocoEvaluator, DetMetrics, format_ap_table

from .common import TaskBase, eval_progress, prepare_for_eval
from .registry import register_task


def check_detection_classes(cfg: Config, dataset: CocoDetection) -> None:
    """A ConfigError when the model has fewer outputs than the dataset's labels (None: it gets
    as many); the names of a
    YOLO or VOC dataset are written into the config (``data.classes``), so that its checkpoints
    name them."""
    needed = dataset.num_classes
    if cfg.model.num_classes is None:
        cfg.model.num_classes = needed
    if cfg.model.num_classes < needed:
        raise ConfigError(
            f"model.num_classes is {cfg.model.num_classes} but {dataset.ann_file} has "
            f"{needed - 1} classes plus the background; set cfg.model.num_classes = {needed}"
        )
    if cfg.data.classes is None and (cfg.data.format or "coco") != "coco":
        cfg.data.classes = tuple(dataset.class_names[1:])


def category_table(dataset) -> Tensor:
    """COCO category id of each label of ``dataset`` (``label_to_category_id``), -1 for none."""
    mapping = dataset.label_to_category_id
    return torch.tensor([mapping.get(i, -1) for i in range(max(mapping) + 1)])


def add_detections(
    evaluator: CocoEvaluator, detections, targets, input_size, to_category: Tensor
) -> None:
    """Record a batch's detections (boxes in pixels of the ``input_size`` network input) with
    ``evaluator``, in each image's original pixels (``orig_size``) and COCO category ids."""
    in_h, in_w = input_size
    for det, target in zip(detections, targets):
        h, w = target["orig_size"]
        scale = torch.tensor([w / in_w, h / in_h, w / in_w, h / in_h])
        boxes = det["boxes"].float().cpu() * scale
        labels = det["labels"].cpu()
        keep = labels < len(to_category)
        evaluator.add(
            target["image_id"],
            boxes[keep],
            det["scores"].float().cpu()[keep],
            to_category[labels[keep]],
        )


def coco_metrics(
    evaluator: CocoEvaluator, dataset, results_path: str | Path | None
) -> DetMetrics | None:
    """COCOeval over exactly ``dataset.ids`` after gathering every rank's detections (on the main
    process; None elsewhere), and the results file when ``results_path`` is given."""
    evaluator.gather()
    if not dist_utils.is_main_process():
        return None
    metrics = evaluator.evaluate(img_ids=dataset.ids)
    if results_path is not None:
        evaluator.write_results(results_path)
    return metrics


@register_task("detection")
class DetectionTask(TaskBase):
    """SSD losses for training; COCO AP (pycocotools) for evaluation."""

    metric = "AP"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.last_metrics: DetMetrics | None = None

    def dataset(self, split: str, *, train: bool) -> CocoDetection:
        d = self.cfg.data
        if train:
            transform = det_train_transform(d.image_size, zoom_out=d.zoom_out, iou_crop=d.iou_crop)
        else:
            transform = det_eval_transform(d.image_size)
        dataset = detection_dataset(d, split, transform)
        check_detection_classes(self.cfg, dataset)
        return dataset

    def build_model(self) -> nn.Module:
        if self.cfg.model.num_classes is None:  # the dataset's: its labels say how many
            self.val_dataset()
        return super().build_model()

    def collate(self, batch: list) -> Any:
        return detection_collate(batch)

    def losses(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, Tensor]:
        images, targets = batch
        images = self.images_on(images, device)
        targets = [
            {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
        ]
        return model(images, targets)

    @torch.inference_mode()
    def evaluate(
        self,
        model: nn.Module,
        dataset: CocoDetection,
        device: torch.device,
        *,
        progress: bool = True,
        results_path: str | Path | None = None,
    ) -> dict[str, Any]:
        """COCO metrics (fractions) over the images of ``dataset`` (and only those: COCOeval
        scores no image left out as bad); detections go back to original pixels and category ids."""
        memory_format = prepare_for_eval(model, self.cfg)
        rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
        loader = DataLoader(
            Subset(dataset, shard_indices(len(dataset), rank, world)),
            batch_size=max(self.cfg.data.eval_batch_size, 1),
            num_workers=min(self.cfg.data.workers, 2),
            collate_fn=detection_collate,
        )
        evaluator = CocoEvaluator(dataset.coco)
        to_category = category_table(dataset)
        for images, targets in eval_progress(loader, progress):
            detections = model(images.to(device).contiguous(memory_format=memory_format))
            add_detections(evaluator, detections, targets, images.shape[-2:], to_category)
        self.last_metrics = coco_metrics(evaluator, dataset, results_path)
        return dist_utils.broadcast_object(self.last_metrics and self.last_metrics.to_dict())

    def report(self, metrics: dict[str, Any]) -> str:
        if self.last_metrics is None:
            return ""
        return self.last_metrics.summary_text.rstrip() + "\n\n" + format_ap_table(self.last_metrics)
