import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densemnv3.config import Config, DataConfig, ModelConfig
from densemnv3.data.labels import COCO_CATEGORY_NAMES, TRAIN_ID_PALETTE, detection_class_names
from densemnv3.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from densemnv3.errors import CheckpointError, UserError
from densemnv3.inference import (
    InferenceSettings,
    Predictor,
    class_color,
    draw_detections,
    draw_fps,
    overlay_segmentation,
)
from densemnv3.models import lraspp_mobilenet_v3_small, ssdlite320_mobilenet_v3_small

SYNTHETIC_NAMES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


def seg_config(**data) -> Config:
    return Config(
        task="segmentation",
        model=ModelConfig(name="lraspp_mobilenet_v3_small", num_classes=19),
        data=DataConfig(**data),
    )


def det_config(root: str = "/nonexistent", **data) -> Config:
    return Config(
        task="detection",
        model=ModelConfig(name="ssdlite320_mobilenet_v3_small", num_classes=9),
        data=DataConfig(root=root, label_mapping="contiguous", **data),
    )


def calibrate_bn_(model, run, inputs):
    """BatchNorm statistics measured on ``inputs``: an untrained model then gives varied outputs
    (with its initial statistics the activations fade to nothing, and every output is a tie)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        run(inputs)
    return model.eval()


@pytest.fixture(scope="module")
def seg_model():
    torch.manual_seed(0)
    model = lraspp_mobilenet_v3_small(num_classes=19)
    return calibrate_bn_(model, model, torch.rand(2, 3, 48, 80) * 4 - 2)


@pytest.fixture(scope="module")
def det_model():
    torch.manual_seed(0)
    model = ssdlite320_mobilenet_v3_small(num_classes=9)
    return calibrate_bn_(
        model, lambda x: model.head(model.features(x)), torch.rand(2, 3, 320, 320) * 2 - 1
    )


# Predictor folds BatchNorm into the convs of the model it gets (in place): give it copies.
@pytest.fixture(scope="module")
def seg(seg_model):
    return Predictor(copy.deepcopy(seg_model), seg_config(), device="cpu")


@pytest.fixture(scope="module")
def det(det_model):
    return Predictor(copy.deepcopy(det_model), det_config(), device="cpu")


def frame(h=48, w=80, seed=0, channels=3):
    shape = (h, w) if channels is None else (h, w, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def normalized(image_bgr, mean, std, size=None):
    """The network input computed by hand: RGB, [0, 1], optional resize, per-channel normalize."""
    x = torch.from_numpy(image_bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float()
    if size is not None:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return (x / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


# ---------------------------------------------------------------------- segmentation


def test_segmentation_is_argmax_of_the_models_logits(seg):
    image = frame()
    out = seg(image)
    assert out.shape == (48, 80) and out.dtype == np.uint8
    with torch.no_grad():
        logits = seg.model(normalized(image, IMAGENET_MEAN, IMAGENET_STD))
    assert np.array_equal(out, logits.argmax(1)[0].numpy().astype(np.uint8))
    assert len(np.unique(out)) > 3  # random weights, but not a constant map


def test_label_upsample_labels_resizes_the_label_map_of_the_input_size(seg_model):
    predictor = Predictor(copy.deepcopy(seg_model), seg_config(eval_resize=(48, 80)), device="cpu")
    predictor.label_upsample = "labels"  # the demo's --input-size
    out = predictor(frame(96, 160))
    with torch.no_grad():
        small = predictor.model(
            normalized(frame(96, 160), IMAGENET_MEAN, IMAGENET_STD, size=(48, 80))
        )
    labels = small.argmax(1)[0].numpy().astype(np.uint8)  # argmax at the input size, then x2
    assert out.shape == (96, 160) and (out == labels.repeat(2, 0).repeat(2, 1)).mean() > 0.999


def test_use_threads_is_one_budget(seg_model):
    threads = torch.get_num_threads()
    predictor = Predictor(copy.deepcopy(seg_model), seg_config(), device="cpu")
    try:
        predictor.use_threads(1)
        assert predictor.threads == 1 and torch.get_num_threads() == 1
        with pytest.raises(UserError, match="threads must be at least 1"):
            predictor.use_threads(0)
    finally:
        torch.set_num_threads(threads)


def test_segmentation_agrees_with_the_unprepared_model(seg, seg_model):
    image = frame(seed=5)
    with torch.no_grad():
        logits = seg_model(normalized(image, IMAGENET_MEAN, IMAGENET_STD))
    assert (seg(image) == logits.argmax(1)[0].numpy()).mean() > 0.999  # BN folding rounds a little


def test_segmentation_eval_resize_feeds_the_network_that_size(seg_model):
    predictor = Predictor(copy.deepcopy(seg_model), seg_config(eval_resize=(48, 80)), device="cpu")
    model = predictor.model
    seen = []
    hook = model.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    try:
        out = predictor(frame(30, 50))
    finally:
        hook.remove()
    assert seen == [torch.Size([1, 3, 48, 80])]
    assert out.shape == (30, 50)
    with torch.no_grad():  # head logits at stride 8, upsampled once to the frame
        x = normalized(frame(30, 50), IMAGENET_MEAN, IMAGENET_STD, size=(48, 80))
        feats = model.backbone(x)
        logits = model.head(feats[model.low_tap], feats[model.high_tap])
        logits = F.interpolate(logits, size=(30, 50), mode="bilinear", align_corners=False)
    assert np.array_equal(out, logits.argmax(1)[0].numpy().astype(np.uint8))


def test_batches_of_mixed_sizes_match_single_calls(seg):
    frames = [frame(48, 80, 0), frame(1, 1, 1), frame(48, 80, 2)]
    outs = seg(frames)
    assert [o.shape for o in outs] == [(48, 80), (1, 1), (48, 80)]
    for f, o in zip(frames, outs):
        assert np.array_equal(o, seg(f))
    stacked = seg(np.stack([frames[0], frames[2]]))  # an (N, H, W, 3) array is a batch too
    assert np.array_equal(stacked[0], outs[0]) and np.array_equal(stacked[1], outs[2])


def test_one_pixel_frame(seg, det):
    out = seg(frame(1, 1))
    assert out.shape == (1, 1) and out.dtype == np.uint8
    dets = det(frame(1, 1), score_threshold=0.0)
    assert dets["boxes"].shape[1:] == (4,)
    assert (dets["boxes"] >= 0).all() and (dets["boxes"] <= 1).all()


def test_grayscale_and_bgra_frames_are_converted(seg):
    gray = frame(channels=None)
    bgr = np.repeat(gray[:, :, None], 3, axis=2)
    assert np.array_equal(seg(gray), seg(bgr))
    assert np.array_equal(seg(gray[:, :, None]), seg(bgr))
    image = frame()
    bgra = np.concatenate([image, np.full((48, 80, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(seg(bgra), seg(image))
    assert np.array_equal(seg(image[:, ::-1]), seg(np.ascontiguousarray(image[:, ::-1])))


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros((8, 8, 3), np.float32), ["float32", "(8, 8, 3)"]),
        (np.zeros((8,), np.uint8), ["(8,)"]),
        (np.zeros((1, 2, 8, 8, 3), np.uint8), ["(1, 2, 8, 8, 3)"]),
        (np.zeros((8, 8, 2), np.uint8), ["(8, 8, 2)"]),
        (np.zeros((0, 8, 3), np.uint8), ["(0, 8, 3)"]),
        ("frame.png", ["str"]),
    ],
)
def test_bad_inputs_raise_user_error_naming_shape_and_dtype(seg, bad, words):
    with pytest.raises(UserError) as err:
        seg(bad)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert "\n" not in str(err.value)


def test_precision_options(seg_model):
    with pytest.raises(UserError, match="CUDA"):
        Predictor(seg_model, seg_config(), device="cpu", precision="fp16")
    with pytest.raises(UserError, match="fp32, fp16, bf16, int8"):
        Predictor(seg_model, seg_config(), device="cpu", precision="int4")
    with pytest.raises(UserError, match="int8 runs a quantized file: python tools/quantize.py"):
        Predictor(seg_model, seg_config(), device="cpu", precision="int8")
    out = Predictor(copy.deepcopy(seg_model), seg_config(), device="cpu", precision="bf16")(
        frame(8, 8)
    )
    assert out.shape == (8, 8) and out.dtype == np.uint8


def test_channels_last_gives_the_same_labels(seg_model, seg):
    predictor = Predictor(copy.deepcopy(seg_model), seg_config(), device="cpu", channels_last=True)
    image = frame()
    assert (predictor(image) == seg(image)).mean() > 0.999


def test_batchnorm_is_folded_unless_fuse_bn_is_off(seg_model):
    def norms(predictor):
        return sum(isinstance(m, torch.nn.BatchNorm2d) for m in predictor.model.modules())

    assert norms(Predictor(copy.deepcopy(seg_model), seg_config(), device="cpu")) == 0
    kept = Predictor(copy.deepcopy(seg_model), seg_config(), device="cpu", fuse_bn=False)
    assert norms(kept) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in seg_model.modules()) > 0


def test_cpu_defaults_and_overrides(seg_model):
    default = Predictor(copy.deepcopy(seg_model), seg_config(), device="cpu")
    assert (default.precision, default.channels_last, default.settings.compile) == (
        "fp32",
        True,
        False,
    )
    assert default.memory_format == torch.channels_last
    assert (
        default.settings.describe()
        == "inference: cpu, fp32, channels_last, compile off, cuda-graphs off"
    )
    nchw = Predictor(copy.deepcopy(seg_model), seg_config(), device="cpu", memory_format="nchw")
    assert nchw.memory_format == torch.contiguous_format
    assert nchw.settings == InferenceSettings(torch.device("cpu"), memory_format="nchw")
    with pytest.raises(UserError, match="CUDA graphs need a CUDA device"):
        Predictor(seg_model, seg_config(), device="cpu", cuda_graphs=True)


@pytest.mark.slow  # Inductor compiles the network: ~90 s on 2 cores
def test_compiled_predictor_gives_the_same_labels(seg_model, seg):
    compiled = Predictor(copy.deepcopy(seg_model), seg_config(), device="cpu", compile=True)
    image = frame()
    assert (compiled(image) == seg(image)).mean() > 0.999


# ---------------------------------------------------------------------- detection


def test_detection_boxes_are_model_boxes_scaled_to_the_frame(det):
    image = frame(64, 128, seed=3)
    dets = det(image, score_threshold=0.0)
    with torch.no_grad():
        raw = det.model(normalized(image, (0.5,) * 3, (0.5,) * 3, size=(320, 320)))[0]
    scale = torch.tensor([128 / 320, 64 / 320, 128 / 320, 64 / 320])
    assert len(dets["boxes"]) == len(raw["boxes"]) > 0
    # OpenCV resizes in float (the Predictor's CPU path), torch here: the same up to float rounding
    np.testing.assert_allclose(dets["boxes"], (raw["boxes"] * scale).numpy(), atol=1e-3)  # px
    np.testing.assert_allclose(dets["scores"], raw["scores"].numpy(), atol=1e-5)
    assert np.array_equal(dets["labels"], raw["labels"].numpy())
    assert dets["boxes"].dtype == np.float32 and dets["scores"].dtype == np.float32
    assert dets["labels"].dtype == np.int64
    assert dets["class_names"] == [SYNTHETIC_NAMES[label - 1] for label in dets["labels"]]


def test_score_threshold_keeps_exactly_the_higher_scored_detections(det):
    image = frame(64, 128, seed=3)
    everything = det(image, score_threshold=0.0)
    threshold = float(np.sort(everything["scores"])[-10])  # the 10 best (ties aside)
    kept = det(image, score_threshold=threshold)
    expected = everything["scores"] >= threshold
    assert len(kept["scores"]) == expected.sum() >= 10
    np.testing.assert_allclose(kept["boxes"], everything["boxes"][expected], atol=1e-5)
    assert np.array_equal(kept["labels"], everything["labels"][expected])
    assert det.model.score_thresh == 0.001  # the model's own threshold is restored


def test_no_detections_gives_empty_arrays_of_the_right_shapes(det):
    dets = det(frame(), score_threshold=1.01)
    assert dets["boxes"].shape == (0, 4) and dets["boxes"].dtype == np.float32
    assert dets["scores"].shape == (0,) and dets["labels"].shape == (0,)
    assert dets["class_names"] == []
    assert det([frame(), frame(20, 20)], score_threshold=1.01)[1]["boxes"].shape == (0, 4)


def test_detection_class_names(tmp_path, det_model):
    assert detection_class_names(det_config(), 9) == ["__background__", *SYNTHETIC_NAMES]
    ann = tmp_path / "annotations" / "instances_val2017.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps({"categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]}))
    assert detection_class_names(det_config(root=str(tmp_path)), 3) == [
        "__background__",
        "dog",
        "cat",
    ]
    by_id = det_config(root=str(tmp_path))
    by_id.data.label_mapping = "category_id"
    assert (
        detection_class_names(by_id, 8)[3] == "dog" and detection_class_names(by_id, 8)[7] == "cat"
    )
    coco = det_config()
    coco.data.label_mapping = "category_id"
    names = detection_class_names(coco, 91)
    assert names[1] == "person" and names[90] == "toothbrush" and names[12] == "class 12"
    assert detection_class_names(det_config(), 81)[80] == "toothbrush"
    assert detection_class_names(det_config(), 5) == ["__background__"] + [
        f"class {i}" for i in range(1, 5)
    ]
    explicit = Predictor(
        copy.deepcopy(det_model), det_config(), device="cpu", class_names=["bg", *"abcdefgh"]
    )
    assert explicit.class_names[1] == "a"
    assert len(COCO_CATEGORY_NAMES) == 91
    from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights

    assert COCO_CATEGORY_NAMES == tuple(
        SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"]
    )


def test_from_config_loads_a_checkpoint(tmp_path, seg_model):
    config = tmp_path / "seg.py"
    config.write_text(
        "from densemnv3.config import Config, ModelConfig\n"
        "cfg = Config(task='segmentation', "
        "model=ModelConfig(name='lraspp_mobilenet_v3_small', num_classes=19))\n"
    )
    torch.save({"model": seg_model.state_dict()}, tmp_path / "last.pt")
    predictor = Predictor.from_config(
        config, tmp_path / "last.pt", device="cpu", overrides=["data.eval_resize=[48,80]"]
    )
    assert predictor.input_size == (48, 80)
    assert predictor(frame()).shape == (48, 80)
    torch.save(
        {"model": lraspp_mobilenet_v3_small(num_classes=5).state_dict()}, tmp_path / "other.pt"
    )
    with pytest.raises(CheckpointError, match="does not match"):
        Predictor.from_config(config, tmp_path / "other.pt", device="cpu")
    torch.save(
        {"model": seg_model.state_dict(), "arch": "ssdlite320_mobilenet_v3_large"},
        tmp_path / "det.pt",
    )
    with pytest.raises(
        CheckpointError,
        match="det.pt: a detection checkpoint of "
        "ssdlite320_mobilenet_v3_large .* builds a segmentation model",
    ):
        Predictor.from_config(config, tmp_path / "det.pt", device="cpu")


# ---------------------------------------------------------------------- overlays


def test_overlay_segmentation_blends_the_palette_in_bgr():
    image = np.full((4, 6, 3), 100, np.uint8)
    labels = np.zeros((4, 6), np.uint8)  # road: RGB (128, 64, 128)
    labels[0, 0] = 13  # car: RGB (0, 0, 142)
    labels[1, 1] = 255  # ignored
    full = overlay_segmentation(image, labels, alpha=1.0)
    assert tuple(full[2, 2]) == tuple(TRAIN_ID_PALETTE[0][::-1]) == (128, 64, 128)
    assert tuple(full[0, 0]) == (142, 0, 0)  # BGR
    assert tuple(full[1, 1]) == (100, 100, 100)
    half = overlay_segmentation(image, labels, alpha=0.5)
    assert tuple(half[0, 0]) == (121, 50, 50)
    assert image.max() == 100  # the input is untouched
    with pytest.raises(ValueError, match="does not match"):
        overlay_segmentation(image, labels[:3])


def test_draw_detections_boxes_labels_and_colours():
    image = np.zeros((120, 160, 3), np.uint8)
    dets = {
        "boxes": np.array([[20, 40, 100, 110], [0, 0, 30, 30]], np.float32),
        "scores": np.array([0.9, 0.5], np.float32),
        "labels": np.array([3, 1]),
        "class_names": ["car", "person"],
    }
    out = draw_detections(image, dets)
    assert out is image
    assert tuple(image[75, 20]) == class_color(3)  # left edge of the car box
    assert tuple(image[110, 60]) == class_color(3)  # bottom edge
    assert class_color(3) != class_color(1)
    label_area = image[20:40, 22:60]  # the filled label box above the car box
    assert (label_area == class_color(3)).all(axis=2).mean() > 0.4
    assert (label_area != class_color(3)).any()  # with text on it
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0), "labels": np.zeros(0)}
    blank = np.zeros((10, 10, 3), np.uint8)
    assert not draw_detections(blank, empty).any()
    tiny = np.zeros((1, 1, 3), np.uint8)
    draw_detections(
        tiny,
        {"boxes": np.array([[0, 0, 1, 1]]), "scores": [0.5], "labels": [2]},
        class_names=["bg", "a", "b"],
    )


def test_draw_fps_writes_in_the_top_left_corner():
    image = np.full((100, 200, 3), 255, np.uint8)
    assert draw_fps(image, 12.34, "cpu fp32") is image
    assert (image[:12, :40] != 255).any() and (image[60:, 150:] == 255).all()


def test_a_cpu_batch_runs_in_slices_side_by_side(seg_model, monkeypatch):
    """On the CPU a segmentation batch runs in slices, one per thread, each with its share of
    the threads; the label maps are those of the frames one at a time (rounding aside)."""
    predictor = Predictor(copy.deepcopy(seg_model), seg_config(), device="cpu")
    predictor.use_threads(2)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(4)]
    threads_seen = []
    network = predictor._network
    monkeypatch.setattr(
        predictor, "_network", lambda x: threads_seen.append(torch.get_num_threads()) or network(x)
    )
    batch = predictor(frames)
    assert threads_seen == [1, 1] and torch.get_num_threads() == 2  # two slices, then restored
    predictor.use_threads(1)
    one = [predictor(frame) for frame in frames]
    for a, b in zip(batch, one):
        assert (a != b).mean() < 1e-3


def test_probabilities_come_with_the_labels(seg_model):
    predictor = Predictor(copy.deepcopy(seg_model), seg_config(), device="cpu")
    frame = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    result = predictor(frame, probabilities=True)
    probs = result["probabilities"]
    assert probs.dtype == np.float16 and probs.shape == (predictor.num_classes, 64, 96)
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=1e-2)
    assert np.array_equal(result["segmentation"], predictor(frame))
    assert (probs.argmax(0) == result["segmentation"]).mean() > 0.99
