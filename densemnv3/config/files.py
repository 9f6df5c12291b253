"""Config files: running one (or a shipped config by name), reading the config a checkpoint
records, and writing a run's resolved config as a loadable Python file."""

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
from pathlib import Path
from typing import Any

from densemnv3.errors import ConfigError, did_you_mean
from densemnv3.utils.files import write_text

from .overrides import apply_override, validate
from .schema import Config

#: The shipped configs: the package ``densemnv3.configs`` (in a clone, a link to ``configs/``).
SHIPPED_CONFIGS = Path(__file__).parents[1] / "configs"


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
SHIPPED_ROOT = Path(__file__).resolve().parents[2]


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
