"""Builders shared by the tasks: the model named in the config, and the synthetic dataset."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from densemnv3 import models
from densemnv3.config import Config, ModelConfig
from densemnv3.engine import distributed as dist_utils
from densemnv3.errors import ConfigError
from densemnv3.models.backbones.base import did_you_mean


def build_model(cfg: ModelConfig) -> nn.Module:
    """``densemnv3.models.<cfg.name>(num_classes=..., **cfg.options)`` with checked options, then
    the optional torchvision backbone / whole-model checkpoints."""
    builders = {name for name in getattr(models, "__all__", ()) if name.startswith(("lraspp", "ssdlite"))}
    if cfg.name not in builders:
        raise ConfigError(f"model.name {cfg.name!r} is not a model{did_you_mean(cfg.name, builders)}; "
                          f"available: {', '.join(sorted(builders))}")
    builder = getattr(models, cfg.name)
    accepted = _options_of(builder)
    for key in cfg.options:
        if key not in accepted:
            raise ConfigError(
                f"model.options.{key}: {cfg.name} has no option {key!r}{did_you_mean(key, accepted)}"
            )
    model = builder(num_classes=cfg.num_classes, **cfg.options)
    if cfg.backbone_weights:
        models.load_torchvision_weights(model.backbone, cfg.backbone_weights)
    if cfg.weights:
        task = "segmentation" if cfg.name.startswith("lraspp") else "detection"
        models.load_weights(model, cfg.weights, task=task, model_name=cfg.name)
    return model


def _options_of(builder) -> set[str]:
    """Keyword options of ``builder``, following its ``**kwargs`` into what it forwards them to
    (the SSDLite builders forward to :func:`~densemnv3.models.ssdlite` and
    :class:`~densemnv3.models.SSDLite`)."""
    forwards_to = {models.ssdlite320_mobilenet_v3_large: models.ssdlite,
                   models.ssdlite320_mobilenet_v3_small: models.ssdlite,
                   models.ssdlite: models.SSDLite.__init__}
    names: set[str] = set()
    while builder is not None:
        params = inspect.signature(builder).parameters
        names |= {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY or
                  (p.kind is p.POSITIONAL_OR_KEYWORD and n != "self")}
        builder = forwards_to.get(builder) if any(p.kind is p.VAR_KEYWORD for p in params.values()) else None
    return names - {"backbone", "num_classes"}


def prepare_for_eval(model: nn.Module, cfg: Config) -> torch.memory_format:
    """Put ``model`` in eval mode and in the memory format training uses (``train.channels_last``),
    and return that format for the inputs: the eval tools and the evaluation inside training take
    the same path, so the same checkpoint gives the same metrics in both."""
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.eval().to(memory_format=memory_format)
    return memory_format


def eval_progress(iterable, progress: bool):
    """The evaluation's progress bar: shown on a terminal only, erased when it ends or its
    loader fails (so an error line starts at the beginning of a line)."""
    from tqdm import tqdm

    return tqdm(iterable, desc="eval", disable=None if progress else True, dynamic_ncols=True,
                leave=False)


def ensure_synthetic(cfg: Config) -> None:
    """Generate the synthetic set at ``data.root`` on first use (rank 0; the others wait)."""
    spec = cfg.data.synthetic
    if spec is None:
        return
    from densemnv3.data.synthetic import make_synthetic, synthetic_exists

    root = Path(cfg.data.root)
    kwargs = dict(train=spec.train, val=spec.val, size=tuple(spec.size), seed=spec.seed)
    if dist_utils.is_main_process() and not synthetic_exists(root, **kwargs):
        print(f"generating the synthetic dataset at {root} (first use) ...", flush=True)
        make_synthetic(root, **kwargs)
    dist_utils.barrier()
