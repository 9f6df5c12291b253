"""Both tasks that segment train on the loss the config names (OHEM here), on the model's logits."""

import pytest
import torch

from densemnv3.config import Config, LossConfig, ModelConfig
from densemnv3.models.losses import ohem_cross_entropy
from densemnv3.models.resize import resize_bilinear
from densemnv3.tasks import build_task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "task_name, model_name",
    [("segmentation", "lraspp_mobilenet_v3_small"), ("multitask", "multitask_mobilenet_v3_small")],
)
def test_the_task_trains_on_ohem_when_the_config_asks(tiny_synthetic, task_name, model_name):
    cfg = Config(
        task=task_name,
        model=ModelConfig(name=model_name),
        loss=LossConfig(ohem_thresh=1 / 19, ohem_min_kept=0),
    )  # ~ chance: an untrained
    # model gives some pixels more, some less
    cfg.data.root, cfg.data.crop_size, cfg.data.workers = str(tiny_synthetic), (48, 96), 0
    task = build_task(cfg)
    torch.manual_seed(0)
    model = task.build_model().train()
    head = model.seg if task_name == "multitask" else model.head
    seen = []
    head.register_forward_hook(lambda module, args, out: seen.append(out.detach()))
    dataset = task.train_dataset()
    dataset.transform.set_random_seed(0)
    batch = task.collate([dataset[0], dataset[1]])
    got = task.losses(model, batch, torch.device("cpu"))["ce"]

    images, targets = batch
    masks = torch.stack([t["mask"] for t in targets]) if task_name == "multitask" else targets
    logits = resize_bilinear(seen[0], images.shape[-2:])
    expected = ohem_cross_entropy(logits, masks.long(), thresh=1 / 19, min_kept=0)
    plain = torch.nn.functional.cross_entropy(logits, masks.long(), ignore_index=255)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(expected.item() - plain.item()) > 1e-3  # OHEM dropped the easier pixels
