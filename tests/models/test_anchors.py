import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from densemnv3.models.heads.anchors import BoxCoder, DefaultBoxes

SSDLITE_GRIDS = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def torchvision_boxes(generator: DefaultBoxGenerator, grids, image_size) -> torch.Tensor:
    images = ImageList(torch.zeros(1, 3, *image_size), [tuple(image_size)])
    maps = [torch.zeros(1, 1, h, w) for h, w in grids]
    return generator(images, maps)[0]


@pytest.mark.parametrize(
    "grids,image_size",
    [
        (SSDLITE_GRIDS, (320, 320)),
        ([(24, 32), (12, 16), (6, 8), (3, 4), (2, 2), (1, 1)], (384, 512)),
    ],
)
def test_default_boxes_equal_torchvision(grids, image_size):
    ours = DefaultBoxes([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)
    tv = DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)
    expected = torchvision_boxes(tv, grids, image_size)
    boxes = ours(grids, image_size)
    assert boxes.shape == expected.shape
    assert torch.equal(boxes, expected)  # same values in the same order, not just close
    assert ours.num_anchors_per_location() == tv.num_anchors_per_location() == [6] * 6
    assert ours.scales == pytest.approx(tv.scales)


def test_default_boxes_steps_and_no_clip_equal_torchvision():
    grids = [(8, 8), (4, 4)]
    ours = DefaultBoxes([[2], [2, 3]], min_ratio=0.3, max_ratio=0.9, steps=[16, 32], clip=False)
    tv = DefaultBoxGenerator(
        [[2], [2, 3]], min_ratio=0.3, max_ratio=0.9, steps=[16, 32], clip=False
    )
    assert torch.equal(ours(grids, (128, 128)), torchvision_boxes(tv, grids, (128, 128)))


def test_default_boxes_known_values_and_cache():
    boxes = DefaultBoxes([[2, 3]] * 6)(SSDLITE_GRIDS, (320, 320))
    assert boxes.shape == (6 * (400 + 100 + 25 + 9 + 4 + 1), 4)  # 3234
    # first cell of the 20x20 map (center 8, 8): 0.2 * 320 = 64 px square, then sqrt(0.2 * 0.35)
    torch.testing.assert_close(boxes[0], torch.tensor([8 - 32, 8 - 32, 8 + 32, 8 + 32.0]))
    side = math.sqrt(0.2 * 0.35) * 320
    torch.testing.assert_close(
        boxes[1], torch.tensor([8 - side / 2, 8 - side / 2, 8 + side / 2, 8 + side / 2])
    )
    w, h = 64 * math.sqrt(2), 64 / math.sqrt(2)
    torch.testing.assert_close(boxes[2], torch.tensor([8 - w / 2, 8 - h / 2, 8 + w / 2, 8 + h / 2]))
    # widths and heights are clipped to the image size (the 1x1 map's large boxes)
    sizes = boxes[:, 2:] - boxes[:, :2]
    assert sizes.max() == 320 and (sizes[-6:] == 320).sum() == 4  # 0.95*sqrt(2), 0.95*sqrt(3) -> 1
    # the last box: 1x1 map, aspect 3 transposed: (0.95/sqrt 3, 0.95*sqrt 3 -> clipped 1.0)
    torch.testing.assert_close(boxes[-1, [1, 3]], torch.tensor([0.0, 320.0]))

    gen = DefaultBoxes([[2, 3]] * 6)
    first = gen(SSDLITE_GRIDS, (320, 320))
    assert gen(SSDLITE_GRIDS, (320, 320)) is first
    half = gen(SSDLITE_GRIDS, (320, 320), dtype=torch.float64)
    assert half.dtype == torch.float64 and half is not first


def test_box_size_fixes_the_boxes_pixel_size():
    """With box_size the boxes are those of that input size, tiled over any other input's grid."""
    grids = [(16, 32), (8, 16), (4, 8), (2, 4), (1, 2), (1, 1)]
    half = [(8, 16), (4, 8), (2, 4), (1, 2), (1, 1), (1, 1)]
    relative = DefaultBoxes([[2, 3]] * 6, min_ratio=0.1, max_ratio=0.9)
    fixed = DefaultBoxes([[2, 3]] * 6, min_ratio=0.1, max_ratio=0.9, box_size=(256, 512))
    assert torch.equal(fixed(grids, (256, 512)), relative(grids, (256, 512)))
    crop, whole = fixed(half, (128, 256)), fixed(grids, (256, 512))
    sizes = lambda b: b[:, 2:] - b[:, :2]  # noqa: E731
    torch.testing.assert_close(
        sizes(crop)[:6], sizes(whole)[:6]
    )  # the first map's boxes: same pixels
    torch.testing.assert_close(
        sizes(crop)[:6], 2 * sizes(relative(half, (128, 256)))[:6]
    )  # not halved
    torch.testing.assert_close(
        (crop[0, :2] + crop[0, 2:]) / 2, torch.tensor([8.0, 8.0])
    )  # centres: its grid


def test_default_boxes_rejects_wrong_number_of_maps():
    with pytest.raises(ValueError, match="6 feature maps"):
        DefaultBoxes([[2, 3]] * 6)(SSDLITE_GRIDS[:5], (320, 320))


def random_boxes(shape, generator, size=300.0):
    xy = torch.rand(*shape, 2, generator=generator) * size
    wh = torch.rand(*shape, 2, generator=generator) * size / 2 + 1
    return torch.cat((xy, xy + wh), dim=-1)


def test_box_coding_round_trip_batched():
    g = torch.Generator().manual_seed(0)
    coder = BoxCoder((10, 10, 5, 5))
    anchors = random_boxes((50,), g)
    boxes = random_boxes((3, 50), g)  # (N, A, 4) against (A, 4)
    codes = coder.encode(boxes, anchors)
    assert codes.shape == (3, 50, 4)
    torch.testing.assert_close(coder.decode(codes, anchors), boxes, atol=1e-4, rtol=0)


def test_box_coding_known_values_and_clamp():
    coder = BoxCoder((10, 10, 5, 5))
    anchor = torch.tensor([[0.0, 0.0, 20.0, 40.0]])
    box = torch.tensor([[2.0, -4.0, 22.0, 76.0]])  # shifted (+2, +16), twice as tall
    expected = torch.tensor([[10 * 2 / 20, 10 * 16 / 40, 5 * math.log(1.0), 5 * math.log(2.0)]])
    torch.testing.assert_close(coder.encode(box, anchor), expected)
    torch.testing.assert_close(coder.encode(anchor, anchor), torch.zeros(1, 4))
    # size deltas are clamped at log(1000/16) before exp
    huge = torch.tensor([[0.0, 0.0, 5 * 100.0, 5 * 100.0]])
    decoded = coder.decode(huge, anchor)[0]
    torch.testing.assert_close(decoded[2] - decoded[0], torch.tensor(20 * 1000 / 16))
    torch.testing.assert_close(decoded[3] - decoded[1], torch.tensor(40 * 1000 / 16))
