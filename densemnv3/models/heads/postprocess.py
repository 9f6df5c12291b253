"""SSD detection postprocess for a batch: decode, score threshold, per-class top-k, class-wise NMS.

torchvision's SSD postprocess, made exact and batched, in two implementations that give the same
detections bit for bit. ``"per_image"`` runs torchvision's ``nms`` once per image on its best
candidates across classes (more when too few survive), found without a per-class top-k over every
anchor; torchvision's CPU kernel skips suppressed boxes, so it is the default on CPU.
``"batched"`` runs greedy NMS of every (image, class) list at once as the fixed point of a
suppression matrix, with a handful of host synchronisations per batch: the default on GPUs, where
torchvision's ``batched_nms`` loops over classes and its ``nms`` synchronises per call.

Both order candidates by score, then class, then anchor (a total order, so ties break alike on
every device), and run class-wise NMS as ``batched_nms`` does on its fast path: boxes shifted by
``label * (max(H, W) + 1)``, with its CPU kernel's test ``IoU > nms_thresh`` and IoU float ops
(the batched path computes the same bits on any device; torchvision's CUDA kernel may round an IoU
differently in the last bit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import clip_boxes_to_image, nms

from .anchors import BoxCoder

NMS_IMPLS = ("auto", "per_image", "batched")
Detections = list[dict[str, Tensor]]

#: batched NMS: candidates per (image, class) examined first, and the growth factor when a
#: class's unexamined candidates could still outrank the image's last detection.
FIRST_PREFIX, PREFIX_GROWTH = 32, 4
#: batched NMS: most entries of (groups, P, P) suppression matrices held at once (2 bytes each on
#: GPUs), and most pairwise IoUs computed at once (~16 bytes of temporaries each).
MATRIX_BUDGET, IOU_CHUNK = 2**28, 2**24


class Candidates(NamedTuple):
    """Each image's best ``k`` candidates per class, and every anchor's decoded box."""

    scores: Tensor  # (N, C-1, k) float32, best first within each class
    anchor: Tensor  # (N, C-1, k) int64
    # (N, C-1, k) int64: order across classes (score, class, anchor); < 0: below threshold
    key: Tensor
    boxes: Tensor  # (N, A, 4) xyxy pixels, clipped to the image


@torch.no_grad()
def ssd_postprocess(
    cls_logits: Tensor,
    bbox_regression: Tensor,
    anchors: Tensor,
    image_size: Sequence[int],
    box_coder: BoxCoder,
    *,
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
    topk_candidates: int,
    nms_prefix: int = 512,
    impl: str = "auto",
) -> Detections:
    """One dict of ``boxes``, ``scores``, ``labels`` (best first) per image.

    Candidates: per image and class the best ``topk_candidates`` scores > ``score_thresh``;
    detections: the best ``detections_per_img`` survivors of class-wise NMS (IoU >
    ``nms_thresh``). ``impl``: ``"per_image"``, ``"batched"`` or ``"auto"`` (per image on CPU,
    batched elsewhere); ``nms_prefix``: candidates per image the per-image path examines first.
    """
    if impl not in NMS_IMPLS:
        raise ValueError(f"nms impl must be one of {NMS_IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = "per_image" if cls_logits.device.type == "cpu" else "batched"
    size = (int(image_size[0]), int(image_size[1]))
    probs, boxes = _scores_and_boxes(cls_logits, bbox_regression, anchors, size, box_coder)
    if impl == "per_image":
        limits = Limits(
            score_thresh, topk_candidates, max(size) + 1, nms_thresh, detections_per_img
        )
        return _per_image(probs, boxes, limits, nms_prefix)
    cand = _class_candidates(probs, boxes, score_thresh, topk_candidates)
    return _batched(cand, max(size) + 1, nms_thresh, detections_per_img)


def _scores_and_boxes(
    cls_logits: Tensor,
    bbox_regression: Tensor,
    anchors: Tensor,
    image_size: tuple[int, int],
    box_coder: BoxCoder,
) -> tuple[Tensor, Tensor]:
    """Softmax scores ``(N, A, C)`` and every anchor's decoded, clipped box ``(N, A, 4)``, in fp32
    (torchvision's nms has no bf16 kernel, and fp16 corners are coarse). Boxes depend on the
    anchor alone: decoding every anchor once gives each candidate the same bits whichever path
    and prefix picks it (exp differs in the last bit across layouts)."""
    cls_logits, bbox_regression, anchors = (
        cls_logits.float(),
        bbox_regression.float(),
        anchors.float(),
    )
    boxes = clip_boxes_to_image(box_coder.decode(bbox_regression, anchors), image_size)
    return F.softmax(cls_logits, dim=-1), boxes


def order_keys(scores: Tensor, order: Tensor, score_thresh: float) -> Tensor:
    """int64 keys ordering candidates as both paths do: by score, then by ``order`` (``class *
    A + anchor``, lower first). A score at or below the threshold (or NaN) gets a negative key.
    Non-negative floats order as their bits: the score in the high word, ``order`` in the low."""
    bits = torch.where(scores > score_thresh, scores, -1.0).view(torch.int32)
    return bits.to(torch.int64).mul_(2**32).add_(2**32 - 1 - order)


def candidates(
    cls_logits: Tensor,
    bbox_regression: Tensor,
    anchors: Tensor,
    image_size: tuple[int, int],
    box_coder: BoxCoder,
    score_thresh: float,
    topk_candidates: int,
) -> Candidates:
    """Each image's best ``topk_candidates`` per class (the batched path's input)."""
    probs, boxes = _scores_and_boxes(cls_logits, bbox_regression, anchors, image_size, box_coder)
    return _class_candidates(probs, boxes, score_thresh, topk_candidates)


def _class_candidates(
    probs: Tensor, boxes: Tensor, score_thresh: float, topk_candidates: int
) -> Candidates:
    scores = probs[..., 1:].transpose(1, 2)  # (N, C-1, A)
    classes, num_anchors = scores.shape[1:]
    order = torch.arange(classes * num_anchors, device=scores.device).view(classes, num_anchors)
    # top-k of the keys (unique), not of the scores: ties at a class's k-th score break by anchor
    key = (
        order_keys(scores, order, score_thresh)
        .topk(min(topk_candidates, num_anchors), dim=2)
        .values
    )
    anchor = (2**32 - 1 - key % 2**32) % num_anchors
    return Candidates(scores.gather(2, anchor), anchor, key, boxes)


def _gather(cand: Candidates, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes ``(N, M, 4)``, scores and labels ``(N, M)`` of the candidates at flat positions
    ``pos`` ``(N, M)`` (class-major over ``(C-1, k)``)."""
    anchor = cand.anchor.flatten(1).gather(1, pos)
    boxes = cand.boxes.gather(1, anchor[..., None].expand(*anchor.shape, 4))
    return boxes, cand.scores.flatten(1).gather(1, pos), pos // cand.scores.shape[2] + 1


class Limits(NamedTuple):
    score_thresh: float
    topk_candidates: int
    offset: int  # class-wise NMS: boxes shifted by label * offset
    nms_thresh: float
    detections_per_img: int


def _per_image(probs: Tensor, boxes: Tensor, limits: Limits, prefix: int) -> Detections:
    """torchvision's ``nms`` on each image's ``prefix`` best (score, class, anchor) entries, on
    more when fewer than ``detections_per_img`` of those survive (greedy NMS decides a box from
    the boxes ranked above it alone, so a prefix gives the first survivors exactly)."""
    probs[..., 0] = -1.0  # background: never a candidate (the row max is then the best class's)
    scores = probs[..., 1:]
    best = probs.amax(2).nan_to_num_(-1.0)  # NaN: never a candidate
    first = _prefixes(scores, best, prefix, limits)
    detections = []
    for i in range(len(probs)):
        size = prefix
        key, anchor, label, take = (t[i] for t in first)
        while True:
            anchor, label = anchor[take], label[take] + 1
            cand_boxes, cand_scores = boxes[i, anchor], probs[i, anchor, label]
            keep = _nms_shifted(cand_boxes, cand_scores, label, limits.offset, limits.nms_thresh)
            exhausted = len(key) == 0 or key[-1] < 0 or len(key) == scores[i].numel()
            if len(keep) >= limits.detections_per_img or exhausted:
                break
            size *= 4  # prefix too short
            key, anchor, label, take = (
                t[0] for t in _prefixes(scores[i : i + 1], best[i : i + 1], size, limits)
            )
        keep = keep[: limits.detections_per_img]
        detections.append(
            {"boxes": cand_boxes[keep], "scores": cand_scores[keep], "labels": label[keep]}
        )
    return detections


def _prefixes(
    scores: Tensor, best: Tensor, prefix: int, limits: Limits
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each image's ``prefix`` best entries of ``scores`` ``(n, A, C-1)``, best first: their
    keys (:func:`order_keys`; padded with the lowest int64 where an image has fewer entries),
    anchors, classes - 1, and which are candidates (above the threshold and among their class's
    best ``topk_candidates``, which the prefix holds all better entries of), each ``(n, P)``.

    No per-class top-k over every anchor: the ``prefix``-th best anchor (by ``best``, its best
    class's score) bounds the ``prefix``-th best entry from below, so the entries at or above
    that bound, all in the anchors at or above it, hold the prefix."""
    n, num_anchors, classes = scores.shape
    if prefix < num_anchors and classes:
        bound = best.topk(prefix, dim=1).values[:, -1]
        image, anchor = (best >= bound[:, None]).nonzero().unbind(1)
        row, label = (scores[image, anchor] >= bound[image, None]).nonzero().unbind(1)
        image, anchor = image[row], anchor[row]
    else:
        image, anchor, label = torch.ones_like(scores, dtype=torch.bool).nonzero().unbind(1)
    key = order_keys(
        scores[image, anchor, label], label * num_anchors + anchor, limits.score_thresh
    )
    # one row per image: its entries in the order found, then padding below every key
    counts = torch.bincount(image, minlength=n)
    slot = torch.arange(len(image), device=scores.device) - (counts.cumsum(0) - counts)[image]
    width = int(counts.max()) if len(image) else 0
    keys = key.new_full((n, width), torch.iinfo(torch.int64).min)
    entry = torch.zeros(n, width, dtype=torch.long, device=scores.device)
    keys[image, slot], entry[image, slot] = key, torch.arange(len(image), device=scores.device)
    keys, pos = keys.topk(min(prefix, width), dim=1)
    entry = entry.gather(1, pos)
    anchor, label = anchor[entry], label[entry]
    group = label + classes * torch.arange(n, device=scores.device)[:, None]  # (image, class)
    take = (keys >= 0) & (class_ranks(group.flatten()).view_as(group) < limits.topk_candidates)
    return keys, anchor, label, take


def class_ranks(label: Tensor) -> Tensor:
    """Each entry's rank (0 = first) among the entries of its label, in the given order."""
    group = torch.argsort(label, stable=True)
    ordered = label[group]
    rank = torch.empty_like(label)
    rank[group] = torch.arange(len(label), device=label.device) - torch.searchsorted(
        ordered, ordered
    )
    return rank


def _nms_shifted(
    boxes: Tensor, scores: Tensor, labels: Tensor, offset: int, nms_thresh: float
) -> Tensor:
    return nms(boxes + (labels * offset).to(boxes)[:, None], scores, nms_thresh)


def _batched(
    cand: Candidates, offset: int, nms_thresh: float, detections_per_img: int
) -> Detections:
    """Greedy NMS of the ``P`` best candidates of every (image, class) at once, ``P`` growing (for
    those groups only) while a group's first unexamined candidate outranks its image's
    ``detections_per_img``-th survivor. Syncs: one per round plus the fixed-point checks."""
    batch, classes, k = cand.key.shape
    groups = batch * classes
    key, anchor = cand.key.view(groups, k), cand.anchor.view(groups, k)
    if groups == 0 or k == 0 or detections_per_img <= 0:
        boxes, scores, labels = _gather(cand, cand.key.new_zeros(batch, 0))
        return [{"boxes": boxes[i], "scores": scores[i], "labels": labels[i]} for i in range(batch)]
    device = key.device
    image = torch.arange(groups, device=device) // classes
    shift = ((torch.arange(groups, device=device) % classes + 1) * offset).float()
    survivor = torch.zeros(groups, k, dtype=torch.bool, device=device)
    examined = torch.zeros(groups, dtype=torch.long, device=device)
    columns = torch.arange(k, device=device)
    todo, prefix = torch.arange(groups, device=device), min(FIRST_PREFIX, k)
    while True:
        boxes = cand.boxes[image[todo, None], anchor[todo, :prefix]] + shift[todo, None, None]
        survivor[todo, :prefix] = greedy_nms(boxes, key[todo, :prefix] >= 0, nms_thresh)
        examined.index_fill_(0, todo, prefix)
        best = torch.where(survivor, key, -1).view(batch, classes * k)
        top_key, top_pos = best.topk(min(detections_per_img, classes * k), dim=1)
        cut = (
            top_key[:, -1]
            if top_key.shape[1] == detections_per_img
            else torch.full_like(top_key[:, 0], -1)
        )
        pending = torch.where(columns >= examined[:, None], key, -1).amax(1)
        todo = (pending > cut[image]).nonzero().squeeze(1)  # sync
        if len(todo) == 0:
            break
        prefix = min(prefix * PREFIX_GROWTH, k)  # every group in todo was examined to `prefix`
    counts = (top_key >= 0).sum(1).tolist()
    boxes, scores, labels = _gather(cand, top_pos)
    return [
        {"boxes": boxes[i, :n], "scores": scores[i, :n], "labels": labels[i, :n]}
        for i, n in enumerate(counts)
    ]


def greedy_nms(boxes: Tensor, valid: Tensor, iou_thresh: float) -> Tensor:
    """Greedy NMS of each row of ``(G, P, 4)`` boxes, already in rank order: a ``(G, P)`` keep mask.

    Box ``i`` is kept iff it is ``valid`` and no kept box ranked before it overlaps it by IoU >
    ``iou_thresh``. Ranks make the suppression graph acyclic, so this has one solution, reached by
    iterating from "keep every valid box" until nothing changes (a step resolves at least the
    next box of every row; in practice a few steps resolve all).
    """
    groups, size = valid.shape
    keep = torch.empty_like(valid)
    per_chunk = max(1, MATRIX_BUDGET // max(1, size * size))
    for start in range(0, groups, per_chunk):
        rows = slice(start, start + per_chunk)
        keep[rows] = _fixed_point(suppression(boxes[rows], iou_thresh), valid[rows])
    return keep


def suppression(boxes: Tensor, iou_thresh: float) -> Tensor:
    """``(G, P, P)``: ``[g, j, i]`` is 1 where box ``j`` ranks before ``i`` and IoU > ``iou_thresh``
    (float16 on GPUs, float32 on CPU, for matmul)."""
    groups, size, _ = boxes.shape
    dtype = torch.float32 if boxes.device.type == "cpu" else torch.float16
    out = torch.empty(groups, size, size, dtype=dtype, device=boxes.device)
    # the CPU kernel tests the fp32 IoU > the fp64 threshold: the same as >= the next fp32 up
    bound = torch.tensor(iou_thresh, dtype=torch.float32)
    if bound.item() <= iou_thresh:
        bound = torch.nextafter(bound, torch.tensor(math.inf))
    bound = bound.item()
    before = torch.ones(size, size, dtype=torch.bool, device=boxes.device).triu_(1)
    per_chunk = max(1, IOU_CHUNK // max(1, size * size))
    for start in range(0, groups, per_chunk):
        rows = slice(start, start + per_chunk)
        out[rows] = pairwise_iou(boxes[rows]).ge_(bound).logical_and_(before)
    return out


def pairwise_iou(boxes: Tensor) -> Tensor:
    """``(G, P, P)`` IoUs within each row of ``(G, P, 4)`` xyxy boxes: ``box_iou``'s float ops in
    its order (the same bits, which are also the CPU nms kernel's), without its ``(G, P, P, 2)``
    temporaries (less memory traffic, so faster on CPU)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    w = torch.minimum(x2[:, :, None], x2[:, None, :]).sub_(
        torch.maximum(x1[:, :, None], x1[:, None, :])
    )
    h = torch.minimum(y2[:, :, None], y2[:, None, :]).sub_(
        torch.maximum(y1[:, :, None], y1[:, None, :])
    )
    inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
    return inter.div_((area[:, :, None] + area[:, None, :]).sub_(inter))


def _fixed_point(suppresses: Tensor, valid: Tensor) -> Tensor:
    keep, steps = valid, 2
    while True:
        for _ in range(steps):
            prev = keep
            hits = torch.bmm(keep[:, None].to(suppresses.dtype), suppresses)[:, 0]
            keep = valid & (hits == 0)
        if torch.equal(keep, prev):  # sync
            return keep
        steps = min(2 * steps, 16)
