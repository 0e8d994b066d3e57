"""Shared helpers for the training tests: the tiny config, in-process stepping, subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from hourllava_jax.cli import train as cli_train
from hourllava_jax.parallel.mesh import make_mesh
from hourllava_jax.parallel.rules import use_rules
from hourllava_jax.train import distributed
from hourllava_jax.train.config import TrainConfig, load_train_config
from hourllava_jax.train.optimizer import trainable_mask
from hourllava_jax.train.state import create_train_state
from hourllava_jax.train.step import compile_step, make_train_step
import standin  # this folder: the stand-in model and its data
from standin import build_data

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "train" / "standin.yaml"
# launch/train.py with the stand-in builders (hourllava_jax.cli.train.main(builders=...)).
STANDIN_MAIN = Path(__file__).resolve().parent / "standin_main.py"


def build_model_and_loss(cfg: TrainConfig):
    """The stand-in for ``model: standin``, Hour-LLaVA (the entry point's builder) otherwise."""
    return (standin if cfg.model == "standin" else cli_train).build_model_and_loss(cfg)


def tiny_cfg(*overrides: str) -> TrainConfig:
    return load_train_config(TINY, list(overrides))


def host_tree(tree):
    """Fully-addressable trees -> numpy (for bitwise comparisons)."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def run_steps(cfg: TrainConfig, mesh, n: int, *, batches=None, init_state=None):
    """Initialises (or takes ``init_state``) and runs ``n`` compiled steps on ``mesh``.

    Returns ``(metrics per step (host dicts), final state, initial params on host, Initialised)``.
    """
    factory, loss_fn = build_model_and_loss(cfg)
    with use_rules(cfg.rules):
        ini = create_train_state(cfg, mesh, factory)
        state = ini.init() if init_state is None else init_state
        params0 = host_tree(state.params)
        mask = trainable_mask(nnx.to_pure_dict(ini.parts.param_template), cfg.optim)
        step = make_train_step(ini.parts, ini.parts.rest, ini.tx, loss_fn, mask,
                               compute_dtype=cfg.compute_dtype, grad_accum_steps=cfg.grad_accum_steps,
                               loss_reduction=cfg.loss_reduction, loss_group_size=cfg.loss_group_size)
        if batches is None:
            it = build_data(cfg, jax.process_index(), jax.process_count())
            batches = [next(it) for _ in range(n)]
        spec = {k: jax.ShapeDtypeStruct((v.shape[0] * jax.process_count(), *v.shape[1:]), v.dtype) for k, v in batches[0].items()}
        compiled = compile_step(step, mesh, ini.abstract_state, ini.shardings, spec, verbose=False)
        out = []
        for b in batches[:n]:
            state, m = compiled(state, distributed.global_batch(b, mesh))
            out.append({k: np.asarray(v).item() for k, v in jax.device_get(m).items()})
    return out, state, params0, ini


def one_device_mesh():
    return make_mesh({"data": 1}, devices=jax.devices()[:1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(num_cpu_devices: int) -> dict[str, str]:
    """Environment for a child JAX process with ``num_cpu_devices`` CPU devices and the shared cache."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_cpu_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = str(jax.config.jax_compilation_cache_dir or REPO / ".jax_cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def launch_train(workdir: Path, *args: str, num_cpu_devices: int = 8, **popen_kw) -> subprocess.Popen:
    cmd = [sys.executable, str(STANDIN_MAIN), "--config", str(TINY), "--workdir", str(workdir), *args]
    return subprocess.Popen(cmd, env=subprocess_env(num_cpu_devices), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen_kw)
