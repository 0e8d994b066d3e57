"""Name-and-layout rules between Hugging Face tensors and NNX parameters.

A :class:`TensorRule` says: HF tensor ``hf_key``, transposed by ``perm``, then reshaped, is the
NNX ``Param`` at ``path``. Each model family lists its rules (``convert/*_keys.py``); the
functions here apply them in either direction, one tensor at a time, so a checkpoint is never
held twice in host memory.

Scanned layer stacks (``scan_layers``, model/scan.py) hold one Param per name with the layers on
a leading axis: the per-layer path ``(..., "layers", i, *rest)`` of a rule then resolves to the
stacked Param ``(..., "layers", *rest)``, slice ``i``. The rules stay per layer (the HF names),
so every key file serves both layouts.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Path = tuple[str | int, ...]


class ConversionError(ValueError):
    """A checkpoint does not fit the model: the message names the key or file."""


@dataclasses.dataclass(frozen=True)
class TensorRule:
    """HF tensor ``hf_key`` -> ``transpose(perm)`` -> reshape -> NNX Param at ``path``."""

    hf_key: str
    path: Path
    perm: tuple[int, ...] | None = None


def _path_str(path: Path) -> str:
    return ".".join(str(p) for p in path)


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a rule's tensor lives: the Param at ``path``, or its slice ``index`` of a stack."""

    path: Path
    index: int | None = None


def _resolve(rule: TensorRule, params: Mapping[Path, nnx.Variable]) -> Target:
    if rule.path in params:
        return Target(rule.path)
    for j, part in enumerate(rule.path):
        if isinstance(part, int) and rule.path[:j] + rule.path[j + 1 :] in params:
            return Target(rule.path[:j] + rule.path[j + 1 :], part)
    raise ConversionError(f"rule for {rule.hf_key} points at {_path_str(rule.path)}, which is not a parameter of the model (unstacked or scanned)")


def _params(model: nnx.Module) -> dict[Path, nnx.Variable]:
    """Every ``nnx.Param`` of ``model`` by its state path (live references, assignable)."""
    out: dict[Path, nnx.Variable] = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Param):
            out[tuple(path)] = node
    return out


def hf_to_jax(x: np.ndarray, rule: TensorRule, shape: tuple[int, ...]) -> np.ndarray:
    """Applies the rule's layout change to an HF tensor; errors name the key."""
    if rule.perm is not None:
        if x.ndim != len(rule.perm):
            raise ConversionError(f"{rule.hf_key}: expected a {len(rule.perm)}-d tensor, got shape {x.shape}")
        x = np.transpose(x, rule.perm)
    if int(np.prod(x.shape)) != int(np.prod(shape)):
        raise ConversionError(f"{rule.hf_key}: shape {x.shape} (after transpose) does not fit parameter {_path_str(rule.path)} of shape {shape}")
    return x.reshape(shape)


def jax_to_hf(y: np.ndarray, rule: TensorRule, hf_shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`hf_to_jax` given the HF tensor's shape."""
    if rule.perm is None:
        return y.reshape(hf_shape)
    permuted = tuple(hf_shape[p] for p in rule.perm)
    inv = np.argsort(rule.perm)
    return np.transpose(y.reshape(permuted), inv)


def check_rules(model: nnx.Module, rules: Iterable[TensorRule]) -> tuple[dict[Path, nnx.Variable], dict[str, Target]]:
    """Every Param (every slice of a stacked one) covered exactly once by the rules.

    Returns the Params by path and each rule's :class:`Target` by HF key.
    """
    params = _params(model)
    seen: dict[Target, str] = {}
    targets: dict[str, Target] = {}
    for r in rules:
        t = _resolve(r, params)
        if t in seen:
            where = _path_str(t.path) + ("" if t.index is None else f"[{t.index}]")
            raise ConversionError(f"parameter {where} is mapped twice ({seen[t]}, {r.hf_key})")
        if t.index is not None and not 0 <= t.index < params[t.path].get_value().shape[0]:
            raise ConversionError(f"{r.hf_key}: layer {t.index} is outside the stack {_path_str(t.path)} of {params[t.path].get_value().shape[0]}")
        seen[t] = r.hf_key
        targets[r.hf_key] = t
    covered = collections.Counter(t.path for t in seen)
    uncovered = []
    for p, var in params.items():
        stacked = any(t.path == p and t.index is not None for t in seen)
        want = var.get_value().shape[0] if stacked else 1
        if covered[p] != want:
            uncovered.append(_path_str(p) + (f" ({covered[p]} of {want} layers)" if stacked else ""))
    if uncovered:
        raise ConversionError(f"no checkpoint key maps to parameter(s) {uncovered[:8]}{' ...' if len(uncovered) > 8 else ''}")
    return params, targets


def _by_target(rules: list[TensorRule], targets: Mapping[str, Target]) -> list[list[TensorRule]]:
    """Rules grouped by target Param, in first-appearance order: one stack is filled at a time."""
    groups: dict[Path, list[TensorRule]] = {}
    for r in rules:
        groups.setdefault(targets[r.hf_key].path, []).append(r)
    return list(groups.values())


def load_tensors(
    model: nnx.Module,
    get_tensor: Callable[[str], np.ndarray],
    available: Iterable[str],
    rules: list[TensorRule],
    *,
    dtype: Any = None,
    strict: bool = True,
    place: Callable[[Path, np.ndarray], jax.Array] | None = None,
    source: str = "checkpoint",
) -> None:
    """Fills ``model``'s Params in place, reading one tensor at a time with ``get_tensor``.

    ``available`` are the keys the checkpoint holds: a rule key not among them is an error, and
    with ``strict`` so is a checkpoint key no rule uses. ``place(path, array)`` puts each array on
    devices (e.g. ``jax.device_put`` with the parameter's sharding); default: ``jnp.asarray``.
    """
    params, targets = check_rules(model, rules)
    available = set(available)
    missing = sorted(r.hf_key for r in rules if r.hf_key not in available)
    if missing:
        raise ConversionError(f"{source}: missing key(s) {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if strict:
        used = {r.hf_key for r in rules}
        unexpected = sorted(available - used)
        if unexpected:
            raise ConversionError(f"{source}: unexpected key(s) {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    for group in _by_target(rules, targets):
        path = targets[group[0].hf_key].path
        var = params[path]
        shape = tuple(var.get_value().shape)
        target_dtype = np.dtype(dtype if dtype is not None else var.get_value().dtype)
        if targets[group[0].hf_key].index is None:
            x = hf_to_jax(np.asarray(get_tensor(group[0].hf_key)), group[0], shape)
            x = x.astype(target_dtype) if x.dtype != target_dtype else x
        else:  # a scanned stack: every layer's tensor into its slice, placed once
            x = np.empty(shape, target_dtype)
            for r in group:
                x[targets[r.hf_key].index] = hf_to_jax(np.asarray(get_tensor(r.hf_key)), r, shape[1:])
        var.set_value(place(path, x) if place is not None else jnp.asarray(x))


def params_from_tensors(model: nnx.Module, tensors: Mapping[str, np.ndarray], rules: list[TensorRule], *, dtype: Any = None, strict: bool = True) -> None:
    """In-memory variant of :func:`load_tensors` (tests, small models)."""
    load_tensors(model, tensors.__getitem__, tensors.keys(), rules, dtype=dtype, strict=strict, source="tensors")


def iter_hf_tensors(
    model: nnx.Module,
    rules: list[TensorRule],
    hf_shapes: Mapping[str, tuple[int, ...]] | None = None,
    *,
    read: Callable[[Path], np.ndarray] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yields ``(hf_key, numpy array)`` in rule order, one parameter gathered at a time.

    ``hf_shapes`` gives the HF shape of each key; without it, the HF shape is the JAX shape
    permuted back (exact whenever a rule only transposes, which is every rule of this project).
    ``read(path)``, when given, supplies each parameter instead of ``model`` (which may then be
    abstract): e.g. one tensor at a time from a training checkpoint.
    """
    params, targets = check_rules(model, rules)
    last_path, last = None, None
    for r in rules:
        t = targets[r.hf_key]
        if read is None:
            value = params[t.path].get_value()
        else:
            if t.path != last_path:  # a stacked (scanned) tensor serves its layers' keys in turn
                last_path, last = t.path, np.asarray(read(t.path))
                want = tuple(params[t.path].get_value().shape)
                if last.shape != want:
                    raise ConversionError(f"parameter {_path_str(t.path)}: shape {last.shape} read, model expects {want}")
            value = last
        y = np.asarray(jax.device_get(value if t.index is None else value[t.index]))
        if hf_shapes is not None and r.hf_key in hf_shapes:
            shape = tuple(hf_shapes[r.hf_key])
        elif r.perm is not None:
            inv = np.argsort(r.perm)
            shape = tuple(y.shape[i] for i in inv)
        else:
            shape = y.shape
        yield r.hf_key, jax_to_hf(y, r, shape)


def tensors_from_params(model: nnx.Module, rules: list[TensorRule]) -> dict[str, np.ndarray]:
    """All HF tensors of ``model`` in memory (tests, small models)."""
    return dict(iter_hf_tensors(model, rules))
