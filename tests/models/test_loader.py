"""load_model: checkpoints describe themselves; a config beside one is checked, never silently
used."""

import dataclasses

import numpy as np
import pytest
import torch

from densemnv3.config import Config, DataConfig, ModelConfig
from densemnv3.errors import CheckpointError
from densemnv3.inference import Predictor
from densemnv3.load import load_model
from densemnv3.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def seg_config(**options) -> Config:
    return Config(
        task="segmentation",
        model=ModelConfig(
            name="lraspp_mobilenet_v3_small",
            num_classes=5,
            options={"output_stride": 16, **options},
        ),
        data=DataConfig(eval_resize=(64, 128)),
    )


def det_config(image_size=(128, 256)) -> Config:
    return Config(
        task="detection",
        model=ModelConfig(name="ssdlite320_mobilenet_v3_small", num_classes=4),
        data=DataConfig(image_size=image_size),
    )


def save(tmp_path, cfg: Config, *, record_config: bool = True, seed: int = 0, rand_init=None):
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    if rand_init is not None:
        rand_init(model, seed)
    state = {"model": model.state_dict(), "arch": cfg.model.name}
    if record_config:
        state["config"] = dataclasses.asdict(cfg)
    path = tmp_path / f"{cfg.task}.pt"
    torch.save(state, path)
    return path, model.eval()


def test_a_checkpoint_alone_rebuilds_its_model_and_config(tmp_path, rand_init):
    cfg = seg_config(pool="global")
    path, model = save(tmp_path, cfg, rand_init=rand_init)
    loaded = load_model(None, path)
    assert loaded.cfg == cfg and loaded.checkpoint.path == path
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(x), model(x))


def test_a_config_that_builds_another_model_is_an_error(tmp_path):
    path, _ = save(tmp_path, seg_config())
    other = seg_config(output_stride=8)  # same weights' shapes, another network
    with pytest.raises(
        CheckpointError, match=r"seg.*\.pt: trained with model\.options .*output_stride"
    ):
        load_model(other, path)
    fewer = seg_config()
    fewer.model.num_classes = 3
    with pytest.raises(CheckpointError, match="model.num_classes 5 \\(config: 3\\)"):
        load_model(fewer, path)


def test_input_size_comes_from_the_checkpoint_unless_set(tmp_path):
    path, _ = save(tmp_path, det_config(image_size=(128, 256)))
    warnings: list[str] = []
    repo = det_config(image_size=320)  # the repo config, as a user would pass it
    loaded = load_model(repo, path, warn=warnings.append)
    assert loaded.cfg.data.image_size == (128, 256) and repo.data.image_size == 320
    assert (
        len(warnings) == 1 and "data.image_size=(128, 256)" in warnings[0] and "320" in warnings[0]
    )
    warnings.clear()
    loaded = load_model(
        det_config(image_size=(96, 96)),
        path,
        overrides=["data.image_size=[96,96]"],
        warn=warnings.append,
    )
    assert loaded.cfg.data.image_size == (96, 96) and "as --set says" in warnings[0]
    # no config: the recorded one, with --set applied to it
    loaded = load_model(None, path, overrides=["data.image_size=160"])
    assert loaded.cfg.data.image_size == 160 and loaded.cfg.model.num_classes == 4


def test_a_file_without_a_config_needs_one(tmp_path):
    path, _ = save(tmp_path, seg_config(), record_config=False)
    with pytest.raises(CheckpointError, match="does not record the config it was trained with"):
        load_model(None, path)
    assert load_model(seg_config(), path).cfg == seg_config()


def test_predictor_from_checkpoint_runs_at_the_trained_size(tmp_path):
    path, _ = save(tmp_path, det_config(image_size=(128, 256)))
    predictor = Predictor.from_checkpoint(path, device="cpu")
    assert predictor.input_size == (128, 256) and predictor.task == "detection"
    result = predictor(np.zeros((90, 200, 3), np.uint8))
    assert set(result) == {"boxes", "scores", "labels", "class_names"}
    seg_path, _ = save(tmp_path, seg_config())
    seg = Predictor.from_checkpoint(seg_path, device="cpu")
    assert seg.input_size == (64, 128) and seg(np.zeros((50, 70, 3), np.uint8)).shape == (50, 70)


def swapped_config(backbone, name="lraspp") -> Config:
    cfg = seg_config()
    cfg.model.name, cfg.model.backbone, cfg.model.options = name, backbone, {}
    return cfg


@pytest.mark.parametrize("backbone", ["shufflenet_v2", {"name": "tv:resnet18", "output_stride": 8}])
def test_a_checkpoint_records_its_backbone(tmp_path, rand_init, backbone):
    cfg = swapped_config(backbone)
    path, model = save(tmp_path, cfg, rand_init=rand_init)
    loaded = load_model(None, path)
    assert loaded.cfg.model.backbone == backbone
    assert type(loaded.model.backbone) is type(model.backbone)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(x), model(x))
    assert "lraspp on backbone" in loaded.checkpoint.description
    # the same config loads it; another backbone is one line naming both
    assert load_model(swapped_config(backbone), path).cfg.model.backbone == backbone
    with pytest.raises(
        CheckpointError, match=r"trained with model\.backbone .* \(config: 'mobilenet_v2'\)"
    ):
        load_model(swapped_config("mobilenet_v2"), path)


def test_weights_alone_are_checked_by_backbone_family(tmp_path, rand_init):
    """A state dict without a config: its family (from its layer names) must match the model's."""
    cases = {
        "resnet": swapped_config("tv:resnet18"),
        "shufflenet": swapped_config("shufflenet_v2"),
        "mnv2": swapped_config("mobilenet_v2"),
    }
    paths = {}
    for key, cfg in cases.items():
        (tmp_path / key).mkdir()
        path, _ = save(tmp_path / key, cfg, record_config=False, rand_init=rand_init)
        paths[key] = path
    # each loads into the model its config builds
    for key, cfg in cases.items():
        assert (
            load_model(cfg, paths[key]).checkpoint.backbone
            == {"resnet": "ResNet", "shufflenet": "ShuffleNetV2", "mnv2": "MobileNetV2"}[key]
        )
    # ShuffleNetV2 and MobileNetV2 both have 19 blocks: told apart by their layers
    with pytest.raises(CheckpointError) as info:
        load_model(cases["mnv2"], paths["shufflenet"])
    message = str(info.value)
    assert "segmentation checkpoint of lraspp on backbone ShuffleNetV2" in message
    assert "config builds a segmentation model, lraspp on MobileNetV2" in message
    assert "\n" not in message
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint of lraspp on backbone ResNet .* on "
        r"ShuffleNetV2; pass the config",
    ):
        load_model(cases["shufflenet"], paths["resnet"])
