"""upsampled_labels: argmax of the bilinearly upsampled scores, from the small scores."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import densemnv3.inference.upsample as module
from densemnv3.inference.upsample import upsampled_labels


def smooth_scores(n, classes, h, w, seed=0):
    """Scores with regions, as a network's: noise upsampled from a coarse grid, plus noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, classes, max(h // 16, 2), max(w // 16, 2), generator=g) * 4
    return F.interpolate(coarse, size=(h, w), mode="bilinear") + 0.1 * torch.randn(
        n, classes, h, w, generator=g
    )


@pytest.mark.parametrize(
    "low,size",
    [
        ((64, 128), (512, 1024)),
        ((45, 80), (720, 1280)),
        ((37, 61), (300, 500)),
        ((16, 16), (16, 16)),
        ((90, 160), (720, 1280)),
    ],
)
@pytest.mark.parametrize("full_above", [1.0, 0.0], ids=["boundaries", "full"])
def test_same_labels_as_argmax_of_the_upsampled_scores(low, size, full_above, monkeypatch):
    monkeypatch.setattr(module, "FULL_ABOVE", full_above)  # each route, whatever the boundaries
    logits = smooth_scores(2, 19, *low)
    expected = (
        F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1).numpy()
    )
    got = upsampled_labels(logits, size)
    assert got.shape == (2, *size) and got.dtype == np.uint8
    differ = got != expected
    # rounding may order two (nearly) tied classes either way, nothing else
    assert differ.mean() < 1e-4, differ.mean()
    if differ.any():
        up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).permute(
            0, 2, 3, 1
        )[torch.from_numpy(differ)]
        top2 = up.topk(2, dim=1).values
        assert float((top2[:, 0] - top2[:, 1]).max()) < 1e-4


def test_cells_of_many_candidate_classes_keep_every_winner(monkeypatch):
    """Noise: cells where up to all 19 classes can win, each group of candidate counts computed."""
    monkeypatch.setattr(module, "FULL_ABOVE", 1.0)
    logits = torch.randn(
        1, 19, 30, 40, generator=torch.Generator().manual_seed(1)
    ) * torch.linspace(0.05, 4, 40)
    expected = (
        F.interpolate(logits, size=(240, 333), mode="bilinear", align_corners=False)
        .argmax(1)
        .numpy()
    )
    assert np.array_equal(upsampled_labels(logits, (240, 333)), expected)
    corners = [logits[0, :, r : r + 2, c : c + 2].flatten(1) for r in range(29) for c in range(39)]
    counts = [int((v.max(1).values >= v.min(1).values.max()).sum()) for v in corners]
    assert (
        min(counts) <= 3 and max(counts) > 12
    )  # the premise: from a few candidates to most classes


def _full_size_label_maps(monkeypatch) -> list:
    """The shapes label_map is called with, from now on."""
    shapes, plain = [], module.label_map
    monkeypatch.setattr(
        module, "label_map", lambda x, **kw: shapes.append(tuple(x.shape)) or plain(x, **kw)
    )
    return shapes


def test_dense_boundaries_take_the_full_upsample(monkeypatch):
    logits = 4 * torch.randn(
        1, 19, 30, 40, generator=torch.Generator().manual_seed(0)
    )  # nearly every cell a boundary
    shapes = _full_size_label_maps(monkeypatch)
    got = upsampled_labels(logits, (240, 320))
    assert shapes == [
        (1, 19, 30, 40),
        (1, 19, 240, 320),
    ]  # the scores' labels (for the share), then the full
    expected = (
        F.interpolate(logits, size=(240, 320), mode="bilinear", align_corners=False)
        .argmax(1)
        .numpy()
    )
    assert np.array_equal(got, expected)


def test_most_pixels_take_the_shortcut(monkeypatch):
    """A region map: only the boundary cells are interpolated (the speed of the function)."""
    coarse = 4 * torch.randn(1, 19, 3, 6, generator=torch.Generator().manual_seed(0))
    logits = F.interpolate(coarse, size=(64, 128), mode="bilinear")  # regions, without noise
    low = logits.argmax(1)[0].numpy()
    edge = np.pad(low, ((0, 1), (0, 1)), mode="edge")
    agree = (
        (edge[:-1, :-1] == edge[1:, :-1])
        & (edge[:-1, :-1] == edge[:-1, 1:])
        & (edge[:-1, :-1] == edge[1:, 1:])
    )
    assert (
        1 - module.FULL_ABOVE < agree.mean() < 1
    )  # the premise: most 2x2 neighbourhoods share a class
    shapes = _full_size_label_maps(monkeypatch)
    assert module.upsampled_labels(logits, (512, 1024)).shape == (1, 512, 1024)
    assert shapes == [(1, 19, 64, 128)]  # only the scores' own labels: no full-size scores


def test_other_tensors_take_the_plain_route():
    logits = smooth_scores(1, 5, 32, 32)
    size = (16, 24)  # smaller: no shortcut
    expected = (
        F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1).numpy()
    )
    assert np.array_equal(upsampled_labels(logits, size), expected)
    half = logits.to(torch.bfloat16)
    assert upsampled_labels(half, (64, 64)).shape == (1, 64, 64)
