"""Fixtures shared by the model tests: the tiny preset and one randomly initialised HourLlava."""

from __future__ import annotations

import pytest
from flax import nnx

from hourllava_jax.config import load_model_config
from hourllava_jax.model.hour_llava import HourLlava


@pytest.fixture(scope="module")
def cfg():
    return load_model_config("tiny")


@pytest.fixture(scope="module")
def model(cfg):
    return HourLlava(cfg, rngs=nnx.Rngs(0))
