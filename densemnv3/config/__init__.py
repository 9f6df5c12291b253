"""Python configs: plain dataclasses in a ``.py`` file, with dotted ``--set`` overrides.

A config file defines ``cfg``, a :class:`Config`. A derived config imports its base and edits it::

    from densemnv3.configs.lraspp_cityscapes import cfg
    cfg.schedule.iters = 2000

The shipped configs are the package ``densemnv3.configs`` (in a clone, a link to ``configs/``; there
``from configs.NAME import cfg`` works too) and load by name: ``load_config("lraspp_synthetic")``.
:func:`load_config` runs the file with the config's folder and its parent importable, gives every
load fresh module objects (so a base edited by one derived config is not seen by the next), applies
overrides such as ``"optim.lr=0.02"`` with type conversion, and checks every value against its
field's type. Unknown keys fail with the closest valid key.
"""

from __future__ import annotations

from densemnv3.utils.lazy import moved_names

from .files import (
    SHIPPED_CONFIGS,
    config_from_dict,
    config_to_python,
    load_config,
    resolve_config,
    save_config,
    shipped_configs,
)
from .overrides import apply_override, validate
from .schema import (
    TASKS,
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    NetAdaptConfig,
    OptimConfig,
    ScheduleConfig,
    SyntheticConfig,
    TrainConfig,
    TTAConfig,
    task_tools,
)

__all__ = [
    "SHIPPED_CONFIGS",
    "TASKS",
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
    "config_from_dict",
    "config_to_python",
    "load_config",
    "resolve_config",
    "save_config",
    "shipped_configs",
    "task_tools",
    "validate",
]


#: Names that moved out of this package, kept for one release with a warning.
_MOVED = {"backbone_spec": "densemnv3.models.backbones.registry"}
__getattr__ = moved_names(__name__, _MOVED)
