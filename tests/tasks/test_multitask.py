"""The multitask task: losses weighted by the config, each one reported."""

import pytest
import torch

from densemnv3.config import Config, LossConfig, ModelConfig
from densemnv3.errors import ConfigError
from densemnv3.tasks import build_task

pytestmark = pytest.mark.usefixtures("one_thread")


def test_losses_are_weighted_by_the_config(tiny_synthetic):
    def losses(seg_weight, det_weight):
        cfg = Config(
            task="multitask",
            model=ModelConfig(name="multitask_mobilenet_v3_small"),
            loss=LossConfig(seg_weight=seg_weight, det_weight=det_weight),
        )
        cfg.data.root, cfg.data.crop_size, cfg.data.workers = str(tiny_synthetic), (48, 96), 0
        task = build_task(cfg)
        torch.manual_seed(0)
        model = task.build_model().train()
        dataset = task.train_dataset()
        dataset.transform.set_random_seed(0)
        batch = task.collate([dataset[0], dataset[1]])
        return task.losses(model, batch, torch.device("cpu"))

    plain, weighted = losses(1.0, 1.0), losses(2.0, 0.5)
    assert set(plain) == {"ce", "bbox_regression", "classification"}
    assert weighted["ce"].item() == pytest.approx(2.0 * plain["ce"].item(), rel=1e-5)
    for name in ("bbox_regression", "classification"):
        assert weighted[name].item() == pytest.approx(0.5 * plain[name].item(), rel=1e-5)


def test_a_detector_too_small_for_the_things_is_a_config_error(tiny_synthetic):
    cfg = Config(
        task="multitask",
        model=ModelConfig(name="multitask_mobilenet_v3_small", options={"det_num_classes": 5}),
    )
    cfg.data.root = str(tiny_synthetic)
    with pytest.raises(
        ConfigError, match="model.options.det_num_classes: .* 8 classes with boxes .* set it to 9"
    ):
        build_task(cfg).build_model()
