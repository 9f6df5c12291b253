"""Test-time segmentation: whole and sliding-window scores, scales and flips as mmsegmentation."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densemnv3.config import Config, DataConfig, EvalConfig, ModelConfig, TTAConfig
from densemnv3.errors import ConfigError
from densemnv3.inference import Predictor
from densemnv3.inference.eval_modes import (
    describe,
    is_plain,
    parse_tta,
    passes,
    seg_scores,
    slide_geometry,
    slide_windows,
)
from densemnv3.models import lraspp_mobilenet_v3_small, multitask_mobilenet_v3_small
from tests.conftest import randomize_
from tests.inference.test_predictor import calibrate_bn_

SIX_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def conv_model(kernel: int, classes: int = 5, seed: int = 0) -> torch.nn.Conv2d:
    torch.manual_seed(seed)
    return torch.nn.Conv2d(3, classes, kernel, padding=kernel // 2).eval()


def resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def tta(scales=(1.0,), flip=False, **eval_options) -> EvalConfig:
    return EvalConfig(tta=TTAConfig(scales=scales, flip=flip), **eval_options)


def mmseg_windows(h_img, w_img, crop, stride):
    """The windows of mmsegmentation's ``EncoderDecoder.slide_inference``, as written there."""
    (h_crop, w_crop), (h_stride, w_stride) = crop, stride
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows


@torch.no_grad()
def test_whole_without_tta_is_the_resized_logits():
    model, x = conv_model(3), torch.randn(2, 3, 12, 20)
    assert torch.equal(seg_scores(model, x, (24, 40), EvalConfig()), resize(model(x), (24, 40)))
    assert torch.equal(seg_scores(model, x, (12, 20), EvalConfig()), model(x))  # no resize at size
    assert is_plain(EvalConfig()) and not is_plain(tta(flip=True))


@torch.no_grad()
def test_flip_averages_the_mirrored_probabilities():
    x = torch.randn(2, 3, 12, 20)
    pointwise = conv_model(1)  # mirror-equivariant: the flipped pass mirrors back to the same
    assert torch.allclose(
        seg_scores(pointwise, x, (12, 20), tta(flip=True)), pointwise(x).softmax(1), atol=1e-6
    )
    model = conv_model(3)
    manual = (model(x).softmax(1) + model(x.flip(-1)).softmax(1).flip(-1)) / 2
    scores = seg_scores(model, x, (12, 20), tta(flip=True))
    assert torch.allclose(scores, manual, atol=1e-6)
    assert not torch.allclose(scores, model(x).softmax(1), atol=1e-3)  # the flip did something
    # at another size: each pass resized to it, then mirrored back
    manual = (
        resize(model(x), (15, 33)).softmax(1)
        + resize(model(x.flip(-1)), (15, 33)).flip(-1).softmax(1)
    ) / 2
    assert torch.allclose(seg_scores(model, x, (15, 33), tta(flip=True)), manual, atol=1e-6)


@torch.no_grad()
def test_the_flipped_copy_runs_in_the_same_forward():
    model, calls = conv_model(3), []

    def counted(images):
        calls.append(images.shape[0])
        return model(images)

    x = torch.randn(2, 3, 12, 20)
    seg_scores(counted, x, (12, 20), tta(scales=(0.5, 1.0, 1.5), flip=True))
    assert calls == [4, 4, 4]
    assert passes(tta(scales=(0.5, 1.0, 1.5), flip=True)) == 6 and passes(EvalConfig()) == 1


@torch.no_grad()
def test_scales_average_the_probabilities_of_each_scale():
    model, x, size = conv_model(3), torch.randn(1, 3, 16, 24), (16, 24)
    sizes = {
        0.5: (8, 12),
        0.75: (12, 18),
        1.0: (16, 24),
        1.25: (20, 30),
        1.5: (24, 36),
        1.75: (28, 42),
    }
    manual = torch.stack(
        [resize(model(x if s == 1.0 else resize(x, sizes[s])), size).softmax(1) for s in SIX_SCALES]
    ).mean(0)
    assert torch.allclose(seg_scores(model, x, size, tta(scales=SIX_SCALES)), manual, atol=1e-6)
    both = [resize(model(resize(x, sizes[s])), size) for s in (0.5, 1.5)]
    both += [resize(model(resize(x.flip(-1), sizes[s])), size).flip(-1) for s in (0.5, 1.5)]
    manual = torch.stack([logits.softmax(1) for logits in both]).mean(0)
    assert torch.allclose(
        seg_scores(model, x, size, tta(scales=(0.5, 1.5), flip=True)), manual, atol=1e-6
    )


@pytest.mark.parametrize(
    ("size", "crop", "stride"),
    [
        ((1024, 2048), (512, 1024), (341, 683)),
        ((1024, 2048), (769, 769), (513, 513)),
        ((100, 37), (40, 40), (13, 40)),
        ((30, 30), (40, 50), (20, 20)),
        ((64, 96), (64, 32), (64, 32)),
    ],
)
def test_windows_are_mmsegs_and_cover_every_pixel(size, crop, stride):
    windows = slide_windows(*size, crop, stride)
    assert windows == mmseg_windows(*size, crop, stride)
    count = torch.zeros(size)
    for y1, y2, x1, x2 in windows:
        assert (y2 - y1, x2 - x1) == (min(crop[0], size[0]), min(crop[1], size[1]))
        count[y1:y2, x1:x2] += 1
    assert count.min() >= 1


def test_slide_geometry_defaults_to_two_thirds_of_the_crop():
    assert slide_windows(1024, 2048, (512, 1024), (341, 683)) == [
        (y1, y1 + 512, x1, x1 + 1024) for y1 in (0, 341, 512) for x1 in (0, 683, 1024)
    ]
    assert slide_geometry(EvalConfig(mode="slide", crop=(512, 1024))) == ((512, 1024), (341, 683))
    assert slide_geometry(EvalConfig(mode="slide"), crop=(769, 769)) == ((769, 769), (513, 513))
    assert slide_geometry(EvalConfig(stride=(10, 10)), crop=(20, 20)) == ((20, 20), (10, 10))
    with pytest.raises(ValueError, match="crop"):
        slide_geometry(EvalConfig(mode="slide"))
    for bad, key in [
        (dict(crop=(0, 8)), "eval.crop"),
        (dict(crop=(8, 8), stride=(-1, 4)), "eval.stride"),
        (dict(crop=(8, 8), stride=(9, 4)), "eval.stride"),
    ]:
        with pytest.raises(ConfigError, match=key):
            slide_geometry(EvalConfig(mode="slide", **bad))


@torch.no_grad()
def test_slide_over_an_image_within_the_crop_is_whole():
    model, x = conv_model(3), torch.randn(2, 3, 12, 20)
    whole = seg_scores(model, x, (24, 40), EvalConfig())
    assert torch.equal(
        seg_scores(model, x, (24, 40), EvalConfig(mode="slide", crop=(12, 20))), whole
    )
    assert torch.equal(
        seg_scores(model, x, (24, 40), EvalConfig(mode="slide"), crop=(16, 32)), whole
    )


@torch.no_grad()
def test_overlapping_windows_average_to_the_whole_logits_of_a_pointwise_model():
    model, x = conv_model(1), torch.randn(1, 3, 40, 52)
    calls = []
    counted = lambda images: calls.append(tuple(images.shape[-2:])) or model(images)  # noqa: E731
    slide = seg_scores(
        counted, x, (40, 52), EvalConfig(mode="slide", crop=(16, 24), stride=(7, 10))
    )
    assert calls == [(16, 24)] * len(slide_windows(40, 52, (16, 24), (7, 10))) and len(calls) == 20
    assert torch.allclose(slide, model(x), atol=1e-6)
    # windows at a lower resolution than the window (stride-8 logits) are resized to it first
    low = lambda images: model(images)[..., ::2, ::2]  # noqa: E731
    expected = resize(low(x[..., :16, :24]), (16, 24))[..., :7, :10]
    slide = seg_scores(low, x, (40, 52), EvalConfig(mode="slide", crop=(16, 24), stride=(7, 10)))
    assert torch.allclose(slide[..., :7, :10], expected, atol=1e-6)
    # a 3x3 model differs at the windows' borders, and averages there
    model = conv_model(3)
    slide = seg_scores(model, x, (40, 52), EvalConfig(mode="slide", crop=(40, 30), stride=(40, 22)))
    left, right = model(x[..., :30]), model(x[..., 22:])
    assert torch.allclose(slide[..., :22], left[..., :22], atol=1e-6)
    assert torch.allclose(slide[..., 22:30], (left[..., 22:] + right[..., :8]) / 2, atol=1e-6)
    assert torch.allclose(slide[..., 30:], right[..., 8:], atol=1e-6)


@torch.no_grad()
def test_slide_with_flip_slides_each_pass():
    model, x = conv_model(3), torch.randn(1, 3, 20, 30)
    cfg = EvalConfig(mode="slide", crop=(20, 18), stride=(20, 12))
    plain = lambda images: seg_scores(model, images, (20, 30), cfg)  # noqa: E731
    manual = (plain(x).softmax(1) + plain(x.flip(-1)).softmax(1).flip(-1)) / 2
    assert torch.allclose(
        seg_scores(
            model, x, (20, 30), tta(flip=True, mode="slide", crop=(20, 18), stride=(20, 12))
        ),
        manual,
        atol=1e-6,
    )


def test_tta_is_checked():
    x = torch.randn(1, 3, 8, 8)
    for scales in [(), (0.0,), (1.0, -0.5), (float("nan"),)]:
        with pytest.raises(ConfigError, match="eval.tta.scales"):
            seg_scores(conv_model(1), x, (8, 8), tta(scales=scales))


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["scales=0.5,0.75,1.0,1.25,1.5,1.75", "flip"], TTAConfig(scales=SIX_SCALES, flip=True)),
        (["flip"], TTAConfig(scales=(1.0,), flip=True)),
        (["scales=1.0,1.5"], TTAConfig(scales=(1.0, 1.5))),
        (["off"], TTAConfig()),
    ],
)
def test_parse_tta(words, expected):
    assert parse_tta(words) == expected


@pytest.mark.parametrize(
    "words", [["scales=a"], ["scales=0"], ["scales="], ["foo"], ["off", "flip"], []]
)
def test_parse_tta_rejects(words):
    with pytest.raises(ConfigError, match="scales=S") as error:
        parse_tta(words)
    assert "\n" not in str(error.value)


def test_parse_tta_suggests_the_word():
    with pytest.raises(ConfigError, match="did you mean 'flip'"):
        parse_tta(["flp"])


def test_describe():
    assert describe(EvalConfig()) == "whole"
    assert describe(tta(flip=True)) == "whole, flip"
    assert describe(tta(scales=SIX_SCALES, flip=True)) == "whole, 6 scales 0.5-1.75 + flip"
    assert describe(tta(scales=(1.5,))) == "whole, scale 1.5"
    assert (
        describe(tta(flip=True, mode="slide"), (512, 1024)) == "slide 512x1024 every 341x683, flip"
    )
    assert (
        describe(EvalConfig(mode="slide", crop=(512, 512), stride=(256, 256)))
        == "slide 512x512 every 256x256"
    )


@pytest.fixture(scope="module")
def lraspp():
    torch.manual_seed(0)
    model = lraspp_mobilenet_v3_small(num_classes=19)
    return calibrate_bn_(model, model, torch.rand(2, 3, 48, 80) * 4 - 2)


@torch.no_grad()
def test_a_real_lraspp(lraspp):
    x = torch.randn(1, 3, 64, 128)
    whole = seg_scores(lraspp, x, (64, 128), EvalConfig())
    assert torch.equal(whole, lraspp(x))
    assert torch.equal(
        seg_scores(lraspp, x, (64, 128), EvalConfig(mode="slide", crop=(64, 128))), whole
    )
    flip = seg_scores(lraspp, x, (64, 128), tta(flip=True))
    assert flip.shape == (1, 19, 64, 128) and torch.allclose(
        flip.sum(1), torch.ones(1, 64, 128), atol=1e-5
    )


@torch.no_grad()
def test_predictor_with_flip(lraspp):
    cfg = Config(
        task="segmentation",
        model=ModelConfig(name="lraspp_mobilenet_v3_small", num_classes=19),
        data=DataConfig(),
    )
    predictor = Predictor(copy.deepcopy(lraspp), cfg, device="cpu", test_time=tta(flip=True))
    frame = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    labels = predictor(frame)
    assert labels.shape == (48, 80) and labels.dtype == np.uint8
    x = predictor.preprocess(torch.from_numpy(frame[None]))
    net = predictor.model  # its BatchNorm folded, as the predictor runs it
    manual = (net(x).softmax(1) + net(x.flip(-1)).softmax(1).flip(-1)) / 2
    assert np.array_equal(labels, manual.argmax(1)[0].numpy()) and len(np.unique(labels)) > 1
    # a plain EvalConfig keeps the one-pass path, whose labels the flip changes somewhere
    plain = Predictor(copy.deepcopy(lraspp), cfg, device="cpu", test_time=EvalConfig())
    assert plain.test_time is None and (plain(frame) != labels).any()
    # a multi-task model's segmentation gets the same flip as its LR-ASPP view's
    model = randomize_(
        multitask_mobilenet_v3_small(num_classes=19, det_num_classes=9), seed=3
    ).eval()
    both = Predictor(
        model,
        Config(task="multitask", model=ModelConfig(name="multitask_mobilenet_v3_small")),
        device="cpu",
        test_time=tta(flip=True),
    )
    seg = Predictor(
        model.single_task_view("segmentation"),
        Config(task="segmentation"),
        device="cpu",
        test_time=tta(flip=True),
    )
    assert np.array_equal(both(frame)["segmentation"], seg(frame))
