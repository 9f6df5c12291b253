"""torchvision's models for the model cases, from its public API only.

The Large cases are torchvision's builders. torchvision has no builder for the Small ones, so
they are assembled the way its Large builders assemble theirs: LR-ASPP on the dilated
``mobilenet_v3_small`` with taps at C2 (stride 8) and the last block, SSDLite on the reduced-tail
``mobilenet_v3_small`` with the extras after C4's expansion. The stage boundaries, which
torchvision's private helpers read from a private block attribute, are found from a probe
forward pass instead (:func:`stage_indices`).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from densemnv3.errors import UserError

MODEL_CASES = ("lraspp_large", "lraspp_small", "ssdlite_large", "ssdlite_small")
SEG_CLASSES, DET_CLASSES, DET_SIZE = 19, 91, (320, 320)


def torchvision_model(case: str, num_classes: int) -> nn.Module:
    """torchvision's model for ``case`` (random weights, as its builders initialise them)."""
    import torchvision.models as tvm

    if case == "lraspp_large":
        return tvm.segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=num_classes
        )
    if case == "ssdlite_large":
        return tvm.detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=num_classes
        )
    if case == "lraspp_small":
        return lraspp_small(num_classes)
    if case == "ssdlite_small":
        return ssdlite_small(num_classes)
    raise UserError(f"unknown model case {case!r}; choose from {', '.join(MODEL_CASES)}")


def stage_indices(features: nn.Sequential, probe: int = 224) -> list[int]:
    """The blocks of a MobileNet ``features`` that start its stages, as torchvision counts them:
    the first (C0), each block that halves the resolution (C1 ... Cn-1), the last (Cn). Found on
    a probe forward pass, so ``features`` must be undilated (a dilated stage keeps the resolution;
    dilation keeps the blocks, so their indices hold for the dilated network too)."""
    training = features.training
    strided = []
    x = torch.zeros(1, 3, probe, probe)
    with torch.no_grad():
        for i, block in enumerate(features.eval()):
            y = block(x)
            if i > 0 and y.shape[-1] < x.shape[-1]:
                strided.append(i)
            x = y
    features.train(training)
    return [0, *strided, len(features) - 1]


def lraspp_small(num_classes: int) -> nn.Module:
    """torchvision's LR-ASPP on the dilated ``mobilenet_v3_small``, as ``lraspp_mobilenet_v3_large``
    builds it on the Large one."""
    from torchvision.models import mobilenet_v3_small
    from torchvision.models.feature_extraction import create_feature_extractor
    from torchvision.models.segmentation import LRASPP

    stages = stage_indices(mobilenet_v3_small().features)
    low, high = stages[-4], stages[-1]  # C2 (output stride 8) and the last block (16, dilated)
    features = mobilenet_v3_small(dilated=True).features
    backbone = create_feature_extractor(features, {str(low): "low", str(high): "high"})
    return LRASPP(backbone, features[low].out_channels, features[high].out_channels, num_classes)


def ssdlite_small(num_classes: int) -> nn.Module:
    """torchvision's SSDLite on the reduced-tail ``mobilenet_v3_small``, as
    ``ssdlite320_mobilenet_v3_large`` builds it on the Large one (no backbone layer frozen)."""
    from torchvision.models import mobilenet_v3_small
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteFeatureExtractorMobileNet, SSDLiteHead

    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    features = mobilenet_v3_small(norm_layer=norm, reduced_tail=True).features
    c4 = stage_indices(features)[-2]  # the extras start after C4's expansion layer
    backbone = SSDLiteFeatureExtractorMobileNet(features, c4, norm)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    with torch.no_grad():
        channels = [f.shape[1] for f in backbone.eval()(torch.zeros(1, 3, *DET_SIZE)).values()]
    head = SSDLiteHead(channels, anchors.num_anchors_per_location(), num_classes, norm)
    return SSD(
        backbone,
        anchors,
        DET_SIZE,
        num_classes,
        head=head,
        score_thresh=0.001,
        nms_thresh=0.55,
        detections_per_img=300,
        topk_candidates=300,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )


def tv_network(tv: nn.Module, x: Tensor):
    """torchvision SSD's network without its transform and postprocess."""
    return tv.head(list(tv.backbone(x).values()))
