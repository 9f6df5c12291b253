"""Python configs: plain dataclasses in a ``.py`` file, with dotted ``--set`` overrides.

A config file defines ``cfg``, a :class:`Config`. A derived config imports its base and edits it::

    from densemnv3.configs.lraspp_cityscapes import cfg
    cfg.schedule.iters = 2000

The shipped configs are the package ``densemnv3.configs`` (in a clone, a link to ``configs/``;
there ``from configs.NAME import cfg`` works too) and load by name: ``load_config("lraspp_synthetic")``.
:func:`load_config` runs the file with the config's folder and its parent importable, gives every
load fresh module objects (so a base edited by one derived config is not seen by the next),
applies overrides such as ``"optim.lr=0.02"`` with type conversion, and checks every value against
its field's type. Unknown keys fail with the closest valid key.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib.util
import sys
import traceback
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from densemnv3.errors import ConfigError, did_you_mean
from densemnv3.utils.files import write_text
from densemnv3.utils.typed_values import convert, literal, matches, type_name


@dataclass
class ModelConfig:
    """Which model to build: ``name`` is a builder in :mod:`densemnv3.models`."""

    name: str = "lraspp_mobilenet_v3_large"
    num_classes: int = 19
    #: Extra keyword arguments of the builder (``pool``, ``width_mult``, ``output_stride``, ...).
    options: dict[str, Any] = field(default_factory=dict)
    #: The backbone, replacing the one ``name`` fixes: a registry name (``"mobilenet_v2"``,
    #: ``"tv:resnet18"``, ``"timm:efficientnet_b0"``) or a dict of it and its options
    #: (``{"name": "tv:resnet18", "output_stride": 16}``); None: the model's own.
    backbone: str | dict[str, Any] | None = None
    #: A torchvision ImageNet checkpoint for the backbone (a local file), or None.
    backbone_weights: str | None = None
    #: A checkpoint of the whole model to start from (a local file: torchvision's or a run's), or
    #: None. The multi-task model also takes single-task checkpoints, each loading into its part:
    #: give a tuple of files (an LR-ASPP's and an SSDLite's) to start both heads.
    weights: str | tuple[str, ...] | None = None
    #: Channel widths changed by NetAdapt (``tools/netadapt.py``): unit name -> channels (see
    #: :mod:`densemnv3.models.widths`); None: the architecture's own. Recorded in checkpoints.
    widths: dict[str, int] | None = None


@dataclass
class SyntheticConfig:
    """Generate the synthetic dataset at ``data.root`` if it is not there yet."""

    train: int = 200
    val: int = 50
    size: tuple[int, int] = (256, 512)
    seed: int = 0


@dataclass
class DataConfig:
    """Dataset location and augmentation. Segmentation reads a Cityscapes layout under ``root``;
    detection reads COCO json + images (``*_ann``/``*_images`` relative to ``root``); multi-task
    reads the Cityscapes layout, its boxes from ``gtFine``'s ``_instanceIds``, and takes the
    segmentation keys (``crop_size``, ``scale_range``, ``eval_resize``) for its one input."""

    root: str = "data/cityscapes"
    train_split: str = "train"
    val_split: str = "val"
    synthetic: SyntheticConfig | None = None
    batch_size: int = 8
    eval_batch_size: int = 1
    workers: int = 4
    skip_bad: bool = False
    # an image whose header declares more pixels is refused (skipped with skip_bad) before it
    # is decoded: a tiny file can claim 32000x32000. 2^28 is 32 times a 2048x4096 frame.
    max_image_pixels: int = 2**28
    # keep decoded images in RAM after the first epoch: small datasets only (one copy per worker)
    cache_images: bool = False
    # segmentation training split read from this decoded-sample cache (tools/cache_dataset.py)
    # instead of decoding PNGs; None: off
    decoded_cache: str | None = None
    # segmentation
    crop_size: tuple[int, int] = (512, 1024)
    scale_range: tuple[float, float] = (0.5, 2.0)
    eval_resize: tuple[int, int] | None = None
    # detection
    image_size: int | tuple[int, int] = 320  # network input: a side (square) or (height, width)
    zoom_out: bool = True  # SSD zoom-out (p=0.5) in training
    iou_crop: bool = True  # SSD random IoU crop in training
    train_images: str = "train2017"
    train_ann: str = "annotations/instances_train2017.json"
    val_images: str = "val2017"
    val_ann: str = "annotations/instances_val2017.json"
    label_mapping: str = "category_id"


@dataclass
class OptimConfig:
    """``sgd`` (with ``momentum``, optionally Nesterov) or ``adamw`` (betas ``(momentum, 0.999)``,
    decoupled weight decay); ``norm_weight_decay`` applies to norm layers and biases."""

    name: typing.Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-6
    norm_weight_decay: float | None = None
    nesterov: bool = False
    clip_grad_norm: float | None = None


@dataclass
class ScheduleConfig:
    """Length in iterations (or epochs) and the lr policy (``poly`` or ``cosine``) with warmup."""

    iters: int | None = None
    epochs: int | None = None
    policy: str = "poly"
    power: float = 0.9
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    """Engine options: intervals are in iterations."""

    device: str = "auto"
    amp: bool = True
    sync_bn: bool = False
    deterministic: bool = False
    seed: int = 0
    log_interval: int = 20
    eval_interval: int = 1000
    checkpoint_interval: int = 1000
    channels_last: bool = False


@dataclass
class LossConfig:
    """The training loss. Multi-task: ``seg_weight`` × the segmentation cross entropy +
    ``det_weight`` × (SSD box regression + classification); the weighted terms are what
    ``results.csv`` and TensorBoard log (``train/ce``, ``train/bbox_regression``,
    ``train/classification``) and what ``train/loss`` sums."""

    seg_weight: float = 1.0
    det_weight: float = 1.0
    #: Online hard example mining for the segmentation cross entropy (as mmsegmentation's
    #: ``OHEMPixelSampler``): when set, only the pixels whose target-class probability is below
    #: ``ohem_thresh`` count, and at least the ``ohem_min_kept`` hardest pixels of each batch.
    ohem_thresh: float | None = None
    ohem_min_kept: int = 100_000


@dataclass
class NetAdaptConfig:
    """``tools/netadapt.py``: shrink a trained model to ``target`` × its latency on ``runtime``.
    Each iteration cuts ``step`` × the original latency: every unit of a kind in ``kinds`` proposes
    its widest multiple of 8 that does, each proposal is fine-tuned ``short_iters`` steps and
    scored on ``eval_images`` validation images (0: all), the best Δmetric/|Δlatency| is kept;
    then ``long_iters`` steps of fine-tuning. Fine-tuning uses ``optim`` at ``lr_scale`` × its lr.
    The defaults fit a 2-core CPU; a GPU run affords the paper's step 0.01 and longer fine-tunes."""

    target: float = 0.7
    step: float = 0.025
    kinds: tuple[str, ...] = ("expansion", "chain", "head")
    importance: typing.Literal["l2", "bn"] = "l2"
    short_iters: int = 10
    eval_images: int = 20
    long_iters: int = 1000
    lr_scale: float = 0.1


@dataclass
class TTAConfig:
    """Test-time augmentation of segmentation: the image at each of ``scales`` (× its size), and
    mirrored too with ``flip``; the softmax probabilities are averaged. The defaults: off."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False


@dataclass
class EvalConfig:
    """How segmentation is predicted in evaluation (the eval tools, training's evaluation) and
    by the Predictor: ``mode`` ``"whole"`` (the image at once) or ``"slide"`` (``crop`` windows
    every ``stride`` pixels, overlapping logits averaged, as mmsegmentation's slide inference;
    None: ``data.crop_size`` and 2/3 of the crop); ``tta``: scales and flips."""

    mode: typing.Literal["whole", "slide"] = "whole"
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    tta: TTAConfig = field(default_factory=TTAConfig)


@dataclass
class Config:
    """A whole run: task (``segmentation``, ``detection`` or ``multitask``), model, data,
    optimizer, schedule, engine, loss, evaluation and NetAdapt."""

    task: str = "segmentation"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    netadapt: NetAdaptConfig = field(default_factory=NetAdaptConfig)
    work_dir: str = "work_dirs/run"


# --------------------------------------------------------------------------- loading


#: The shipped configs: the package ``densemnv3.configs`` (in a clone, a link to ``configs/``).
SHIPPED_CONFIGS = Path(__file__).parent / "configs"


def shipped_configs() -> dict[str, str]:
    """The shipped configs' names, each with the first line of its docstring."""
    found = {}
    for path in sorted(SHIPPED_CONFIGS.glob("*.py")):
        if path.name != "__init__.py":
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            found[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return found


def resolve_config(config: str | Path) -> Path:
    """The config file that ``config`` names: a path to a file, or a shipped config's name
    (``lraspp_synthetic``, see :func:`shipped_configs`)."""
    path = Path(config)
    if path.is_file():
        return path
    names = shipped_configs()
    if path.name == str(config) and path.suffix != ".py":  # a bare name
        if str(config) in names:
            return SHIPPED_CONFIGS / f"{config}.py"
        raise ConfigError(
            f"unknown config {str(config)!r}{did_you_mean(str(config), names)}; the "
            f"shipped configs are {', '.join(names)}; or give a config file's path"
        )
    hint = ""
    if path.parent.is_dir():
        hint = did_you_mean(path.name, [p.name for p in path.parent.glob("*.py")])
    if not hint and path.stem in names:
        hint = f" (a shipped config: give its name, {path.stem})"
    raise ConfigError(f"{path}: config file not found{hint}")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Run the config file at ``path`` (or the shipped config of that name), apply ``key=value``
    overrides and validate the result."""
    path = resolve_config(path)
    cfg = getattr(_exec_config(path), "cfg", None)
    if not isinstance(cfg, Config):
        raise ConfigError(f"{path}: a config must define `cfg = Config(...)` (densemnv3.config)")
    for override in overrides:
        apply_override(cfg, override)
    validate(cfg)
    return cfg


#: A clone's root, whose ``configs/`` a config anywhere may import as ``configs`` (not installed).
SHIPPED_ROOT = Path(__file__).resolve().parents[1]


def _exec_config(path: Path) -> types.ModuleType:
    folder = path.resolve().parent
    roots = [str(folder), str(folder.parent)]
    if (SHIPPED_ROOT / "configs" / "__init__.py").is_file() and str(SHIPPED_ROOT) not in roots:
        roots.append(str(SHIPPED_ROOT))  # after the user's folders: theirs win
    fresh = (
        str(folder),
        str(SHIPPED_ROOT / "configs"),
        str(SHIPPED_CONFIGS),
        str(SHIPPED_CONFIGS.resolve()),
    )
    _forget_config_modules(fresh)  # imported before, e.g. by a user's own code: not shared
    before = set(sys.modules)
    sys.path[:0] = roots
    try:
        spec = importlib.util.spec_from_file_location(f"_densemnv3_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except ConfigError:
        raise
    except Exception as err:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.endswith(".py")]
        where = next((f for f in reversed(frames) if Path(f.filename).parent == folder), None)
        line = f"{where.filename}:{where.lineno}" if where else str(path)
        hint = ""
        if isinstance(err, ModuleNotFoundError) and (err.name or "").split(".")[0] == "configs":
            hint = (
                "; the shipped configs are the package densemnv3.configs (a clone also has "
                "configs/): write `from densemnv3.configs.NAME import cfg`"
            )
        raise ConfigError(f"{line}: error in config: {type(err).__name__}: {err}{hint}") from None
    finally:
        for root in roots:
            with contextlib.suppress(ValueError):
                sys.path.remove(root)
        _forget_config_modules(fresh, set(sys.modules) - before)  # re-run on every load


def _forget_config_modules(folders: tuple[str, ...], names: set[str] | None = None) -> None:
    """Drop config modules (from ``folders``) from ``sys.modules``, so the next import runs them."""
    for name in list(sys.modules if names is None else names):
        file = getattr(sys.modules.get(name), "__file__", None) or ""
        if name.startswith("_densemnv3_config_") or file.startswith(folders):
            sys.modules.pop(name, None)


def apply_override(cfg: Config, override: str) -> None:
    """Apply one ``"a.b.c=value"``; the value is parsed as a Python literal when it is one."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. optim.lr=0.02")
    parts = key.split(".")
    node: Any = cfg
    for depth, part in enumerate(parts):
        done = ".".join(parts[:depth])
        last = depth == len(parts) - 1
        if dataclasses.is_dataclass(node):
            names = [f.name for f in dataclasses.fields(node)]
            if part not in names:
                valid = [f"{done}.{n}" if done else n for n in names]
                raise ConfigError(
                    f"unknown config key {key!r}{did_you_mean('.'.join(parts[: depth + 1]), valid)}"
                    f"; valid keys here: {', '.join(valid)}"
                )
            if last:
                hint = typing.get_type_hints(type(node))[part]
                setattr(node, part, convert(key, text.strip(), hint))
            else:
                node = getattr(node, part)
                if node is None or (isinstance(node, str) and part == "backbone"):
                    hint = typing.get_type_hints(type(_parent(cfg, parts[:depth])))[part]
                    node = _default_of(hint, node)
                    setattr(_parent(cfg, parts[:depth]), part, node)
        elif isinstance(node, dict):
            if last:
                node[part] = literal(text.strip())
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"config key {key!r}: {done!r} is a value, not a section")


def _parent(cfg: Config, parts: list[str]) -> Any:
    node: Any = cfg
    for part in parts:
        node = getattr(node, part)
    return node


def _default_of(hint: Any, value: Any = None) -> Any:
    """A section to set keys in where the config holds ``value`` (None, or a backbone's name)."""
    for arg in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(arg):
            return arg()
        if arg is dict or typing.get_origin(arg) is dict:
            return {} if value is None else {"name": value}
    raise ConfigError(f"cannot create a section of type {hint}")


def backbone_spec(
    value: str | Mapping | None, key: str = "model.backbone"
) -> tuple[str, dict] | None:
    """``(name, options)`` of a backbone given as a name or ``{"name": ..., **options}``; None."""
    if value is None:
        return None
    options = {} if isinstance(value, str) else dict(value)
    name = value if isinstance(value, str) else options.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"{key}: expected a backbone name or a dict with 'name', e.g. "
            f"{{'name': 'tv:resnet18', 'output_stride': 16}}, got {value!r}"
        )
    return name, options


def validate(node: Any, prefix: str = "") -> None:
    """Check every field of a config tree against its type annotation."""
    hints = typing.get_type_hints(type(node))
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if isinstance(value, list) and typing.get_origin(hints[f.name]) is tuple:
            value = tuple(value)
            setattr(node, f.name, value)
        if not matches(value, hints[f.name]):
            raise ConfigError(
                f"config key {key!r}: expected {type_name(hints[f.name])}, got {value!r}"
            )
        if dataclasses.is_dataclass(value):
            validate(value, f"{key}.")


def config_from_dict(data: Mapping[str, Any], source: str = "config") -> Config:
    """The :class:`Config` that ``dataclasses.asdict`` turned into ``data`` (as checkpoints store
    it), validated; an unknown key raises :class:`ConfigError` naming ``source`` and the key."""

    def build(kind: type, values: Mapping[str, Any], prefix: str) -> Any:
        hints = typing.get_type_hints(kind)
        names = {f.name for f in dataclasses.fields(kind)}
        kwargs = {}
        for key, value in values.items():
            if key not in names:
                raise ConfigError(
                    f"{source}: unknown config key {prefix + key!r} (written by another "
                    f"densemnv3 version?){did_you_mean(key, names)}"
                )
            section = next(
                (
                    a
                    for a in typing.get_args(hints[key]) or (hints[key],)
                    if dataclasses.is_dataclass(a)
                ),
                None,
            )
            kwargs[key] = (
                build(section, value, f"{prefix}{key}.")
                if section is not None and isinstance(value, Mapping)
                else value
            )
        return kind(**kwargs)

    cfg = build(Config, data, "")
    validate(cfg)
    return cfg


def config_to_python(cfg: Config) -> str:
    """Python source of a config file that rebuilds ``cfg`` (saved as ``config.py`` in a run)."""
    return (
        "# Resolved config written by densemnv3; load it with densemnv3.config.load_config.\n"
        "from densemnv3.config import *  # noqa: F403\n\n"
        f"cfg = {cfg!r}\n"
    )


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as a loadable Python file."""
    return write_text(path, config_to_python(cfg))


__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "NetAdaptConfig",
    "OptimConfig",
    "ScheduleConfig",
    "SyntheticConfig",
    "TTAConfig",
    "TrainConfig",
    "apply_override",
    "backbone_spec",
    "config_from_dict",
    "config_to_python",
    "load_config",
    "resolve_config",
    "save_config",
    "shipped_configs",
    "validate",
]
