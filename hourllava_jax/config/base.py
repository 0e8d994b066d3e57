"""Typed configs: frozen dataclasses built from YAML, validated, with ``key=value`` overrides.

Every config in the project is a frozen dataclass. This module turns nested dicts (from YAML
files) into those dataclasses with type checks, applies dotted command-line overrides
(``--set llm.num_hidden_layers=2``) and writes configs back out. Nothing here knows what the
fields mean; the classes in ``config/model.py`` and friends do, in their ``validate`` methods.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the key and the problem."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks (and where lossless, converts) ``value`` to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {[_type_name(a) for a in args]}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


ALIAS = "alias"  # field metadata key: the name a field has in YAML (e.g. ``from``, a Python keyword)


def _key(f: dataclasses.Field) -> str:
    """The YAML / override name of field ``f``: its alias if it has one."""
    return f.metadata.get(ALIAS, f.name)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Builds dataclass ``cls`` from a nested dict; unknown keys are an error naming the key.

    A field declared with ``metadata={"alias": "from"}`` is read from the key ``from``."""
    hints = typing.get_type_hints(cls)
    fields = {_key(f): f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; valid: {sorted(fields)}")
    kwargs = {fields[k].name: _coerce(v, hints[fields[k].name], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def to_dict(cfg: Any) -> Any:
    """The inverse of ``from_dict``: plain dicts, lists and scalars (YAML/JSON-ready); aliased
    fields are written under their alias, so overrides use the YAML spelling."""
    if dataclasses.is_dataclass(cfg):
        return {_key(f): to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        if p not in node or not isinstance(node[p], dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section (sections: {sorted(k for k, v in node.items() if isinstance(v, dict))})")
        node = node[p]
    if parts[-1] not in node:
        raise ConfigError(f"override {dotted!r}: unknown key {parts[-1]!r} (valid: {sorted(node)})")
    node[parts[-1]] = value


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...]) -> T:
    """Returns ``cfg`` with ``a.b.c=value`` overrides applied (values parsed as YAML scalars)."""
    if not overrides:
        return cfg
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        _set_path(data, key.strip(), yaml.safe_load(raw))
    return from_dict(type(cfg), data)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


BASE_KEY = "base"


def merge_dicts(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key (recursively), anything else
    (scalars, lists) in ``over`` replaces the base value."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml_with_bases(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Reads a YAML mapping whose optional ``base: <file>`` key names the config it extends
    (relative to this file's folder); the file's keys override the base's (:func:`merge_dicts`),
    any number of levels deep. A cycle is a ConfigError naming the chain."""
    path = Path(path).resolve()
    if path in _chain:
        raise ConfigError(f"{path}: 'base' cycle: {' -> '.join(str(p) for p in (*_chain, path))}")
    data = load_yaml(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
    return merge_dicts(load_yaml_with_bases(path.parent / base, (*_chain, path)), data)


def save_yaml(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
