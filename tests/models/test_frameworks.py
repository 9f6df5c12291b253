"""densemnv3 backbones in torchvision's detection models (FasterRCNN)."""

import pytest
import torch
from torchvision.models.detection import FasterRCNN

from densemnv3.errors import ConfigError
from densemnv3.models import DetectionBackbone, create_backbone, torchvision_detection_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "taps,fpn_channels,out_channels,maps",
    [
        (("C5",), None, 960, {"0": (960, 10, 10)}),
        (("C4", "C5"), 64, 64, {"0": (64, 20, 20), "1": (64, 10, 10), "pool": (64, 5, 5)}),
    ],
)
def test_faster_rcnn_on_mobilenet_v3_returns_detections(taps, fpn_channels, out_channels, maps):
    torch.manual_seed(0)
    backbone = torchvision_detection_backbone(
        "mobilenet_v3_large", taps=taps, fpn_channels=fpn_channels
    )
    assert isinstance(backbone, DetectionBackbone) and backbone.out_channels == out_channels
    image = torch.rand(3, 320, 320)
    with torch.no_grad():
        features = backbone.eval()(image[None])
    assert {k: tuple(v.shape[1:]) for k, v in features.items()} == maps
    model = FasterRCNN(
        backbone,
        num_classes=3,
        rpn_anchor_generator=backbone.anchor_generator(),
        min_size=320,
        max_size=320,
    ).eval()
    with torch.no_grad():
        (detections,) = model([image])
    boxes, scores, labels = detections["boxes"], detections["scores"], detections["labels"]
    assert boxes.shape == (100, 4) and scores.shape == labels.shape == (100,)
    assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= 320
    assert ((scores >= 0.05) & (scores <= 1)).all() and set(labels.tolist()) <= {1, 2}


def test_a_built_backbone_and_its_errors():
    built = create_backbone("tv:resnet18")
    backbone = torchvision_detection_backbone(built, taps=("C3", "C4", "C5"), fpn_channels=32)
    assert backbone.body is built and built.out_features == ("C3", "C4", "C5")
    assert backbone.anchor_generator().sizes == ((32,), (64,), (256,), (512,))
    with pytest.raises(ConfigError, match="several maps need a common width; pass fpn_channels"):
        torchvision_detection_backbone("mobilenet_v3_small", taps=("C4", "C5"))
