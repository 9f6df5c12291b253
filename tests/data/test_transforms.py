import albumentations as A
import numpy as np
import pytest
import torch

from densemnv3.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomIoUCrop,
    RandomScaleCrop,
    RandomZoomOut,
    _det_bbox_params,
    det_eval_transform,
    det_train_transform,
    seg_eval_transform,
    seg_train_transform,
)

H, W = 32, 64
MEAN, STD = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def mask():
    return np.random.default_rng(1).integers(0, 19, (H, W), dtype=np.uint8)


def normalized(image, mean=MEAN, std=STD):
    return ((image / 255.0 - mean) / std).transpose(2, 0, 1)


def test_seg_train_identity_settings_keep_values(image, mask):
    transform = seg_train_transform((H, W), scale_range=(1, 1), hflip=0, color_jitter=False)
    out = transform(image=image, mask=mask)
    assert out["image"].shape == (3, H, W) and out["image"].dtype == torch.float32
    np.testing.assert_allclose(out["image"].numpy(), normalized(image), atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), mask)


def test_seg_train_flip(image, mask):
    out = seg_train_transform((H, W), scale_range=(1, 1), hflip=1, color_jitter=False)(
        image=image, mask=mask
    )
    np.testing.assert_array_equal(out["mask"].numpy(), mask[:, ::-1])
    np.testing.assert_allclose(out["image"].numpy(), normalized(image[:, ::-1]), atol=1e-5)


def test_seg_train_pads_with_zero_and_ignore(image, mask):
    transform = seg_train_transform((48, 80), scale_range=(1, 1), hflip=0, color_jitter=False)
    out = transform(image=image, mask=mask)
    result, target = out["image"].numpy(), out["mask"].numpy()
    assert result.shape == (3, 48, 80) and target.shape == (48, 80)
    np.testing.assert_array_equal(target[:H, :W], mask)
    assert (target[H:] == 255).all() and (target[:, W:] == 255).all()
    padded = (0 - MEAN) / STD
    np.testing.assert_allclose(result[:, H:, :].reshape(3, -1).T - padded, 0, atol=1e-5)
    np.testing.assert_allclose(result[:, :H, :W], normalized(image), atol=1e-5)


def test_seg_train_scale_2_is_nearest_upsampling_of_the_mask(mask):
    crop = RandomScaleCrop((2 * H, 2 * W), scale_range=(2, 2))
    out = crop(image=np.zeros((H, W, 3), np.uint8), mask=mask)["mask"]
    np.testing.assert_array_equal(out, mask.repeat(2, 0).repeat(2, 1))


@pytest.mark.parametrize("seed", range(5))
def test_seg_train_output_is_crop_size(image, mask, seed):
    transform = seg_train_transform((24, 40))
    transform.set_random_seed(seed)
    out = transform(image=image, mask=mask)
    assert out["image"].shape == (3, 24, 40) and out["mask"].shape == (24, 40)
    values = set(np.unique(out["mask"].numpy()).tolist())
    assert values <= set(range(19)) | {255}


def test_seg_eval_resizes_image_only(image, mask):
    out = seg_eval_transform(resize=(16, 24))(image=image, mask=mask)
    assert out["image"].shape == (3, 16, 24)
    assert out["mask"].shape == (H, W)
    np.testing.assert_array_equal(out["mask"].numpy(), mask)
    out = seg_eval_transform()(image=image, mask=mask)
    np.testing.assert_allclose(out["image"].numpy(), normalized(image), atol=1e-5)


def test_det_flip_and_resize_move_a_box_as_expected():
    image = np.zeros((100, 200, 3), np.uint8)
    transform = det_train_transform(size=64, zoom_out=False, iou_crop=False, hflip=1.0)
    out = transform(image=image, bboxes=np.array([[10, 20, 30, 40]], np.float32), labels=[7])
    # flip in a 200-wide image: x -> 200 - x; then x * 64 / 200, y * 64 / 100
    np.testing.assert_allclose(out["bboxes"], [[54.4, 12.8, 60.8, 25.6]], atol=1e-4)
    assert list(out["labels"]) == [7]
    assert out["image"].shape == (3, 64, 64)
    np.testing.assert_allclose(out["image"].numpy(), -1.0)  # 0 -> (0 - 0.5) / 0.5


@pytest.mark.parametrize("seed", range(20))
def test_det_train_boxes_stay_inside_the_image(seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    xy = rng.uniform(0, 60, (5, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (5, 2))], axis=1).clip(0, [90, 60, 90, 60])
    transform = det_train_transform(size=32)
    transform.set_random_seed(seed)
    out = transform(image=image, bboxes=boxes.astype(np.float32), labels=np.arange(1, 6))
    result = np.asarray(out["bboxes"]).reshape(-1, 4)
    assert out["image"].shape == (3, 32, 32)
    assert (result >= 0).all() and (result <= 32).all()
    assert (result[:, 2:] > result[:, :2]).all()
    assert len(out["labels"]) == len(result)


def test_det_eval_scales_boxes():
    image = np.zeros((100, 200, 3), np.uint8)
    out = det_eval_transform(size=50)(
        image=image, bboxes=np.array([[10, 20, 30, 40]], np.float32), labels=[1]
    )
    np.testing.assert_allclose(out["bboxes"], [[2.5, 10, 7.5, 20]], atol=1e-4)


def test_det_transforms_take_height_and_width():
    image = np.zeros((100, 200, 3), np.uint8)
    boxes = np.array([[10, 20, 30, 40]], np.float32)
    out = det_eval_transform(size=(50, 100))(image=image, bboxes=boxes, labels=[1])
    assert out["image"].shape == (3, 50, 100)
    np.testing.assert_allclose(out["bboxes"], [[5, 10, 15, 20]], atol=1e-4)
    out = det_train_transform((48, 96), zoom_out=False, iou_crop=False, hflip=0)(
        image=image, bboxes=boxes, labels=[1]
    )
    assert out["image"].shape == (3, 48, 96)


def test_zoom_out_places_image_and_boxes_together():
    image = np.random.default_rng(0).integers(0, 256, (10, 20, 3), dtype=np.uint8)
    box = np.array([[2, 3, 12, 8]], np.float32)
    compose = A.Compose(
        [RandomZoomOut(fill=(128, 128, 128), ratio_range=(3, 3), p=1.0)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
        seed=0,
    )
    out = compose(image=image, bboxes=box, labels=[1])
    canvas, moved = out["image"], out["bboxes"][0]
    assert canvas.shape == (30, 60, 3)
    left, top = int(round(moved[0] - 2)), int(round(moved[1] - 3))
    np.testing.assert_allclose(moved, box[0] + [left, top, left, top], atol=1e-4)
    np.testing.assert_array_equal(canvas[top : top + 10, left : left + 20], image)
    outside = np.ones(canvas.shape[:2], bool)
    outside[top : top + 10, left : left + 20] = False
    assert (canvas[outside] == 128).all()


def test_iou_crop_meets_the_minimum_iou():
    image = np.zeros((100, 100, 3), np.uint8)
    whole = np.array([[0, 0, 100, 100]], np.float32)  # IoU(crop, whole) = crop area / 100^2
    sizes = set()
    for seed in range(10):
        compose = A.Compose(
            [RandomIoUCrop(options=(0.5,))],
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
            seed=seed,
        )
        out = compose(image=image, bboxes=whole, labels=[1])
        h, w = out["image"].shape[:2]
        sizes.add((h, w))
        assert h * w >= 0.5 * 100 * 100
        assert 0.5 <= w / h <= 2
        np.testing.assert_allclose(out["bboxes"], [[0, 0, w, h]], atol=1e-4)
    assert len(sizes) > 5  # really cropping, not falling back to the whole image


def test_iou_crop_drops_boxes_whose_centre_is_outside():
    crop = RandomIoUCrop()
    # normalised boxes in a 100x100 image, with a label column as albumentations stores them
    boxes = np.array([[0.1, 0.1, 0.3, 0.3, 0], [0.6, 0.6, 0.9, 0.9, 1], [0.4, 0.4, 0.6, 0.6, 2]])
    kept = crop.apply_to_bboxes(boxes, crop_coords=(0, 0, 50, 50), shape=(100, 100, 3))
    assert kept[:, 4].tolist() == [0]  # (50, 50) is on the border: not strictly inside
    np.testing.assert_allclose(kept[0, :4], [0.2, 0.2, 0.6, 0.6])


def test_det_boxes_cropped_to_nothing_disappear():
    compose = A.Compose([A.Crop(0, 0, 50, 50)], bbox_params=_det_bbox_params())
    boxes = np.array([[50, 10, 60, 20], [40, 10, 60, 20], [10, 50, 20, 70]], np.float32)
    out = compose(image=np.zeros((100, 100, 3), np.uint8), bboxes=boxes, labels=[1, 2, 3])
    np.testing.assert_allclose(out["bboxes"], [[40, 10, 50, 20]])
    assert list(out["labels"]) == [2]


def test_iou_with_crop_matches_torchvision_box_iou():
    from torchvision.ops import box_iou

    from densemnv3.data.transforms import _iou_with

    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 200, (50, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(1, 80, (50, 2))], 1)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    crop = (30, 40, 170, 150)
    expected = box_iou(torch.as_tensor(boxes), torch.tensor([crop], dtype=torch.float64))[
        :, 0
    ].numpy()
    np.testing.assert_allclose(_iou_with(boxes, areas, crop), expected, rtol=1e-12)


def test_normalize_to_tensor_equals_albumentations_normalize_and_to_tensor(image, mask):
    """Same float32 values as A.Normalize + ToTensorV2, but a contiguous CHW tensor."""
    from albumentations.pytorch import ToTensorV2

    from densemnv3.data.transforms import NormalizeToTensor

    mean, std = (0.5, 0.25, 0.125), (0.2, 0.3, 0.4)
    ref = A.Compose([A.Normalize(mean=mean, std=std), ToTensorV2()])(image=image, mask=mask)
    got = A.Compose([NormalizeToTensor(mean=mean, std=std)])(image=image, mask=mask)
    assert got["image"].is_contiguous() and got["image"].dtype == torch.float32
    assert torch.equal(got["image"], ref["image"]) and torch.equal(got["mask"], ref["mask"])
    floats = image.astype(np.float32) / 255  # a non-uint8 image takes albumentations' own path
    ref = A.Compose([A.Normalize(mean=mean, std=std), ToTensorV2()])(image=floats)["image"]
    assert torch.equal(
        A.Compose([NormalizeToTensor(mean=mean, std=std)])(image=floats)["image"], ref
    )
