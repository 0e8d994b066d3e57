"""Checkpointing with orbax (design §7.9): one checkpoint = train state + data position.

* ``<workdir>/checkpoints/<step>/state``: params, optimizer state, step, rng, skipped count
  (``ocp.args.StandardSave``; sharded arrays written by every process).
* ``<workdir>/checkpoints/<step>/data``: ``process_<i>-of-<n>.json``, each process's data
  iterator state (grain layout), captured when the save is *requested* (the write is async).

Saves are async every ``every`` steps, forced at the end and on SIGTERM; the last ``keep``
complete checkpoints are kept (orbax deletes old ones only after a newer one is finalised).
Restore walks the steps newest first: a checkpoint that fails to restore (truncated or missing
files) is logged, renamed to ``corrupt.<step>`` (kept for inspection, never deleted) and the
previous one is used. Restoring onto another mesh works because the target is an abstract state
carrying the *new* shardings.

:class:`CheckpointParams` reads only the parameters of another run's checkpoint: onto target
shardings (``init.from`` a workdir) or one tensor at a time on the host (export).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from hourllava_jax.config.base import ConfigError
from hourllava_jax.train.state import TrainState

# --------------------------------------------------------------------------------------------------
# Data-iterator state: one JSON file per process.
# --------------------------------------------------------------------------------------------------


class DataStateHandler(ocp.CheckpointHandler):
    """Writes/reads ``process_<i>-of-<n>.json`` (the layout of grain's handler) from a snapshot."""

    def save(self, directory: epath.Path, args: "DataStateSave") -> None:
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        (directory / name).write_text(json.dumps(args.state, indent=1))

    def restore(self, directory: epath.Path, args: "DataStateRestore | None" = None) -> dict[str, Any]:
        path = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if path.exists():
            return json.loads(path.read_text())
        # Saved with another process count: usable only if every process saved the same state
        # (true for position-only iterators such as InMemoryIterator, whose order is global).
        files = sorted(directory.glob("process_*-of-*.json"))
        states = [json.loads(f.read_text()) for f in files]
        if states and all(st == states[0] for st in states):
            return states[0]
        raise FileNotFoundError(f"{path} missing and the saved per-process states {[f.name for f in files]} "
                                "differ: this iterator cannot resume with a different process count")

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    state: dict[str, Any]


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    pass


def _all_processes(ok: bool) -> bool:
    if jax.process_count() == 1:
        return ok
    return bool(np.asarray(multihost_utils.process_allgather(np.array([int(ok)], np.int32))).min())


# --------------------------------------------------------------------------------------------------
# The manager.
# --------------------------------------------------------------------------------------------------


def _state_dict(state: TrainState) -> dict[str, Any]:
    # A plain dict at the top: orbax's tree metadata handles dicts/namedtuples, not dataclasses.
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


class Checkpointer:
    """Saves and restores ``(TrainState, data-iterator state)`` under ``directory``."""

    def __init__(self, directory: str | Path, *, every: int, keep: int, async_save: bool = True):
        # tensorstore wants absolute paths; gs:// and other URLs pass through as they are.
        is_url = "://" in str(directory)
        self.directory = epath.Path(directory) if is_url else epath.Path(Path(directory).resolve())
        self.every = every
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # leftovers of a save killed mid-way
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._last_saved: int | None = None

    def due(self, step: int) -> bool:
        """Whether the interval asks for a checkpoint at ``step``."""
        return step % self.every == 0

    def save(self, step: int, state: TrainState, data_state: dict[str, Any], *, force: bool = False) -> bool:
        """Starts a (possibly async) save if ``step`` is due or ``force``; returns whether it did."""
        # The interval is decided here (orbax's default policy also saves the first step seen).
        if not force and not self.due(step):
            return False
        if step == self._last_saved or step in self.manager.all_steps():
            return False  # e.g. the final save of a step the interval already saved
        args = ocp.args.Composite(state=ocp.args.StandardSave(_state_dict(state)), data=DataStateSave(dict(data_state)))
        saved = self.manager.save(step, args=args, force=True)
        if saved:
            self._last_saved = step
        return saved

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state: TrainState) -> tuple[TrainState, dict[str, Any], int] | None:
        """The newest checkpoint that restores, onto ``abstract_state``'s shardings; None if none.

        A checkpoint that fails is renamed ``corrupt.<step>`` so later saves are not blocked by
        its step number, and the next older one is tried.
        """
        target = _state_dict(abstract_state)
        for step in sorted(self.manager.all_steps(), reverse=True):
            result, error = None, None
            try:
                out = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), data=DataStateRestore())
                )
                state = TrainState(**out["state"])
                if int(jax.device_get(state.step)) != step:
                    raise ValueError(f"checkpoint {step} holds step {int(jax.device_get(state.step))}")
                result = (state, dict(out["data"]), step)
            except Exception as e:  # noqa: BLE001 - any failure means "unusable", fall back
                error = " ".join(f"{type(e).__name__}: {e}".split())  # one line, for logs
            # Every process must take the same checkpoint (later saves are collective).
            if _all_processes(error is None):
                return result
            error = error or "another process failed to restore it"
            if jax.process_index() == 0:
                print(f"WARNING: checkpoint {step} under {self.directory} is unusable ({error[:300]}); "
                      "falling back to the previous one", flush=True)
            self._quarantine(step)
        return None

    def _quarantine(self, step: int) -> None:
        multihost_utils.sync_global_devices(f"ckpt_quarantine_{step}_a")
        if jax.process_index() == 0:
            src = self.directory / str(step)
            dst, n = self.directory / f"corrupt.{step}", 1
            while dst.exists():  # the same step failed before (a later run re-saved it)
                dst, n = self.directory / f"corrupt.{step}.{n}", n + 1
            if src.exists():
                src.rename(dst)
        multihost_utils.sync_global_devices(f"ckpt_quarantine_{step}_b")
        self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


# --------------------------------------------------------------------------------------------------
# Parameters of another run's checkpoint (init.from a workdir, export).
# --------------------------------------------------------------------------------------------------


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


class CheckpointParams:
    """The parameters of one complete checkpoint of ``workdir`` (newest, or ``step``).

    ``shapes``: dotted parameter path -> ``(shape, dtype)`` from the checkpoint's metadata (no data
    read). Orbax stores nested-dict keys as strings, so paths are matched by their dotted form.
    ``read_group_bytes``: :meth:`read` fetches not-yet-read tensors together up to this many bytes
    (each orbax restore re-reads the whole tree's metadata, so one call per tensor costs seconds
    for a small model); the host holds at most one group.
    """

    def __init__(self, workdir: str | Path, step: int | None = None, *, read_group_bytes: int = 256 << 20):
        self._group_bytes = read_group_bytes
        self._fetched: dict[str, np.ndarray] = {}
        self._done: set[str] = set()
        directory = Path(workdir).resolve() / "checkpoints"
        # Only finalised steps are listed (a save killed mid-way leaves a tmp dir, not a step).
        steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / "state").is_dir()) \
            if directory.is_dir() else []
        steps = [s for s in steps if ocp.step.is_checkpoint_finalized(directory / str(s))]
        if not steps:
            raise ConfigError(f"{workdir}: no complete checkpoint under {directory}")
        if step is not None and step not in steps:
            raise ConfigError(f"step {step}: {directory} has no such complete checkpoint (it has {steps})")
        self.step = steps[-1] if step is None else step
        self.path = directory / str(self.step) / "state"
        self.description = f"checkpoint {self.step} of {workdir}"
        self._checkpointer = ocp.PyTreeCheckpointer()
        meta = self._checkpointer.metadata(self.path).item_metadata
        tree = getattr(meta, "tree", meta)["params"]
        flat = _flatten(tree)
        self.shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            _dotted(k): (tuple(m.shape), np.dtype(m.dtype)) for k, m in flat.items()}
        self._keys = {_dotted(k): k for k in flat}  # dotted -> the checkpoint's own path

    def _restore(self, wanted: dict[str, Any]) -> dict[str, Any]:
        """``dotted path -> RestoreArgs`` -> ``dotted path -> array``: a partial restore."""
        from flax import traverse_util

        item = traverse_util.unflatten_dict({self._keys[k]: 0 for k in wanted})
        args = traverse_util.unflatten_dict({self._keys[k]: a for k, a in wanted.items()})
        out = self._checkpointer.restore(self.path, args=ocp.args.PyTreeRestore(
            item={"params": item}, restore_args={"params": args}, partial_restore=True))
        return {_dotted(k): v for k, v in _flatten(out["params"]).items()}

    def restore(self, targets: dict[tuple, jax.ShapeDtypeStruct]):
        """Parameters of ``targets`` (abstract, with shardings) that the checkpoint has, each read
        straight into its target sharding. Returns a ``loaded_params.LoadedParams``."""
        from hourllava_jax.train.loaded_params import LoadedParams, check_shape

        wanted, paths = {}, {}
        for path, t in targets.items():
            key = _dotted(path)
            if key in self.shapes:
                check_shape(str(self.path.parents[2]), path, self.shapes[key][0], t.shape)
                wanted[key] = ocp.ArrayRestoreArgs(sharding=t.sharding, global_shape=t.shape, dtype=t.dtype)
                paths[key] = path
        got = self._restore(wanted) if wanted else {}
        unused = tuple(k for k in self.shapes if k not in wanted)
        return LoadedParams({paths[k]: v for k, v in got.items()}, unused, self.description)

    def _nbytes(self, key: str) -> int:
        shape, dtype = self.shapes[key]
        return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize

    def read(self, key: str) -> np.ndarray:
        """One parameter (dotted path) as a host array. The first read of a group also fetches
        further unread tensors up to ``read_group_bytes`` (class docstring)."""
        if key not in self.shapes:
            raise KeyError(f"{self.description}: no parameter {key}")
        if key not in self._fetched:
            group, size = [key], self._nbytes(key)
            for k in self.shapes:
                if k != key and k not in self._done and k not in self._fetched and size + self._nbytes(k) <= self._group_bytes:
                    group.append(k)
                    size += self._nbytes(k)
            self._fetched.update(self._restore({k: ocp.RestoreArgs(restore_type=np.ndarray) for k in group}))
        self._done.add(key)
        return np.asarray(self._fetched.pop(key))


def _flatten(tree: Any) -> dict[tuple, Any]:
    out: dict[tuple, Any] = {}

    def walk(node: Any, prefix: tuple) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*prefix, k))
        else:
            out[prefix] = node

    walk(tree, ())
    return out


# --------------------------------------------------------------------------------------------------
# SIGTERM: save at the current step, then exit.
# --------------------------------------------------------------------------------------------------


class PreemptionGuard:
    """Turns SIGTERM into a flag the loop polls after each step (saving inside a signal handler
    could interleave with a running step). With several processes, the flag is OR-ed across
    them so every process saves at the same step (the save is collective)."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._previous: Any = None

    def install(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self._flag.set()

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def requested(self) -> bool:
        local = self._flag.is_set()
        if jax.process_count() == 1:
            return local
        flags = multihost_utils.process_allgather(np.array([int(local)], np.int32))
        return bool(np.asarray(flags).max())
