"""Typed configs and presets. ``load_model_config("tiny")`` or a path to a YAML file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from hourllava_jax.config.base import ConfigError, apply_overrides, from_dict, load_yaml, save_yaml, to_dict
from hourllava_jax.config.model import (
    HourLlavaConfig,
    LLMConfig,
    MemAugConfig,
    MemoryConfig,
    VisionConfig,
)


def config_dir() -> Path:
    """The ``configs/`` tree (top of a clone, or ``hourllava_jax.configs`` in an installed wheel)."""
    here = Path(__file__).resolve().parents[2] / "configs"
    if here.is_dir():
        return here
    return Path(str(resources.files("hourllava_jax.configs")))


def resolve_config_path(name_or_path: str | Path, kind: str) -> Path:
    """``"tiny"`` -> ``configs/<kind>/tiny.yaml``; an existing path is returned as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if p.is_file():
            return p
        cand = config_dir() / p
        if cand.is_file():
            return cand
        raise ConfigError(f"{p}: config file not found")
    cand = config_dir() / kind / f"{name_or_path}.yaml"
    if not cand.is_file():
        presets = sorted(q.stem for q in (config_dir() / kind).glob("*.yaml"))
        raise ConfigError(f"no {kind} preset {str(name_or_path)!r}; available: {presets}")
    return cand


def load_model_config(name_or_path: str | Path = "tiny", overrides: list[str] | tuple[str, ...] = ()) -> HourLlavaConfig:
    """Loads a model preset (``tiny``, ``hourllava_3b``, ``hourllava_7b``) or YAML file."""
    path = resolve_config_path(name_or_path, "model")
    cfg = from_dict(HourLlavaConfig, load_yaml(path), where=str(path))
    return apply_overrides(cfg, overrides)


__all__ = [
    "ConfigError", "HourLlavaConfig", "LLMConfig", "MemAugConfig", "MemoryConfig", "VisionConfig",
    "apply_overrides", "config_dir", "from_dict", "load_model_config", "load_yaml", "resolve_config_path",
    "save_yaml", "to_dict",
]
