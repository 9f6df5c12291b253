"""CUDA paths: graphs, compile, fp16, batched NMS, the Predictor's CUDA defaults, and AMP training
that is bit-identical run to run with ``train.deterministic=True``.

Skipped where there is no GPU (CI); run with ``python -m pytest -m gpu`` on a CUDA machine. The
references are the same model in fp32 on the same device with TF32 off, so every tolerance below
is the precision's own, not the hardware's.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from densemnv3 import models
from densemnv3.inference.optimize import (
    compile_for_inference,
    cuda_graph_network,
    prepare_for_inference,
)
from densemnv3.models.heads import postprocess as pp

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 convolutions and matmuls in full fp32 (no TF32), restored afterwards; so is cuDNN
    autotuning, which a CUDA Predictor turns on."""
    saved = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.benchmark,
    ) = saved


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def _lraspp(rand_init):
    return rand_init(models.lraspp_mobilenet_v3_large(num_classes=19)).cuda().eval()


@torch.inference_mode()
def test_lraspp_on_cuda_matches_cpu(rand_init):
    model = rand_init(models.lraspp_mobilenet_v3_large(num_classes=19)).eval()
    x = torch.randn(1, 3, 256, 512, generator=torch.Generator().manual_seed(0))
    cpu = model(x)
    gpu = model.cuda()(x.cuda()).cpu()
    assert _rel(gpu, cpu) < 1e-4


@torch.inference_mode()
@pytest.mark.parametrize(
    "memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"]
)
def test_cuda_graph_replays_eager_result_for_new_inputs(rand_init, memory_format):
    model = prepare_for_inference(
        _lraspp(rand_init), channels_last=memory_format == torch.channels_last
    )
    gen = torch.Generator(device="cuda").manual_seed(0)
    first, second = (torch.randn(2, 3, 256, 512, device="cuda", generator=gen) for _ in range(2))
    first, second = (x.contiguous(memory_format=memory_format) for x in (first, second))
    graphed = cuda_graph_network(model, first)
    expected = model(second).clone()
    got = graphed(second).clone()  # the static output of a replay on a new input
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    # another shape falls back to eager instead of replaying the wrong graph
    small = torch.randn(1, 3, 128, 256, device="cuda", generator=gen)
    assert graphed(small).shape == (1, 19, 128, 256)


@torch.inference_mode()
@pytest.mark.parametrize(
    "memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"]
)
def test_fp16_within_fp16_tolerance(rand_init, memory_format):
    reference_model = _lraspp(rand_init)
    x = torch.randn(
        2, 3, 512, 1024, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1)
    )
    reference = reference_model(x)
    fast = prepare_for_inference(
        _lraspp(rand_init), channels_last=memory_format == torch.channels_last, dtype=torch.float16
    )
    got = fast(x.half().contiguous(memory_format=memory_format))
    assert got.dtype == torch.float16
    assert _rel(got, reference) < 2e-2
    agree = (got.argmax(1) == reference.argmax(1)).float().mean()
    assert agree > 0.99


@torch.inference_mode()
def test_compiled_lraspp_matches_eager(rand_init):
    model = prepare_for_inference(_lraspp(rand_init))
    x = torch.randn(
        1, 3, 256, 512, device="cuda", generator=torch.Generator(device="cuda").manual_seed(2)
    )
    expected = model(x).clone()
    compiled = compile_for_inference(model, mode="default")
    assert _rel(compiled(x), expected) < 1e-4


def _torchvision_and_ours_ssdlite(rand_init):
    tv = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None
    )
    rand_init(tv)
    ours = models.ssdlite320_mobilenet_v3_large()
    models.load_state_dict_checked(ours, tv.state_dict())
    return tv.cuda().eval(), ours.cuda().eval()


@torch.inference_mode()
def test_ssdlite_detections_on_cuda_match_torchvision(rand_init):
    tv, ours = _torchvision_and_ours_ssdlite(rand_init)
    for model in (tv, ours):
        model.score_thresh = 0.01  # random weights: many candidates per class, NMS does real work
    images = torch.rand(
        4, 3, 320, 320, device="cuda", generator=torch.Generator(device="cuda").manual_seed(3)
    )
    expected = tv(list(images))
    got = ours((images - 0.5) / 0.5)
    for e, g in zip(expected, got):
        assert len(g["boxes"]) == len(e["boxes"]) > 0
        assert torch.equal(g["labels"], e["labels"])
        assert torch.allclose(g["scores"], e["scores"], atol=1e-5)
        assert torch.allclose(g["boxes"], e["boxes"], atol=1e-2)


@torch.inference_mode()
def test_ssdlite_cuda_graphs_give_eager_detections(rand_init):
    _, ours = _torchvision_and_ours_ssdlite(rand_init)
    ours.score_thresh = 0.01
    gen = torch.Generator(device="cuda").manual_seed(4)
    example, x = (torch.randn(8, 3, 320, 320, device="cuda", generator=gen) for _ in range(2))
    expected = ours(x)
    graphed = cuda_graph_network(ours, example)
    for e, g in zip(expected, graphed(x)):
        assert torch.equal(g["labels"], e["labels"])
        assert torch.allclose(g["boxes"], e["boxes"], atol=1e-3)


def _detector_outputs(batch: int, seed: int):
    """Random SSDLite320 logits (91 classes), box deltas and default boxes, on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    model = models.ssdlite320_mobilenet_v3_large()
    grids = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    anchors = model.anchors(grids, (320, 320), device=torch.device("cpu"), dtype=torch.float32)
    cls_logits = torch.randn(batch, len(anchors), 91, generator=gen) * 3
    cls_logits[0, :, 0] = 50.0  # an image without candidates
    return model, cls_logits, torch.randn(batch, len(anchors), 4, generator=gen) * 0.5, anchors


@pytest.mark.parametrize("score_thresh", [0.001, 0.01, 0.5])
def test_batched_postprocess_on_cuda_equals_cpu(score_thresh):
    """The batched NMS on CUDA keeps exactly what torchvision's CPU nms keeps from the same
    candidates; from the same logits the detections agree to float rounding of softmax/exp."""
    model, cls_logits, bbox_regression, anchors = _detector_outputs(8, 6)
    cand = pp.candidates(
        cls_logits, bbox_regression, anchors, (320, 320), model.box_coder, score_thresh, 300
    )
    expected = pp._per_image(cand, 321, 0.55, 300, 512)
    got = pp._batched(pp.Candidates(*(t.cuda() for t in cand)), 321, 0.55, 300)
    assert len(got) == len(expected) and len(expected[0]["scores"]) == 0
    for e, g in zip(expected, got):
        for name in e:
            assert torch.equal(g[name].cpu(), e[name]), name
    model.score_thresh = score_thresh
    cpu = model.postprocess(cls_logits, bbox_regression, anchors, (320, 320))  # per image on CPU
    cuda = model.cuda().postprocess(
        cls_logits.cuda(), bbox_regression.cuda(), anchors.cuda(), (320, 320)
    )
    for e, g in zip(cpu, cuda):  # the same detections; near-equal scores may swap places
        g = {name: t.cpu() for name, t in g.items()}
        assert len(g["scores"]) == len(e["scores"])
        assert torch.allclose(g["scores"], e["scores"], atol=1e-6)
        for box, score, label in zip(g["boxes"], g["scores"], g["labels"]):
            same = (e["labels"] == label) & ((e["scores"] - score).abs() < 1e-6)
            assert (same & ((e["boxes"] - box).abs().amax(1) < 1e-3)).any()


def test_batched_postprocess_syncs_do_not_grow_with_the_batch():
    """Host synchronisations of the CUDA postprocess: as many for 32 images as for 4 (the same 4,
    repeated), a handful in all; the per-image path needs more per image."""
    import warnings

    model, cls_logits, bbox_regression, anchors = _detector_outputs(4, 7)
    model.cuda()

    def syncs(repeat: int, impl: str) -> int:
        args = (
            cls_logits.repeat(repeat, 1, 1).cuda(),
            bbox_regression.repeat(repeat, 1, 1).cuda(),
            anchors.cuda(),
        )
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                out = model.postprocess(*args, (320, 320), nms_impl=impl)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert len(out) == 4 * repeat
        return sum("synchronizing" in str(w.message) for w in caught)

    few, many = syncs(1, "batched"), syncs(8, "batched")
    assert few == many and 0 < many <= 20
    assert syncs(8, "per_image") > 4 * 8


def _seg_config():
    from densemnv3.config import load_config

    return load_config(ROOT / "configs" / "lraspp_synthetic.py")


def _frames():
    return list(np.random.default_rng(0).integers(0, 256, (3, 256, 512, 3), dtype=np.uint8))


def test_predictor_defaults_on_cuda_are_nchw_fp16_and_agree_with_fp32(rand_init):
    from densemnv3.inference import Predictor

    fast = Predictor(_lraspp(rand_init), _seg_config(), device="cuda")
    assert (
        fast.precision,
        fast.memory_format,
        fast.settings.compile,
        fast.settings.cuda_graphs,
    ) == ("fp16", torch.contiguous_format, False, False)
    assert fast.settings.describe() == "inference: cuda, fp16, NCHW, compile off, cuda-graphs off"
    assert next(fast.model.parameters()).dtype == torch.float16  # the network runs in fp16
    assert fast.model.backbone.features[0][0].weight.is_contiguous()  # NCHW weights
    fp32 = Predictor(_lraspp(rand_init), _seg_config(), device="cuda", precision="fp32")
    for a, b in zip(fp32(_frames()), fast(_frames())):
        assert a.shape == b.shape == (256, 512)
        assert (a == b).mean() > 0.98


@pytest.mark.parametrize(
    "options",
    [{"precision": "bf16"}, {"memory_format": "channels_last"}, {"cuda_graphs": True}],
    ids=["bf16", "channels_last", "cuda_graphs"],
)
def test_predictor_overrides_on_cuda_agree_with_fp32(options, rand_init):
    from densemnv3.inference import Predictor

    fp32 = Predictor(_lraspp(rand_init), _seg_config(), device="cuda", precision="fp32")
    fast = Predictor(_lraspp(rand_init), _seg_config(), device="cuda", **options)
    for _ in range(2):  # with CUDA graphs: the capture, then a replay
        for a, b in zip(fp32(_frames()), fast(_frames())):
            assert a.shape == b.shape == (256, 512)
            assert (a == b).mean() > 0.98


@pytest.mark.parametrize("options", [{}, {"cuda_graphs": True}], ids=["defaults", "cuda_graphs"])
def test_detection_predictor_on_cuda_agrees_with_fp32(options, rand_init):
    from densemnv3.config import Config, DataConfig, ModelConfig
    from densemnv3.inference import Predictor

    cfg = Config(
        task="detection",
        model=ModelConfig(name="ssdlite320_mobilenet_v3_large", num_classes=91),
        data=DataConfig(root="/nonexistent"),
    )
    state = rand_init(models.ssdlite320_mobilenet_v3_large()).state_dict()

    def predictor(**kwargs):
        model = models.ssdlite320_mobilenet_v3_large()
        model.load_state_dict(state)
        return Predictor(model, cfg, device="cuda", score_threshold=0.01, **kwargs)

    fast = predictor(**options)
    assert fast.settings.precision == "fp16" and not fast.channels_last
    expected = predictor(precision="fp32")(_frames())
    for _ in range(2):  # with CUDA graphs: the capture, then a replay
        for a, b in zip(expected, fast(_frames())):
            assert len(a["scores"]) > 0
            assert abs(len(b["scores"]) - len(a["scores"])) <= max(3, 0.05 * len(a["scores"]))
            top = min(len(a["scores"]), len(b["scores"]), 20)
            np.testing.assert_allclose(
                np.sort(b["scores"])[::-1][:top], np.sort(a["scores"])[::-1][:top], atol=1e-2
            )


def test_deterministic_loss_and_resize_on_cuda_equal_the_ops_they_replace():
    from densemnv3.models.losses import deterministic_cross_entropy
    from densemnv3.models.resize import resize_bilinear_matmul

    gen = torch.Generator(device="cuda").manual_seed(6)
    logits = torch.randn(2, 19, 64, 128, device="cuda", generator=gen, requires_grad=True)
    target = torch.randint(0, 19, (2, 64, 128), device="cuda", generator=gen)
    target[:, :8] = 255
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(deterministic_cross_entropy(logits, target, 255), expected, rtol=1e-5)
    small = logits[:, :, ::8, ::8].detach().requires_grad_()
    got = resize_bilinear_matmul(small, (64, 128))
    assert torch.allclose(
        got, F.interpolate(small, size=(64, 128), mode="bilinear", align_corners=False), atol=1e-5
    )


def test_ohem_on_cuda_equals_cpu_and_runs_in_deterministic_mode():
    from densemnv3.models.losses import ohem_cross_entropy

    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 19, 64, 128, generator=gen) * 4
    target = torch.randint(0, 19, (2, 64, 128), generator=gen)
    target[:, :8] = 255
    for thresh, min_kept in ((0.7, 0), (1e-3, 5000)):  # the threshold; the min_kept hardest (topk)
        expected = ohem_cross_entropy(logits, target, thresh=thresh, min_kept=min_kept)
        got = ohem_cross_entropy(logits.cuda(), target.cuda(), thresh=thresh, min_kept=min_kept)
        assert torch.allclose(got.cpu(), expected, rtol=1e-5)
    x = logits.cuda().requires_grad_()
    torch.use_deterministic_algorithms(True)
    try:
        ohem_cross_entropy(x, target.cuda(), thresh=1e-3, min_kept=5000).backward()
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.isfinite(x.grad).all()


def _train_overrides(tool, tiny_synthetic, tiny_overrides, work):
    if tool == "train_seg.py":  # tiny_overrides sets train.deterministic=True
        return "lraspp_synthetic.py", tiny_overrides(tiny_synthetic, work, train__amp=True)
    return "ssdlite_synthetic.py", [
        "model.name=ssdlite320_mobilenet_v3_small",
        f"data.root={tiny_synthetic}",
        "data.synthetic=None",
        "data.batch_size=4",
        "data.eval_batch_size=2",
        "data.workers=0",
        "schedule.iters=6",
        "schedule.warmup_iters=1",
        "train.eval_interval=3",
        "train.checkpoint_interval=3",
        "train.amp=True",
        "train.channels_last=True",
        "train.deterministic=True",
        f"work_dir={work}",
    ]


@pytest.mark.parametrize("tool", ["train_seg.py", "train_det.py"])
def test_deterministic_amp_training_on_cuda_is_bit_identical(
    tool, tiny_synthetic, tiny_overrides, run_tool, tmp_path
):
    """train.deterministic=True with AMP on CUDA: it runs, and twice gives the same weights bit for
    bit."""
    weights = []
    for run in ("a", "b"):
        work = tmp_path / run
        config, overrides = _train_overrides(tool, tiny_synthetic, tiny_overrides, work)
        done = run_tool(
            tool,
            str(ROOT / "configs" / config),
            "--device",
            "cuda",
            "--no-progress",
            "--set",
            *overrides,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((work / "metrics.json").read_text())
        header, *rows = (work / "results.csv").read_text().splitlines()
        assert rows and "nan" not in rows[-1].lower()
        weights.append(
            torch.load(work / "last.pt", map_location="cpu", weights_only=False)["model"]
        )
    assert weights[0].keys() == weights[1].keys()
    different = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert not different, (
        f"{len(different)} tensors differ between two deterministic runs, e.g. {different[:3]}"
    )
