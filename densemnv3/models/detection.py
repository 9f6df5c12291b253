"""SSDLite detection: backbone + extra blocks + SSDLite head, SSD loss and batched postprocessing.

Equivalent to torchvision's ``ssdlite320_mobilenet_v3_large`` (its checkpoints load with
:func:`densemnv3.models.load_state_dict_checked`; logits, box deltas, losses and detections match)
except that input normalisation (to [-1, 1]) and resizing belong to the data pipeline: ``forward``
takes a normalised ``(N, 3, H, W)`` batch and returns boxes in its pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from densemnv3.checkpoint import StateDict, load_state_dict_checked
from densemnv3.errors import ConfigError

from .backbones import FeatureBackbone, create_backbone
from .backbones.registry import BackboneSpec, backbone_spec, require_backbone, select_taps
from .heads.anchors import BoxCoder, DefaultBoxes
from .heads.postprocess import NMS_IMPLS, Detections, ssd_postprocess
from .heads.ssdlite import SSDLiteHead, build_extra, normal_init_
from .registry import named, register_model
from .taps import ssdlite_taps

Targets = Sequence[Mapping[str, Tensor]]
M = TypeVar("M", bound=nn.Module)


class SSDLite(nn.Module):
    """SSDLite on two taps of ``backbone`` (strides 16 and 32) plus four extra blocks.

    Args:
        backbone: a feature backbone returning ``taps`` (see ``create_backbone``).
        num_classes: including the background (class 0).
        taps: the stride-16 and stride-32 taps: ``("C4_expand", "C5")`` on the MobileNets,
            ``("C4", "C5")`` on a backbone without an expansion output.
        width_mult: scales the extra blocks' channels (torchvision's rule, min 16).
        score_thresh, nms_thresh, detections_per_img, topk_candidates: inference (per image, and
            ``topk_candidates`` per class, as torchvision).
        iou_thresh: default boxes with IoU >= this with a ground-truth box are positives.
        neg_to_pos_ratio: hard negatives kept per positive in the classification loss.
        nms_prefix: candidates per image whose NMS the per-image path computes at once (exactness
            does not depend on it: more are examined when fewer than ``detections_per_img``
            survive).
        nms_impl: ``"per_image"`` (torchvision's nms per image, fastest on CPU), ``"batched"``
            (every image and class at once on the device, no per-image or per-class host
            synchronisation, fastest on GPUs) or ``"auto"`` (by device); the same detections.
        anchor_scale_range: the smallest and largest default-box scale, as fractions of the input
            side (torchvision's ``min_ratio``/``max_ratio``: 0.2-0.95, i.e. 64-304 px at 320).
            Lower the first for data dominated by small objects.
        anchor_size: ``(H, W)`` in pixels the default-box scales refer to, fixed (a model trained
            on crops smaller than the images it runs on keeps its boxes' pixel sizes); None
            (torchvision's): each input's own size.

    Attributes:
        cpu_channels_last: in eval mode on CPU, run the network on channels_last activations (same
            results up to float rounding, a faster backbone: BENCHMARKS.md, CPU routes); set False
            to turn it off.
    """

    task = "detection"
    #: The attributes :meth:`postprocess` reads, besides ``box_coder``.
    postprocess_settings = (
        "score_thresh",
        "nms_thresh",
        "detections_per_img",
        "topk_candidates",
        "nms_prefix",
        "nms_impl",
    )
    cpu_channels_last: bool = True

    torchvision_ignored_prefixes: tuple[str, ...] = ()

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        taps: tuple[str, str] = ("C4_expand", "C5"),
        *,
        width_mult: float = 1.0,
        score_thresh: float = 0.001,
        nms_thresh: float = 0.55,
        detections_per_img: int = 300,
        topk_candidates: int = 300,
        iou_thresh: float = 0.5,
        neg_to_pos_ratio: float = 3.0,
        nms_prefix: int = 512,
        nms_impl: str = "auto",
        input_size: tuple[int, int] = (320, 320),
        anchor_scale_range: tuple[float, float] = (0.2, 0.95),
        anchor_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.taps = tuple(taps)
        missing = [t for t in self.taps if t not in backbone.feature_info]
        if len(self.taps) != 2 or missing:
            raise ConfigError(
                f"SSDLite needs two taps of its backbone (strides 16, 32), got {taps}"
            )
        self.backbone = backbone
        c4, c5 = (backbone.feature_info[t].channels for t in self.taps)
        self.extra = build_extra(c5, width_mult)
        low, high = (float(v) for v in anchor_scale_range)
        if not 0 < low < high <= 1:
            raise ConfigError(
                f"anchor_scale_range must satisfy 0 < min < max <= 1, got {anchor_scale_range}"
            )
        self.anchors = DefaultBoxes(
            [[2, 3]] * 6, min_ratio=low, max_ratio=high, box_size=anchor_size
        )
        channels = [c4, c5] + [block[-1].out_channels for block in self.extra]
        self.head = SSDLiteHead(channels, self.anchors.num_anchors_per_location(), num_classes)
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.num_classes = num_classes
        self.input_size = tuple(input_size)  # nominal; the data pipeline resizes to it
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates
        self.iou_thresh = iou_thresh
        self.neg_to_pos_ratio = neg_to_pos_ratio
        self.nms_prefix = nms_prefix
        if nms_impl not in NMS_IMPLS:
            raise ConfigError(f"nms_impl must be one of {NMS_IMPLS}, got {nms_impl!r}")
        self.nms_impl = nms_impl

    def extra_repr(self) -> str:
        return f"taps={self.taps} (strides 16, 32), num_classes={self.num_classes}"

    # ---------------------------------------------------------------- network
    def features(self, images: Tensor) -> list[Tensor]:
        """The six feature maps (strides 16, 32, 64, 128, 256, 512)."""
        return self.feature_maps(self.backbone(images))

    def feature_maps(self, taps: Mapping[str, Tensor]) -> list[Tensor]:
        """The six feature maps from the backbone's taps: its two maps and the extras."""
        maps = [taps[t] for t in self.taps]
        x = maps[-1]
        for block in self.extra:
            x = block(x)
            maps.append(x)
        return maps

    def predict_raw(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(cls_logits (N, A, C), bbox_regression (N, A, 4), anchors (A, 4) xyxy pixels)``."""
        if images.dim() != 4:
            raise ValueError(f"expected a (N, 3, H, W) batch, got shape {tuple(images.shape)}")
        if self.cpu_channels_last and not self.training and images.device.type == "cpu":
            # oneDNN's depthwise/1x1 convs run faster on NHWC activations on CPU
            images = images.contiguous(memory_format=torch.channels_last)
        return self.predict_from_taps(self.backbone(images), images.shape[-2:])

    def predict_from_taps(
        self, taps: Mapping[str, Tensor], image_size: Sequence[int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`predict_raw` from the backbone's taps of an ``image_size`` ``(H, W)`` batch (a
        backbone shared with another head runs once)."""
        maps = self.feature_maps(taps)
        cls_logits, bbox_regression = self.head(maps)
        # boxes, losses and scores in float32 at least (also under autocast)
        dtype = torch.promote_types(bbox_regression.dtype, torch.float32)
        anchors = self.anchors(
            [m.shape[-2:] for m in maps], image_size, device=bbox_regression.device, dtype=dtype
        )
        return cls_logits.to(dtype), bbox_regression.to(dtype), anchors

    def forward(
        self, images: Tensor, targets: Targets | None = None
    ) -> dict[str, Tensor] | Detections:
        """Training: ``{"bbox_regression", "classification"}`` losses for ``targets`` (dicts with
        ``boxes`` xyxy pixels and int64 ``labels``, 0 = background). Eval: one dict of ``boxes``,
        ``scores``, ``labels`` per image."""
        if self.training:
            if targets is None:
                raise ValueError("SSDLite in training mode needs targets (call .eval() to detect)")
            _check_targets(targets)
        cls_logits, bbox_regression, anchors = self.predict_raw(images)
        if self.training:
            return self.compute_loss(cls_logits, bbox_regression, anchors, targets)
        return self.postprocess(cls_logits, bbox_regression, anchors, images.shape[-2:])

    # ---------------------------------------------------------------- training
    def match(self, anchors: Tensor, gt_boxes: Tensor, gt_valid: Tensor) -> Tensor:
        """Index of the ground-truth box each default box regresses to, or -1 (background).

        ``gt_boxes`` ``(N, G, 4)`` is padded; ``gt_valid`` ``(N, G)`` marks real boxes. An anchor
        matches its best box if their IoU >= ``iou_thresh``; each box also claims its best anchor
        (torchvision's ``SSDMatcher``).
        """
        batch, num_gt = gt_valid.shape
        matches = torch.full(
            (batch, anchors.shape[0]), -1, dtype=torch.int64, device=anchors.device
        )
        if num_gt == 0:
            return matches
        iou = box_iou(gt_boxes, anchors).masked_fill_(~gt_valid[..., None], -1.0)  # (N, G, A)
        best_iou, best_gt = iou.max(dim=1)
        matches = best_gt.masked_fill_(best_iou < self.iou_thresh, -1)
        image, gt = gt_valid.nonzero(as_tuple=True)
        matches[image, iou.argmax(dim=2)[image, gt]] = gt
        return matches

    def compute_loss(
        self, cls_logits: Tensor, bbox_regression: Tensor, anchors: Tensor, targets: Targets
    ) -> dict[str, Tensor]:
        """torchvision's SSD loss, batched: smooth-L1 on positives + cross-entropy on positives and
        the ``neg_to_pos_ratio``× highest-loss negatives of each image, both / number of
        positives."""
        if len(targets) != cls_logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for {cls_logits.shape[0]} images")
        _check_targets(targets)
        gt_boxes, gt_labels, gt_valid = _pad_targets(targets, anchors)
        matches = self.match(anchors, gt_boxes, gt_valid)
        positive = matches >= 0
        image, anchor = positive.nonzero(as_tuple=True)
        matched_boxes = gt_boxes[image, matches[image, anchor]]
        target_deltas = self.box_coder.encode(matched_boxes, anchors[anchor])
        bbox_loss = F.smooth_l1_loss(bbox_regression[image, anchor], target_deltas, reduction="sum")

        if gt_labels.shape[1]:
            cls_targets = torch.where(positive, gt_labels.gather(1, matches.clamp(min=0)), 0)
        else:
            cls_targets = torch.zeros_like(matches)
        cls_loss = F.cross_entropy(
            cls_logits.flatten(0, 1), cls_targets.flatten(), reduction="none"
        ).view_as(cls_targets)
        foreground = cls_targets > 0
        num_negative = self.neg_to_pos_ratio * foreground.sum(1, keepdim=True)
        negative_loss = cls_loss.detach().masked_fill(foreground, -float("inf"))
        order = negative_loss.argsort(dim=1, descending=True)
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(order.shape[1], device=order.device).expand_as(order)
        )
        hard_negative = rank < num_negative
        zero = cls_loss.new_zeros(())
        normalizer = max(1, image.numel())
        classification = (
            torch.where(foreground, cls_loss, zero).sum()
            + torch.where(hard_negative, cls_loss, zero).sum()
        )
        return {
            "bbox_regression": bbox_loss / normalizer,
            "classification": classification / normalizer,
        }

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def postprocess(
        self,
        cls_logits: Tensor,
        bbox_regression: Tensor,
        anchors: Tensor,
        image_size: Sequence[int],
        *,
        nms_impl: str | None = None,
    ) -> Detections:
        """torchvision's SSD postprocessing for the whole batch at once (see
        :func:`~densemnv3.models.heads.postprocess.ssd_postprocess`); ``nms_impl`` overrides
        ``self.nms_impl`` for this call."""
        return ssd_postprocess(
            cls_logits,
            bbox_regression,
            anchors,
            image_size,
            self.box_coder,
            score_thresh=self.score_thresh,
            nms_thresh=self.nms_thresh,
            detections_per_img=self.detections_per_img,
            topk_candidates=self.topk_candidates,
            nms_prefix=self.nms_prefix,
            impl=self.nms_impl if nms_impl is None else nms_impl,
        )

    # ---------------------------------------------------------------- checkpoints
    def convert_torchvision_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Rename torchvision ``ssdlite320_mobilenet_v3_large`` keys to this model's."""
        if self.taps[0] != "C4_expand" or not isinstance(self.backbone, FeatureBackbone):
            return dict(state)  # torchvision has no SSDLite on other backbones
        c4_pos = int(self.backbone.feature_info["C4_expand"].module.split(".")[1])
        inner = next(
            n
            for n, m in self.backbone.features[c4_pos].named_children()
            if isinstance(m, nn.Sequential)
        )
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            new = key
            if key.startswith("backbone.features.0."):
                index, rest = key[len("backbone.features.0.") :].split(".", 1)
                if int(index) == c4_pos:
                    new = f"backbone.features.{c4_pos}.{inner}.0.{rest}"
                else:
                    new = f"backbone.features.{index}.{rest}"
            elif key.startswith("backbone.features.1.0."):
                index, rest = key[len("backbone.features.1.0.") :].split(".", 1)
                new = f"backbone.features.{c4_pos}.{inner}.{index}.{rest}"  # slices keep names
            elif key.startswith("backbone.features.1."):
                index, rest = key[len("backbone.features.1.") :].split(".", 1)
                new = f"backbone.features.{c4_pos + int(index)}.{rest}"
            elif key.startswith("backbone.extra."):
                new = key[len("backbone.") :]
            elif key.startswith("head.classification_head.module_list."):
                new = "head.classification." + key[len("head.classification_head.module_list.") :]
            elif key.startswith("head.regression_head.module_list."):
                new = "head.regression." + key[len("head.regression_head.module_list.") :]
            out[new] = value
        return out


def _check_targets(targets: Targets) -> None:
    for i, target in enumerate(targets):
        boxes = target["boxes"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or len(target["labels"]) != len(boxes):
            raise ValueError(
                f"target {i}: boxes must have shape (K, 4) and labels (K,), got "
                f"{tuple(boxes.shape)} and {tuple(target['labels'].shape)}"
            )
        bad = (boxes[:, 2:] <= boxes[:, :2]).any(1)
        if bad.any():
            raise ValueError(
                f"target {i}: boxes need x2 > x1 and y2 > y1, got {boxes[bad][0].tolist()}"
            )


def _pad_targets(targets: Targets, anchors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image targets into ``boxes (N, G, 4)``, ``labels (N, G)``, ``valid (N, G)``."""
    boxes = [t["boxes"].to(anchors) for t in targets]
    counts = torch.tensor([len(b) for b in boxes], device=anchors.device)
    num_gt = int(counts.max()) if len(boxes) else 0
    padded = anchors.new_zeros(len(boxes), num_gt, 4)
    labels = torch.zeros(len(boxes), num_gt, dtype=torch.int64, device=anchors.device)
    for i, (b, t) in enumerate(zip(boxes, targets)):
        padded[i, : len(b)] = b
        labels[i, : len(b)] = t["labels"]
    valid = torch.arange(num_gt, device=anchors.device) < counts[:, None]
    return padded, labels, valid


# -------------------------------------------------------------------- builders
@register_model(forwards_kwargs_to=(SSDLite.__init__,))
def ssdlite(
    backbone: BackboneSpec | None = None,
    *,
    num_classes: int,
    width_mult: float = 1.0,
    taps: tuple[str, str] | None = None,
    frozen_bn: bool = False,
    backbone_weights: StateDict | None = None,
    bn_momentum: float = 0.03,
    **kwargs,
) -> SSDLite:
    """SSDLite on any backbone: a registered name, ``tv:<model>``, ``timm:<model>`` or
    ``{"name": ..., **options}`` (``model.backbone`` in a config).

    Its maps are ``C4_expand`` (or ``C4`` where the backbone has no expansion output) and ``C5``
    (see :mod:`densemnv3.models.taps`); ``width_mult`` scales the extra blocks. Without
    ``backbone_weights`` (a classification checkpoint of the backbone) a native backbone is
    initialised normal(0, 0.03) as torchvision's SSDLite does when training from scratch; a
    ``tv:``/``timm:`` one keeps its library's initialisation. All BatchNorms use momentum
    ``bn_momentum``: 0.03 is torchvision's SSDLite ``norm_layer``, made for 600-epoch schedules;
    a run of a few hundred iterations needs a higher one (0.1), else the running statistics that
    eval mode uses trail the weights. ``taps`` names the two maps instead of
    :func:`~densemnv3.models.taps.ssdlite_taps`: ``("C4_expand", "C5")`` of a backbone dilated to
    ``output_stride=16`` reads ``C5`` at stride 16 too (maps at strides 16, 16, 32, ... 256), as
    the multi-task model's dilated option does. ``kwargs`` go to :class:`SSDLite`.
    """
    require_backbone(backbone, "ssdlite", "SSDLite")
    if not 0 < bn_momentum <= 1:
        raise ConfigError(f"bn_momentum must be in (0, 1], got {bn_momentum}")

    def build(out_features=None):
        return create_backbone(backbone, out_features=out_features, frozen_bn=frozen_bn)

    net = build()
    taps = tuple(taps) if taps is not None else ssdlite_taps(net, backbone_spec(backbone)[0])
    net = select_taps(net, taps, build)
    if backbone_weights is not None:
        load_state_dict_checked(net, backbone_weights)
    elif isinstance(net, FeatureBackbone):
        normal_init_(net)
    return set_bn_momentum_(
        SSDLite(net, num_classes, taps, width_mult=width_mult, **kwargs), bn_momentum
    )


def set_bn_momentum_(module: M, momentum: float) -> M:
    """Give every BatchNorm of ``module`` the ``momentum``; returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum
    return module


def _ssdlite320_on(backbone: str, doc: str) -> Callable[..., SSDLite]:
    """The registered builder ``ssdlite320_<backbone>``: :func:`ssdlite` on that backbone."""

    def builder(
        *,
        num_classes: int = 91,
        reduced_tail: bool = True,
        width_mult: float = 1.0,
        frozen_bn: bool = False,
        backbone_weights: StateDict | None = None,
        **kwargs,
    ) -> SSDLite:
        return ssdlite(
            {"name": backbone, "width_mult": width_mult, "reduced_tail": reduced_tail},
            num_classes=num_classes,
            width_mult=width_mult,
            frozen_bn=frozen_bn,
            backbone_weights=backbone_weights,
            **kwargs,
        )

    register = register_model(forwards_kwargs_to=(ssdlite, SSDLite.__init__), head="ssdlite")
    return register(named(builder, f"ssdlite320_{backbone}", doc))


ssdlite320_mobilenet_v3_large = _ssdlite320_on(
    "mobilenet_v3_large",
    "torchvision's ``ssdlite320_mobilenet_v3_large`` (3,440,060 parameters at 91 classes).",
)
ssdlite320_mobilenet_v3_small = _ssdlite320_on(
    "mobilenet_v3_small", "SSDLite on MobileNetV3-Small (the paper's V3-Small† detector)."
)
