"""The loop in-process: metrics records, checkpoints, profiler trace, resume, config errors."""

from __future__ import annotations

import jax
import pytest
from train_harness import tiny_cfg

from hourllava_jax.parallel.mesh import make_mesh
from hourllava_jax.train.checkpoint import Checkpointer
from hourllava_jax.train.loop import train
from hourllava_jax.train.metrics import read_metrics
from standin import build_data, build_model_and_loss


def test_train_logs_checkpoints_profiles_and_resumes(tmp_path):
    cfg = tiny_cfg("num_steps=5", "checkpoint.every=2", "profile.start_step=1", "profile.num_steps=1",
                   "peak_flops_per_device=1.0e+11")
    factory, loss_fn = build_model_and_loss(cfg)
    mesh = make_mesh({"data": 2, "fsdp": 2}, devices=jax.devices()[:4])
    res = train(cfg, tmp_path, factory, loss_fn, build_data, mesh=mesh, stop_after=3)
    assert res.resumed_from is None and not res.preempted and int(res.state.step) == 3
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert sorted(recs) == [1, 2, 3]
    r = recs[3]
    for key in ("loss", "grad_norm", "lr/llm", "lr/memaug", "lr/projector", "lr/image_newline", "tokens_per_s",
                "step_time_s", "mfu", "skipped"):
        assert key in r, key
    assert "lr/vision_tower" not in r  # frozen in stage 3
    assert r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["skipped"] == 0
    assert list((tmp_path / "profile").rglob("*.xplane.pb")), "no profiler trace"
    assert list((tmp_path / "tensorboard").iterdir()) and (tmp_path / "train_config.yaml").is_file()
    ck = Checkpointer(tmp_path / "checkpoints", every=2, keep=3)
    assert ck.all_steps() == [2, 3]  # every 2, plus the end of this run
    ck.close()

    res = train(cfg, tmp_path, factory, loss_fn, build_data, mesh=mesh)
    assert res.resumed_from == 3 and int(res.state.step) == 5
    assert sorted(read_metrics(tmp_path / "metrics.jsonl")) == [1, 2, 3, 4, 5]


def test_batch_that_does_not_split_is_a_clear_error(tmp_path):
    cfg = tiny_cfg("global_batch_size=6")
    factory, loss_fn = build_model_and_loss(cfg)
    with pytest.raises(ValueError, match="does not split over the 4 batch shards"):
        train(cfg, tmp_path, factory, loss_fn, build_data, mesh=make_mesh({"data": 4}, devices=jax.devices()[:4]))
