"""The batched (device-native) SSD postprocess gives the per-image path's detections bit for bit."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.ops import batched_nms, nms

import densemnv3.models.heads.postprocess as pp
from densemnv3.errors import ConfigError
from densemnv3.models import ssdlite320_mobilenet_v3_small
from densemnv3.models.heads.anchors import BoxCoder, DefaultBoxes

SIZE = (320, 320)
PARAMS = {"nms_thresh": 0.55, "detections_per_img": 300, "topk_candidates": 300}


@pytest.fixture(scope="module")
def anchors():
    grids = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    boxes = DefaultBoxes([[2, 3]] * 6)
    return boxes(grids, SIZE, device=torch.device("cpu"), dtype=torch.float32)  # (3234, 4)


def random_outputs(batch, classes, num_anchors, seed, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    cls_logits = torch.randn(batch, num_anchors, classes, generator=g) * spread
    return cls_logits, torch.randn(batch, num_anchors, 4, generator=g) * 0.5


def run(cls_logits, bbox_regression, anchors, impl, **params):
    params = {**PARAMS, "score_thresh": 0.01, **params}
    return pp.ssd_postprocess(
        cls_logits, bbox_regression, anchors, SIZE, BoxCoder(), impl=impl, **params
    )


def assert_identical(expected, found):
    assert len(found) == len(expected)
    for i, (a, b) in enumerate(zip(expected, found)):
        assert set(a) == set(b) == {"boxes", "scores", "labels"}
        for name in a:
            assert a[name].dtype == b[name].dtype, (i, name)
            assert torch.equal(a[name], b[name]), (i, name)


def both(*args, **params):
    expected = run(*args, "per_image", **params)
    found = run(*args, "batched", **params)
    assert_identical(expected, found)
    return expected


@pytest.mark.parametrize("score_thresh", [0.001, 0.01, 0.5])
@pytest.mark.parametrize("seed,batch,spread", [(0, 1, 3.0), (1, 3, 1.0), (2, 4, 5.0)])
def test_batched_equals_per_image(anchors, score_thresh, seed, batch, spread):
    cls_logits, bbox_regression = random_outputs(batch, 91, len(anchors), seed, spread)
    cls_logits[0, :, 0] = 50.0  # the first image: background everywhere, no candidate
    out = both(cls_logits, bbox_regression, anchors, score_thresh=score_thresh)
    assert len(out[0]["scores"]) == 0 and out[0]["boxes"].shape == (0, 4)
    counts = [len(d["scores"]) for d in out[1:]]
    if score_thresh < 0.5:
        assert all(n == 300 for n in counts)
    for det in out[1:]:
        assert torch.all(det["scores"][:-1] >= det["scores"][1:]) and torch.all(det["labels"] >= 1)
        assert torch.all(det["scores"] > score_thresh)
    if spread == 5.0:
        assert all(n > 0 for n in counts)  # peaked scores: some pass even 0.5


def test_equals_the_previous_postprocess_on_a_hand_checked_case():
    """Two classes, boxes by hand: class-wise suppression, order by score, and the cap."""
    anchors = torch.tensor(
        [
            [0.0, 0.0, 100.0, 100.0],
            [5.0, 5.0, 105.0, 105.0],
            [200.0, 200.0, 300.0, 300.0],
            [0.0, 0.0, 60.0, 60.0],
        ]
    )
    probs = torch.tensor([[[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.3, 0.1, 0.6], [0.1, 0.15, 0.75]]])
    cls_logits, bbox_regression = probs.log(), torch.zeros(1, 4, 4)
    (det,) = both(cls_logits, bbox_regression, anchors, score_thresh=0.05)
    # class 1: anchor 0 (0.8) suppresses anchor 1 (0.7, IoU 0.82); 2 and 3 (0.1, 0.15) survive
    # class 2: anchors 3 (0.75), 2 (0.6), 0 (0.1, IoU 0.36 with 3) all survive
    torch.testing.assert_close(det["scores"], torch.tensor([0.8, 0.75, 0.6, 0.15, 0.1, 0.1]))
    assert det["labels"].tolist() == [1, 2, 2, 1, 1, 2]
    torch.testing.assert_close(det["boxes"][:3], anchors[[0, 3, 2]])
    (capped,) = both(cls_logits, bbox_regression, anchors, score_thresh=0.05, detections_per_img=2)
    assert capped["labels"].tolist() == [1, 2]


def clustered(batch, classes, seed, count=400):
    """Boxes piled on a few spots, scores for few classes: long suppression chains, few survive."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(3, 2, generator=g) * 200 + 60
    centre = (
        centres[torch.randint(0, 3, (count,), generator=g)] + torch.randn(count, 2, generator=g) * 6
    )
    half = 25 + torch.rand(count, 2, generator=g) * 10
    anchors = torch.cat((centre - half, centre + half), 1)
    cls_logits = torch.randn(batch, count, classes, generator=g) * 2
    cls_logits[..., 0] -= 2
    return cls_logits, torch.randn(batch, count, 4, generator=g) * 0.05, anchors


@pytest.mark.parametrize("seed", [0, 1])
def test_many_overlapping_boxes_grow_the_prefix(seed, monkeypatch):
    cls_logits, bbox_regression, anchors = clustered(3, 4, seed)
    rounds = []
    greedy_nms = pp.greedy_nms
    monkeypatch.setattr(
        pp, "greedy_nms", lambda b, *a: rounds.append(b.shape[:2]) or greedy_nms(b, *a)
    )
    out = both(cls_logits, bbox_regression, anchors, score_thresh=0.001)
    assert all(
        0 < len(d["scores"]) < 300 for d in out
    )  # fewer survivors than the cap: all examined
    assert [p for _, p in rounds] == [32, 128, 300]
    assert rounds[0][0] == 3 * 3 and 0 < rounds[1][0] <= 9


def test_prefix_growth_and_chunking_do_not_change_detections(anchors, monkeypatch):
    cls_logits, bbox_regression = random_outputs(3, 21, len(anchors), 7)
    expected = run(cls_logits, bbox_regression, anchors, "per_image", score_thresh=0.001)
    for first, growth, budget, chunk in [
        (1, 2, 2**28, 2**23),
        (5, 3, 5000, 700),
        (300, 4, 2**28, 2**23),
    ]:
        monkeypatch.setattr(pp, "FIRST_PREFIX", first)
        monkeypatch.setattr(pp, "PREFIX_GROWTH", growth)
        monkeypatch.setattr(pp, "MATRIX_BUDGET", budget)
        monkeypatch.setattr(pp, "IOU_CHUNK", chunk)
        assert_identical(
            expected, run(cls_logits, bbox_regression, anchors, "batched", score_thresh=0.001)
        )
    for nms_prefix in (1, 8, 10**6):  # the per-image path's prefix (grown when too short)
        found = run(
            cls_logits,
            bbox_regression,
            anchors,
            "per_image",
            score_thresh=0.001,
            nms_prefix=nms_prefix,
        )
        assert_identical(expected, found)


def test_ties_break_as_torchvisions_stable_nms():
    """Equal scores: the lower class's candidate goes first, then the lower per-class rank's."""
    anchors = torch.tensor([[10.0 * i, 0.0, 10.0 * i + 60, 60.0] for i in range(12)])
    cls_logits = torch.zeros(2, 12, 4)
    cls_logits[..., 0] = -1.0  # every class of every anchor: the same score
    cls_logits[1, :, 2] = 0.5  # image 1: class 2 ahead of the (tied) classes 1 and 3
    bbox_regression = torch.zeros(2, 12, 4)
    out = both(cls_logits, bbox_regression, anchors, score_thresh=0.01)
    cand = pp.candidates(cls_logits, bbox_regression, anchors, SIZE, BoxCoder(), 0.01, 300)
    for i, det in enumerate(out):
        # torchvision: stable nms over candidates listed class by class, each in top-k order
        boxes = cand.boxes[i, cand.anchor[i].flatten()]
        scores, labels = cand.scores[i].flatten(), torch.arange(3).repeat_interleave(12) + 1
        keep = batched_nms(boxes, scores, labels, 0.55)
        assert det["labels"].tolist() == labels[keep].tolist()
        assert torch.equal(det["boxes"], boxes[keep]) and torch.equal(det["scores"], scores[keep])
    assert out[0]["labels"][:3].tolist() == [1, 1, 1] and out[1]["labels"][:3].tolist() == [2, 2, 2]


@pytest.mark.parametrize("nms_prefix", [4, 512])
def test_ties_at_a_class_cap_keep_the_lowest_anchors(nms_prefix):
    """Equal scores past ``topk_candidates``: both paths keep the class's lowest anchors, whether
    the per-image path finds them in a prefix shorter than the class's candidates or not."""
    anchors = torch.tensor([[30.0 * i, 0.0, 30.0 * i + 20, 20.0] for i in range(10)])  # disjoint
    cls_logits = torch.zeros(1, 10, 3)
    cls_logits[0, :, 2] = -3.0  # class 2 below class 1 everywhere, all its scores equal too
    out = both(
        cls_logits,
        torch.zeros(1, 10, 4),
        anchors,
        score_thresh=0.01,
        topk_candidates=4,
        nms_prefix=nms_prefix,
    )
    (det,) = out
    assert det["labels"].tolist() == [1] * 4 + [2] * 4
    torch.testing.assert_close(det["boxes"], anchors[[0, 1, 2, 3] * 2])


def test_nan_scores_are_never_candidates(anchors):
    cls_logits, bbox_regression = random_outputs(2, 21, len(anchors), 3)
    cls_logits[0, 100:3000] = float(
        "nan"
    )  # most anchors of image 0: fewer valid ones than the prefix
    cls_logits[1, ::2] = float("nan")
    for prefix in (64, 512):
        out = both(cls_logits, bbox_regression, anchors, score_thresh=0.001, nms_prefix=prefix)
        assert all(torch.isfinite(d["scores"]).all() and len(d["scores"]) > 0 for d in out)
    kept = torch.cat((torch.arange(100), torch.arange(3000, len(anchors))))
    clean = run(
        cls_logits[:1, kept],
        bbox_regression[:1, kept],
        anchors[kept],
        "per_image",
        score_thresh=0.001,
    )
    assert_identical(clean, out[:1])  # no box of a NaN anchor, and the others as without them


def test_greedy_nms_equals_torchvision_nms_with_ties():
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(6, 200, 2, generator=g) * 100
    boxes = torch.cat((corner, corner + 5 + torch.rand(6, 200, 2, generator=g) * 40), -1)
    scores = torch.randint(0, 5, (6, 200), generator=g).float()  # many ties
    order = scores.sort(dim=1, descending=True, stable=True).indices
    ranked = boxes.gather(1, order[..., None].expand(-1, -1, 4))
    valid = torch.ones(6, 200, dtype=torch.bool)
    valid[2, 150:] = False
    valid[3] = False
    keep = pp.greedy_nms(ranked, valid, 0.5)
    for i in range(6):
        n = int(valid[i].sum())
        expected = nms(ranked[i, :n], scores[i].gather(0, order[i])[:n], 0.5)
        assert keep[i].nonzero().flatten().tolist() == expected.tolist()
    assert 1 < keep[0].sum() < 200 and keep[3].sum() == 0


def test_suppression_uses_the_cpu_kernels_strict_threshold():
    """IoU exactly at the threshold does not suppress; the next float up does."""
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 20.0]]])  # IoU 0.5 exactly
    assert pp.suppression(boxes, 0.5)[0, 0, 1] == 0
    assert nms(boxes[0], torch.tensor([1.0, 0.5]), 0.5).tolist() == [0, 1]
    assert (
        pp.suppression(boxes, 0.4999)[0, 0, 1] == 1 and pp.suppression(boxes, 0.4999)[0, 1, 0] == 0
    )


class OpCounter(TorchDispatchMode):
    """Counts the operators (views aside) a call runs."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def count_ops(fn) -> int:
    with OpCounter() as counter:
        fn()
    return counter.count


def test_batched_path_runs_no_per_image_or_per_class_loop(anchors):
    """Its operator count does not depend on the number of images or classes."""
    cls_logits, bbox_regression = random_outputs(2, 6, len(anchors), 3)

    def ops(batch_repeat, empty_classes, impl):
        logits = torch.cat((cls_logits, torch.full((2, len(anchors), empty_classes), -30.0)), -1)
        logits, regression = (
            logits.repeat(batch_repeat, 1, 1),
            bbox_regression.repeat(batch_repeat, 1, 1),
        )
        return count_ops(lambda: run(logits, regression, anchors, impl, score_thresh=0.001))

    base = ops(1, 0, "batched")
    assert ops(8, 0, "batched") == base and ops(1, 40, "batched") == base
    assert ops(8, 0, "per_image") > ops(1, 0, "per_image")  # the counter sees per-image work


def test_model_option_selects_the_path(monkeypatch):
    model = ssdlite320_mobilenet_v3_small(num_classes=5, width_mult=0.5, score_thresh=0.01).eval()
    assert model.nms_impl == "auto"
    images = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    calls = []
    for name in ("_per_image", "_batched"):
        real = getattr(pp, name)
        monkeypatch.setattr(
            pp, name, lambda *a, real=real, name=name: calls.append(name) or real(*a)
        )
    with torch.no_grad():
        auto = model(images)
        model.nms_impl = "batched"
        batched = model(images)
        raw = model.predict_raw(images)
        overridden = model.postprocess(*raw, images.shape[-2:], nms_impl="per_image")
    assert calls == ["_per_image", "_batched", "_per_image"]  # auto on CPU: per image
    assert_identical(auto, batched)
    assert_identical(auto, overridden)
    assert 0 < len(auto[0]["scores"]) <= 300
    with pytest.raises(ConfigError, match="nms_impl must be one of"):
        ssdlite320_mobilenet_v3_small(num_classes=5, nms_impl="fast")
    with pytest.raises(ValueError, match="nms impl must be one of"):
        model.postprocess(*raw, images.shape[-2:], nms_impl="fast")


def test_degenerate_sizes(anchors):
    anchors = anchors[:400]
    cls_logits, bbox_regression = random_outputs(2, 3, len(anchors), 5)
    both(cls_logits, bbox_regression, anchors, topk_candidates=10**6, detections_per_img=5000)
    both(cls_logits, bbox_regression, anchors, topk_candidates=3, detections_per_img=1)
    for out in (
        run(cls_logits[:, :, :1], bbox_regression, anchors, impl)
        for impl in ("per_image", "batched")
    ):
        assert [len(d["scores"]) for d in out] == [0, 0]  # background only
    assert run(cls_logits[:0], bbox_regression[:0], anchors, "batched") == []
