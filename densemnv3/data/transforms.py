"""Albumentations pipelines: segmentation (image + mask), detection (image + pascal_voc boxes).

Every pipeline is called as ``transform(image=..., mask=...)`` or
``transform(image=..., bboxes=..., labels=...)`` on a uint8 RGB image and returns a float32 CHW
tensor under ``"image"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.pytorch import ToTensorV2

from densemnv3.data.labels import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: brightness, contrast, saturation, hue of the photometric jitter (torchvision ColorJitter units).
SEG_JITTER = (0.3, 0.3, 0.3, 0.05)
#: torchvision references' RandomPhotometricDistort ranges.
DET_JITTER = ((0.875, 1.125), (0.5, 1.5), (0.5, 1.5), (-0.05, 0.05))


class RandomScaleCrop(A.DualTransform):
    """Scale by a random factor, pad to at least ``size`` and take a random ``size`` crop.

    Same result as ``A.RandomScale -> A.PadIfNeeded -> A.RandomCrop``, but one
    ``cv2.warpAffine`` computes only the crop's pixels instead of resizing the whole image
    (16x the crop's pixels for a 2x scale of a 1024x2048 image to a 512x1024 crop).
    """

    def __init__(
        self,
        size: tuple[int, int],
        scale_range: tuple[float, float] = (0.5, 2.0),
        fill: float = 0,
        fill_mask: float = IGNORE_INDEX,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.size = tuple(size)
        self.scale_range = tuple(scale_range)
        self.fill = fill
        self.fill_mask = fill_mask

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict:
        height, width = params["shape"][:2]
        scale = self.py_random.uniform(*self.scale_range)
        crop_h, crop_w = self.size
        # Scaled size rounded like A.RandomScale; the crop origin is uniform over the valid
        # offsets, and 0 where the scaled image is smaller than the crop (padded bottom/right).
        scaled_h, scaled_w = round(height * scale), round(width * scale)
        top = self.py_random.randint(0, max(scaled_h - crop_h, 0))
        left = self.py_random.randint(0, max(scaled_w - crop_w, 0))
        sy, sx = scaled_h / height, scaled_w / width
        # Pixel centres map as in cv2.resize: dst + 0.5 = s * (src + 0.5).
        matrix = np.array([[sx, 0, 0.5 * (sx - 1) - left], [0, sy, 0.5 * (sy - 1) - top]])
        return {"matrix": matrix, "valid": (scaled_h - top, scaled_w - left)}

    def _warp(self, array, matrix, valid, interpolation: int, fill) -> np.ndarray:
        crop_h, crop_w = self.size
        out = cv2.warpAffine(
            array, matrix, (crop_w, crop_h), flags=interpolation, borderMode=cv2.BORDER_REPLICATE
        )
        out[valid[0] :] = fill
        out[:, valid[1] :] = fill
        return out

    def apply(self, img: np.ndarray, matrix, valid, **params: Any) -> np.ndarray:
        return self._warp(img, matrix, valid, cv2.INTER_LINEAR, self.fill)

    def apply_to_mask(self, mask: np.ndarray, matrix, valid, **params: Any) -> np.ndarray:
        return self._warp(mask, matrix, valid, cv2.INTER_NEAREST, self.fill_mask)

    def apply_to_bboxes(self, bboxes: np.ndarray, matrix, **params: Any) -> np.ndarray:
        # Pixel edges map as x' = s * x - left (the centres' map above, shifted by half a pixel);
        # boxes come normalised to the input size and leave normalised to the crop's.
        height, width = params["shape"][:2]
        crop_h, crop_w = self.size
        (sx, _, tx), (_, sy, ty) = matrix
        out = bboxes.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] * width * sx + tx + 0.5 * (1 - sx)) / crop_w
        out[:, [1, 3]] = (out[:, [1, 3]] * height * sy + ty + 0.5 * (1 - sy)) / crop_h
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "scale_range", "fill", "fill_mask")


class RandomZoomOut(A.DualTransform):
    """SSD zoom-out: place the image at a random spot of a canvas ``ratio`` times larger."""

    def __init__(self, fill: tuple[float, ...], ratio_range=(1.0, 4.0), p: float = 0.5):
        super().__init__(p=p)
        self.fill = tuple(fill)
        self.ratio_range = tuple(ratio_range)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict:
        height, width = params["shape"][:2]
        ratio = self.py_random.uniform(*self.ratio_range)
        canvas_h, canvas_w = int(height * ratio), int(width * ratio)
        left = int((canvas_w - width) * self.py_random.random())
        top = int((canvas_h - height) * self.py_random.random())
        return {"pad": (top, canvas_h - height - top, left, canvas_w - width - left)}

    def apply(self, img: np.ndarray, pad: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        return cv2.copyMakeBorder(img, *pad, cv2.BORDER_CONSTANT, value=self.fill)

    def apply_to_mask(self, mask: np.ndarray, pad: tuple[int, ...], **params: Any) -> np.ndarray:
        return cv2.copyMakeBorder(mask, *pad, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)

    def apply_to_bboxes(
        self, bboxes: np.ndarray, pad: tuple[int, ...], **params: Any
    ) -> np.ndarray:
        # Boxes are normalised to the image size inside albumentations.
        height, width = params["shape"][:2]
        top, bottom, left, right = pad
        out = bboxes.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] * width + left) / (width + left + right)
        out[:, [1, 3]] = (out[:, [1, 3]] * height + top) / (height + top + bottom)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("fill", "ratio_range")


class RandomIoUCrop(BaseCrop):
    """SSD random crop, as torchvision references' ``RandomIoUCrop``.

    Picks a minimum IoU from ``options`` (None keeps the whole image, 0.0 is an unconstrained
    patch), then tries crops of scale ``scale_range`` per side and aspect ``aspect_range`` until
    one has a box centre inside and an IoU with some box of at least that minimum. Boxes whose
    centres fall outside the crop are dropped. Albumentations has no crop with this IoU rule.
    """

    def __init__(
        self,
        scale_range=(0.3, 1.0),
        aspect_range=(0.5, 2.0),
        options=(0.0, 0.1, 0.3, 0.5, 0.7, 0.9, None),
        trials: int = 40,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.scale_range = tuple(scale_range)
        self.aspect_range = tuple(aspect_range)
        self.options = tuple(options)
        self.trials = trials

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict:
        height, width = params["shape"][:2]
        whole = (0, 0, width, height)
        bboxes = np.asarray(data.get("bboxes", np.zeros((0, 4))))
        if len(bboxes) == 0:
            return {"crop_coords": whole}
        # numpy, not torch: a few dozen trials on a handful of boxes are dominated by per-op cost
        boxes = bboxes[:, :4].astype(np.float64) * [width, height, width, height]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for _ in range(50):  # rounds of (option, trials); torchvision loops until one succeeds
            min_iou = self.py_random.choice(self.options)
            if min_iou is None:
                return {"crop_coords": whole}
            for _ in range(self.trials):
                new_w = int(width * self.py_random.uniform(*self.scale_range))
                new_h = int(height * self.py_random.uniform(*self.scale_range))
                if new_w == 0 or new_h == 0:
                    continue
                if not self.aspect_range[0] <= new_w / new_h <= self.aspect_range[1]:
                    continue
                left = int((width - new_w) * self.py_random.random())
                top = int((height - new_h) * self.py_random.random())
                crop = (left, top, left + new_w, top + new_h)
                inside = _centres_inside(centres, crop)
                if inside.any() and _iou_with(boxes[inside], areas[inside], crop).max() >= min_iou:
                    return {"crop_coords": crop}
        return {"crop_coords": whole}

    def apply_to_bboxes(
        self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any
    ) -> np.ndarray:
        height, width = params["shape"][:2]
        if tuple(crop_coords) != (0, 0, width, height):
            centres = (bboxes[:, :2] + bboxes[:, 2:4]) / 2 * [width, height]
            bboxes = bboxes[_centres_inside(centres, crop_coords)]
        return super().apply_to_bboxes(bboxes, crop_coords, **params)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale_range", "aspect_range", "options", "trials")


def _centres_inside(centres: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = crop
    cx, cy = centres[:, 0], centres[:, 1]
    return (left < cx) & (cx < right) & (top < cy) & (cy < bottom)


def _iou_with(boxes: np.ndarray, areas: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """IoU of each xyxy box (with its area) with the ``crop`` box."""
    left, top, right, bottom = crop
    w = np.clip(np.minimum(boxes[:, 2], right) - np.maximum(boxes[:, 0], left), 0, None)
    h = np.clip(np.minimum(boxes[:, 3], bottom) - np.maximum(boxes[:, 1], top), 0, None)
    inter = w * h
    return inter / (areas + (right - left) * (bottom - top) - inter)


class _ResizeImageOnly(A.ImageOnlyTransform):
    """Resize the image only, leaving the mask at full resolution."""

    def __init__(self, height: int, width: int, p: float = 1.0):
        super().__init__(p=p)
        self.height, self.width = height, width

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_LINEAR)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width")


def normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``A.Normalize(mean, std)``'s own float32 result for every uint8 value of every channel, a
    ``(256, C)`` table: a ``cv2.LUT`` through it gives the values evaluation and training see,
    bit for bit (the Predictor normalises frames through it too)."""
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], len(mean), axis=2)
    return A.Normalize(mean=mean, std=std)(image=ramp)["image"][:, 0, :]


class NormalizeToTensor(A.DualTransform):
    """``A.Normalize(mean, std)`` then ``ToTensorV2()``, with the same float32 values, but the
    image comes out as a contiguous CHW tensor: one ``cv2.LUT`` per channel plane instead of a
    float HWC image that ``ToTensorV2`` only permutes. Collating permuted samples into a batch
    costs a strided copy about as long as the rest of a cached training sample."""

    def __init__(
        self,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.mean, self.std = tuple(mean), tuple(std)
        self._table = normalize_table(self.mean, self.std)

    def apply(self, img: np.ndarray, **params: Any):
        import torch

        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != self._table.shape[1]:
            out = A.Normalize(mean=self.mean, std=self.std)(image=img)["image"]
            return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
        planes = [cv2.LUT(plane, self._table[:, c]) for c, plane in enumerate(cv2.split(img))]
        return torch.from_numpy(np.stack(planes))

    def apply_to_mask(self, mask: np.ndarray, **params: Any):
        import torch

        return torch.from_numpy(mask)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mean", "std")


def seg_train_transform(
    crop_size: tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    ignore_index: int = IGNORE_INDEX,
    hflip: float = 0.5,
    color_jitter: bool = True,
    boxes: bool = False,
) -> A.Compose:
    """Random scale, pad (image 0, mask ``ignore_index``), random ``crop_size`` (H, W) crop,
    horizontal flip, photometric jitter (p=0.5), normalise, to tensor.

    Everything after the crop runs on the crop only, on uint8 pixels. With ``boxes`` the
    pipeline also takes ``bboxes`` (pascal_voc pixels) and ``labels``, moved with the image and
    mask, clipped to the crop, and dropped when less than a pixel wide or high is left (the
    multi-task pipeline).
    """
    brightness, contrast, saturation, hue = SEG_JITTER
    transforms = [
        RandomScaleCrop(crop_size, scale_range, fill=0, fill_mask=ignore_index),
        A.HorizontalFlip(p=hflip),
    ]
    if color_jitter:
        transforms.append(A.ColorJitter(brightness, contrast, saturation, hue, p=0.5))
    transforms.append(NormalizeToTensor(mean=mean, std=std))
    # boxes of the mask's own instances: one under a pixel wide covers no mask pixel, so it goes
    return A.Compose(transforms, bbox_params=_det_bbox_params(min_size=1.0) if boxes else None)


def seg_eval_transform(
    resize: tuple[int, int] | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> A.Compose:
    """Optional resize of the image to ``resize`` (H, W), normalise, to tensor.

    The mask is never resized: metrics are taken at the label's full resolution, so the
    evaluator upsamples the logits to the label size.
    """
    transforms = [] if resize is None else [_ResizeImageOnly(*resize)]
    # The image and mask shapes differ after the resize, so the output shape check is off.
    return A.Compose(
        [*transforms, A.Normalize(mean=mean, std=std), ToTensorV2()], is_check_shapes=False
    )


def _det_bbox_params(min_size: float = 0.01) -> A.BboxParams:
    # min_width/min_height drop boxes that a crop left without width or height (albumentations
    # keeps zero-area boxes at its defaults); clip guards against float round-off at the edges.
    return A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        min_width=min_size,
        min_height=min_size,
        clip=True,
    )


def detector_input_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of a detector input size: a side ``s`` (``s x s``) or ``(h, w)``."""
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


def det_train_transform(
    size: int | Sequence[int] = 320,
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.5, 0.5, 0.5),
    zoom_out: bool = True,
    iou_crop: bool = True,
    hflip: float = 0.5,
) -> A.Compose:
    """SSD augmentation: photometric jitter, zoom-out (p=0.5, canvas filled with ``mean``),
    random IoU crop, horizontal flip, resize to ``size`` (a side, or ``(height, width)``),
    normalise, to tensor.

    Boxes are pascal_voc ``[x1, y1, x2, y2]`` in pixels, with a ``labels`` field.
    """
    brightness, contrast, saturation, hue = DET_JITTER
    transforms: list[A.BasicTransform] = [
        A.ColorJitter(brightness, contrast, saturation, hue, p=0.5)
    ]
    if zoom_out:
        transforms.append(RandomZoomOut(fill=tuple(round(255 * m) for m in mean), p=0.5))
    if iou_crop:
        transforms.append(RandomIoUCrop())
    transforms += [
        A.HorizontalFlip(p=hflip),
        A.Resize(*detector_input_size(size), interpolation=cv2.INTER_LINEAR),
        A.Normalize(mean=mean, std=std),
        ToTensorV2(),
    ]
    return A.Compose(transforms, bbox_params=_det_bbox_params())


def det_eval_transform(
    size: int | Sequence[int] = 320,
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.5, 0.5, 0.5),
) -> A.Compose:
    """Resize to ``size`` (a side, or ``(height, width)``), normalise, to tensor; boxes
    (pascal_voc) follow the resize."""
    return A.Compose(
        [
            A.Resize(*detector_input_size(size), interpolation=cv2.INTER_LINEAR),
            A.Normalize(mean=mean, std=std),
            ToTensorV2(),
        ],
        bbox_params=_det_bbox_params(),
    )
