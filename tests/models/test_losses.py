"""The segmentation losses: OHEM keeps exactly the hard pixels (or the ``min_kept`` hardest), never
an ignored one, and the config picks the loss or names the bad key."""

import pytest
import torch
import torch.nn.functional as F

from densemnv3.config import LossConfig
from densemnv3.errors import ConfigError
from densemnv3.models.losses import cross_entropy_2d, ohem_cross_entropy, segmentation_loss


def _batch(seed=0, n=2, h=8, w=12, classes=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, h, w, generator=g) * 3
    target = torch.randint(0, classes, (n, h, w), generator=g)
    target[0, :2] = 255
    return logits, target


def _pixel_nll(logits, target):
    return F.cross_entropy(logits, target, ignore_index=255, reduction="none")


def test_ohem_averages_the_pixels_below_the_threshold():
    logits, target = _batch()
    nll, valid = _pixel_nll(logits, target), target != 255
    hard = valid & (nll.neg().exp() < 0.7)
    assert 0 < hard.sum() < valid.sum()  # the batch has easy pixels too
    got = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=0)
    torch.testing.assert_close(got, nll[hard].mean())


def test_ohem_keeps_the_min_kept_hardest_pixels_when_fewer_are_hard():
    logits, target = _batch(seed=1)
    nll, valid = _pixel_nll(logits, target), target != 255
    assert (valid & (nll.neg().exp() < 0.001)).sum() < 40 < valid.sum()
    got = ohem_cross_entropy(logits, target, thresh=0.001, min_kept=40)
    torch.testing.assert_close(got, nll[valid].sort(descending=True).values[:40].mean())


def test_ohem_never_counts_ignored_pixels():
    logits, target = _batch(seed=2)
    expected = F.cross_entropy(logits, target, ignore_index=255)  # every valid pixel
    got = ohem_cross_entropy(logits, target, thresh=0.01, min_kept=10**6)
    torch.testing.assert_close(got, expected)


def test_ohem_at_threshold_one_is_plain_cross_entropy_and_only_kept_pixels_get_gradients():
    logits, target = _batch(seed=3)
    torch.testing.assert_close(
        ohem_cross_entropy(logits, target, thresh=1.0, min_kept=0), cross_entropy_2d(logits, target)
    )
    logits.requires_grad_(True)
    ohem_cross_entropy(logits, target, thresh=0.7, min_kept=0).backward()
    nll = _pixel_nll(logits.detach(), target)
    kept = (target != 255) & (nll.neg().exp() < 0.7)
    has_grad = logits.grad.abs().sum(1) > 0
    assert torch.equal(has_grad, kept)


def test_the_config_picks_the_loss_and_names_a_bad_key():
    logits, target = _batch(seed=4)
    assert segmentation_loss(LossConfig()) is cross_entropy_2d
    loss = segmentation_loss(LossConfig(ohem_thresh=0.7, ohem_min_kept=16))
    torch.testing.assert_close(
        loss(logits, target), ohem_cross_entropy(logits, target, thresh=0.7, min_kept=16)
    )
    with pytest.raises(
        ConfigError, match=r"'loss\.ohem_thresh': expected a probability in \(0, 1\]"
    ):
        segmentation_loss(LossConfig(ohem_thresh=1.5))
    with pytest.raises(ConfigError, match=r"'loss\.ohem_min_kept': expected a pixel count >= 0"):
        segmentation_loss(LossConfig(ohem_thresh=0.7, ohem_min_kept=-1))


def test_ohem_in_deterministic_cuda_mode_gives_the_same_loss(monkeypatch):
    from densemnv3.models import losses

    logits, target = _batch(seed=5)
    fast = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=50)
    monkeypatch.setattr(losses, "deterministic_cuda", lambda x: True)
    torch.testing.assert_close(ohem_cross_entropy(logits, target, thresh=0.7, min_kept=50), fast)
