"""Vision-tower gradients on long videos (issue 13, item 3): a sample with more frames than
``vision_grad_max_frames`` sends no gradient into the tower (the release's
``encode_images_offload`` under ``torch.no_grad``); other samples of the same batch do, unchanged."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hourllava_jax.config import load_model_config
from hourllava_jax.model.hour_llava import HourLlava, loss_fn
from hourllava_jax.data.collate import Sample, collate
from hourllava_jax.memory.layout import video_layout


def _pixel_batch(cfg, frames: list[int]):
    """Raw-video batch: ``pixels`` float32[B, U, S, S, 3] with ``frames[i]`` real frames in row i."""
    rng = np.random.default_rng(0)
    s = cfg.vision.image_size
    samples = []
    for t in frames:
        ids = rng.integers(3, cfg.llm.vocab_size, 24).astype(np.int32)
        ids[2] = cfg.image_token_id
        labels = np.where(np.arange(24) > 12, ids, -100).astype(np.int32)
        px = rng.standard_normal((t, s * s, 3)).astype(np.float32)
        samples.append(Sample(ids, labels, px, video_layout(t, cfg.memory)))
    batch = collate(samples, image_token_id=cfg.image_token_id, unit_multiple=4)
    f = batch.pop("features")
    batch["pixels"] = f.reshape(f.shape[:2] + (s, s, 3))
    return {k: jnp.asarray(v) for k, v in batch.items()}


def _tower_grads(limit: int, batch, row: int):
    model = HourLlava(load_model_config("tiny"), rngs=nnx.Rngs(0), vision_grad_max_frames=limit)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def row_loss(p):
        _, aux = loss_fn(nnx.merge(graphdef, p, rest), batch)
        return aux["sample_ce"][row] / aux["sample_tokens"][row]

    return jax.jit(jax.grad(row_loss))(params)


def test_long_samples_stop_the_tower_gradient_per_sample():
    cfg = load_model_config("tiny")
    batch = _pixel_batch(cfg, [3, 2])  # row 0: 3 frames (over a limit of 2), row 1: 2 frames; U = 4
    assert batch["pixels"].shape[1] == 4
    tower = lambda g: jax.tree.leaves(g["vision_tower"])  # noqa: E731
    long_on, long_off = _tower_grads(2, batch, 0), _tower_grads(0, batch, 0)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in tower(long_on))  # no gradient into SigLIP
    assert any(float(jnp.abs(x).max()) > 0 for x in tower(long_off))  # 0: train through all frames
    # The rest of the model still learns from the long sample, identically.
    for a, b in zip(jax.tree.leaves(long_on["llm"]), jax.tree.leaves(long_off["llm"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    short_on, short_off = _tower_grads(2, batch, 1), _tower_grads(0, batch, 1)
    for a, b in zip(tower(short_on), tower(short_off), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # the short sample trains the tower as before
    assert any(float(jnp.abs(x).max()) > 0 for x in tower(short_on))


def test_a_batch_within_the_limit_traces_no_extra_stop_gradient():
    cfg = load_model_config("tiny")
    batch = _pixel_batch(cfg, [3, 2])

    def count(limit):
        model = HourLlava(cfg, rngs=nnx.Rngs(0), vision_grad_max_frames=limit)
        return str(jax.make_jaxpr(lambda b: loss_fn(model, b)[0])(batch)).count("stop_gradient")

    assert count(4) == count(0) < count(2)  # U = 4: no sample can be over a limit of 4
