"""SSD default boxes and the (10, 10, 5, 5) box coding.

:class:`DefaultBoxes` reproduces torchvision's ``DefaultBoxGenerator(clip=True)`` box for box (same
values, same order) and caches the result. :class:`BoxCoder` is the Faster R-CNN/SSD delta coding;
torchvision only ships it in a private module (``models.detection._utils``), so it is written here,
with the same arithmetic so decoded boxes match torchvision's bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class DefaultBoxes(nn.Module):
    """SSD default boxes (xyxy, input pixels) for a list of feature maps.

    Per map ``k`` and location the boxes are: scale ``s_k`` square, the extra square
    ``sqrt(s_k * s_{k+1})``, then ``(s_k sqrt(r), s_k / sqrt(r))`` and its transpose for each aspect
    ratio ``r``. Scales run linearly from ``min_ratio`` to ``max_ratio`` (``s_{K} = 1``), widths and
    heights are clipped to 1 (in image units) and boxes are ordered map, row, column, box — as
    torchvision's ``DefaultBoxGenerator``.

    Args:
        aspect_ratios: ratios per feature map, e.g. ``[[2, 3]] * 6``.
        min_ratio, max_ratio: smallest and largest scale (fractions of the image side).
        scales: explicit scales (one per map plus one), instead of ``min_ratio``/``max_ratio``.
        steps: pixels per cell per map; by default the cell is image size / map size.
        clip: clip widths and heights to the image (torchvision's ``clip=True``).
        box_size: ``(H, W)`` in pixels that the scales are fractions of, whatever the input size
            (boxes keep their pixel size: a model trained on crops runs on whole images); None
            (torchvision's): each input's own size.
    """

    def __init__(
        self,
        aspect_ratios: Sequence[Sequence[float]],
        *,
        min_ratio: float = 0.2,
        max_ratio: float = 0.95,
        scales: Sequence[float] | None = None,
        steps: Sequence[int] | None = None,
        clip: bool = True,
        box_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        num_maps = len(aspect_ratios)
        if steps is not None and len(steps) != num_maps:
            raise ValueError("aspect_ratios and steps need one entry per feature map")
        if scales is None:
            if num_maps > 1:
                span = max_ratio - min_ratio
                scales = [min_ratio + span * k / (num_maps - 1.0) for k in range(num_maps)] + [1.0]
            else:
                scales = [min_ratio, max_ratio]
        if len(scales) != num_maps + 1:
            raise ValueError(
                f"need {num_maps + 1} scales (one per map plus one), got {len(scales)}"
            )
        self.aspect_ratios = [list(r) for r in aspect_ratios]
        self.scales = list(scales)
        self.steps = None if steps is None else list(steps)
        self.clip = clip
        self.box_size = None if box_size is None else (int(box_size[0]), int(box_size[1]))
        self._wh = [self._wh_pairs(k) for k in range(num_maps)]
        self._cache: dict[tuple, Tensor] = {}

    def _wh_pairs(self, k: int) -> Tensor:
        s_k, s_next = self.scales[k], self.scales[k + 1]
        pairs = [[s_k, s_k], [math.sqrt(s_k * s_next)] * 2]
        for ratio in self.aspect_ratios[k]:
            w, h = s_k * math.sqrt(ratio), s_k / math.sqrt(ratio)
            pairs += [[w, h], [h, w]]
        wh = torch.tensor(pairs, dtype=torch.float32)
        return wh.clamp(0, 1) if self.clip else wh

    def num_anchors_per_location(self) -> list[int]:
        """Boxes per cell of each map (``2 + 2 * len(ratios)``: 6 for SSDLite)."""
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def extra_repr(self) -> str:
        size = "" if self.box_size is None else f", box_size={self.box_size}"
        return f"aspect_ratios={self.aspect_ratios}, scales={self.scales}, clip={self.clip}{size}"

    def forward(
        self,
        grid_sizes: Sequence[Sequence[int]],
        image_size: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``(A, 4)`` boxes (xyxy pixels) for maps of ``grid_sizes`` ``(h, w)`` on an image of
        ``image_size`` ``(h, w)``; computed once per sizes, device and dtype (a cached tensor:
        do not modify it in place)."""
        if _is_exporting():  # symbolic sizes: the boxes are computed in the exported graph
            return self.generate(grid_sizes, image_size).to(device, dtype)
        grids = tuple((int(h), int(w)) for h, w in grid_sizes)
        if len(grids) != len(self._wh):
            raise ValueError(f"expected {len(self._wh)} feature maps, got {len(grids)}")
        height, width = int(image_size[0]), int(image_size[1])
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (grids, height, width, device, dtype)
        boxes = self._cache.get(key)
        if boxes is None:
            if len(self._cache) >= 32:  # many input sizes (multi-scale): forget the oldest
                del self._cache[next(iter(self._cache))]
            boxes = self._cache[key] = self.generate(grids, (height, width)).to(device, dtype)
        return boxes

    def generate(self, grid_sizes: Sequence[Sequence[int]], image_size: Sequence[int]) -> Tensor:
        """``(A, 4)`` float32 boxes (xyxy pixels), not cached. The sizes may be symbolic
        (``torch.export`` with dynamic height and width), so an exported graph computes the boxes
        for the size it is given, with the same float32 ops as the eager path."""
        if len(grid_sizes) != len(self._wh):
            raise ValueError(f"expected {len(self._wh)} feature maps, got {len(grid_sizes)}")
        height, width = image_size
        per_map = []
        for k, (h, w) in enumerate(grid_sizes):
            cells_x, cells_y = (
                (w, h) if self.steps is None else (width / self.steps[k], height / self.steps[k])
            )
            # same float32 ops as torchvision, so the boxes are equal, not just close
            cx = (torch.arange(w, dtype=torch.float32) + 0.5) / cells_x
            cy = (torch.arange(h, dtype=torch.float32) + 0.5) / cells_y
            wh = self._wh[k]
            centers = torch.stack(torch.meshgrid(cy, cx, indexing="ij")[::-1], dim=-1)  # (h, w, 2)
            centers = centers.reshape(-1, 1, 2).expand(-1, len(wh), 2)
            sizes = wh.expand(h * w, -1, -1)
            per_map.append(torch.cat((centers, sizes), dim=-1).reshape(-1, 4))
        cxcywh = torch.cat(per_map)
        # x columns times the width, y columns times the height (torchvision multiplies by an
        # int64 tensor [width, height]: the same float32 products)
        x_scale = torch.arange(2) == 0
        scale = torch.where(x_scale, width, height).to(torch.float32)
        if self.box_size is not None:
            centres = cxcywh[:, :2] * scale
            half = (
                0.5
                * cxcywh[:, 2:]
                * torch.tensor([self.box_size[1], self.box_size[0]], dtype=torch.float32)
            )
            return torch.cat((centres - half, centres + half), dim=-1)
        xy_min = cxcywh[:, :2] - 0.5 * cxcywh[:, 2:]
        xy_max = cxcywh[:, :2] + 0.5 * cxcywh[:, 2:]
        return torch.cat((xy_min * scale, xy_max * scale), dim=-1)


def _is_exporting() -> bool:
    """Inside ``torch.export`` (``torch.onnx.export(dynamo=True)``); False on a torch without it."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())


class BoxCoder:
    """Encode boxes as ``(wx dx/w, wy dy/h, ww log(w'/w), wh log(h'/h))`` relative to anchors.

    Shapes broadcast: ``(..., 4)`` boxes against ``(..., 4)`` anchors, e.g. ``(N, A, 4)`` codes
    against ``(A, 4)`` anchors. ``decode`` clamps the size deltas at ``log(1000 / 16)`` before
    ``exp`` (torchvision's ``bbox_xform_clip``).
    """

    def __init__(
        self,
        weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        bbox_xform_clip: float = math.log(1000.0 / 16),
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights})"

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Regression targets of xyxy ``boxes`` (matched ground truth) w.r.t. xyxy ``anchors``."""
        wx, wy, ww, wh = self.weights
        a_x, a_y, a_w, a_h = _centers_and_sizes(anchors.to(boxes.dtype))
        b_x, b_y, b_w, b_h = _centers_and_sizes(boxes)
        return torch.stack(
            (
                wx * (b_x - a_x) / a_w,
                wy * (b_y - a_y) / a_h,
                ww * torch.log(b_w / a_w),
                wh * torch.log(b_h / a_h),
            ),
            dim=-1,
        )

    def decode(self, rel_codes: Tensor, anchors: Tensor) -> Tensor:
        """xyxy boxes from ``rel_codes`` (``(..., 4)``) applied to xyxy ``anchors``."""
        wx, wy, ww, wh = self.weights
        ctr_x, ctr_y, widths, heights = _centers_and_sizes(anchors.to(rel_codes.dtype))
        dx = rel_codes[..., 0] / wx
        dy = rel_codes[..., 1] / wy
        dw = (rel_codes[..., 2] / ww).clamp(max=self.bbox_xform_clip)
        dh = (rel_codes[..., 3] / wh).clamp(max=self.bbox_xform_clip)
        pred_x = dx * widths + ctr_x
        pred_y = dy * heights + ctr_y
        half_w = 0.5 * (torch.exp(dw) * widths)
        half_h = 0.5 * (torch.exp(dh) * heights)
        return torch.stack(
            (pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h), dim=-1
        )


def _centers_and_sizes(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Centre x, centre y, width and height of xyxy ``boxes`` (``(..., 4)``), in torchvision's
    arithmetic."""
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights
