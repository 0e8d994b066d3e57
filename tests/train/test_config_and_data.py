"""Stage configs against the design §3.1 table; the in-memory data iterator; metrics helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from train_harness import REPO

from hourllava_jax.config import load_model_config
from hourllava_jax.config.base import ConfigError
from hourllava_jax.train.config import load_train_config
from hourllava_jax.train.data_iter import InMemoryIterator, synthetic_records
from hourllava_jax.train.metrics import MetricsLogger, mfu, read_metrics

TRAINS = {1: {"memaug"}, 2: {"vision_tower", "projector", "memaug", "llm", "image_newline"},
          3: {"projector", "memaug", "llm", "image_newline"}}


@pytest.mark.parametrize("size", ["3b", "7b"])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_configs_follow_spec(size, stage):
    cfg = load_train_config(REPO / "configs" / "train" / f"{size}_stage{stage}.yaml")
    assert cfg.stage == stage and cfg.model == f"hourllava_{size}"
    load_model_config(cfg.model)  # the preset exists
    trained = {m for m, o in cfg.optim.modules.items() if o.trainable}
    assert trained == TRAINS[stage]
    lrs = {m: o.lr for m, o in cfg.optim.modules.items() if o.trainable}
    expected = {1: {"memaug": 1e-4},
                2: {"vision_tower": 5e-6, "projector": 1e-4, "memaug": 1e-4, "llm": 2e-5 if size == "3b" else 1e-5},
                3: {"projector": 1e-4, "memaug": 1e-4, "llm": 2e-5}}[stage]
    for m, lr in expected.items():
        assert lrs[m] == lr, m
    assert cfg.global_batch_size == (256 if (size, stage) == ("7b", 3) else 128)
    assert cfg.max_length == 32768 and cfg.compute_dtype == "bfloat16" and cfg.remat != "none"
    o = cfg.optim
    assert (o.warmup_ratio, o.schedule, o.grad_clip, o.weight_decay) == (0.03, "cosine", 1.0, 0.0)
    assert cfg.forgetting == ("spatial" if stage == 1 else "spatial+temporal")
    # Each stage starts from its predecessor (design §3): the composed start, then the previous workdir.
    llm = {"3b": "qwen25-3b", "7b": "qwen2-7b"}[size]  # Qwen2.5-3B-Instruct / Qwen2-7B-Instruct (design §1)
    assert cfg.init.source == (f"ckpt/{llm}-s0" if stage == 1 else f"runs/{size}_stage{stage - 1}")
    cfg.data.check_sources()
    assert cfg.data.image_root  # every stage trains on image records (design §3.1 table)
    # One epoch over the listed files, num_steps derived at launch (the release); the 3:1
    # long:short mixture (design §5) is 3b_stage3_mix.yaml (tests/train/test_recipe.py).
    assert cfg.data.record_weights == () and cfg.data.num_epochs == 1 and cfg.num_steps is None


def test_record_weights_must_match_the_record_files():
    tiny = REPO / "configs" / "train" / "tiny.yaml"
    base = ["data.tokenizer=tok", "data.feature_store=store", "data.records=[a.jsonl,b.jsonl]"]
    load_train_config(tiny, [*base, "data.record_weights=[3,1]"]).data.check_sources()
    for bad, msg in [("data.record_weights=[1]", "1 weights for 2 record files"),
                     ("data.record_weights=[1,0]", "positive")]:
        with pytest.raises(ConfigError, match=msg):
            load_train_config(tiny, [*base, bad]).data.check_sources()


def test_overrides_and_errors():
    tiny = REPO / "configs" / "train" / "standin.yaml"
    cfg = load_train_config(tiny, ["optim.modules.llm.lr=0.5", "mesh.fsdp=2", "num_steps=3"])
    assert cfg.optim.modules["llm"].lr == 0.5 and cfg.mesh["fsdp"] == 2 and cfg.num_steps == 3
    for bad, msg in [("grad_accum_steps=3", "divide"), ("checkpoint.keep=1", "keep"), ("stage=4", "stage"),
                     ("mesh.pipeline=2", "unknown")]:
        with pytest.raises(ConfigError, match=msg):
            load_train_config(tiny, [bad])


def test_iterator_is_deterministic_and_resumable():
    recs = synthetic_records(20, 4, 16, feature_shape=(2, 3), seed=1)
    a = InMemoryIterator(recs, 4, seed=3)
    seen = [next(a)["input_ids"] for _ in range(7)]  # crosses an epoch (5 batches per epoch)
    epoch0 = np.concatenate(seen[:5])
    assert sorted(map(tuple, epoch0)) == sorted(map(tuple, recs["input_ids"]))  # a permutation
    assert not np.array_equal(seen[0], seen[5])  # a new order in epoch 1
    b = InMemoryIterator(recs, 4, seed=3)
    [next(b) for _ in range(3)]
    state = json.loads(json.dumps(b.get_state()))
    c = InMemoryIterator(recs, 4, seed=3)
    c.set_state(state)
    for s in seen[3:]:
        np.testing.assert_array_equal(next(c)["input_ids"], s)
    with pytest.raises(ValueError, match="another dataset"):
        InMemoryIterator(recs, 4, seed=4).set_state(state)


def test_iterator_process_split_is_the_global_batch():
    recs = synthetic_records(16, 4, 16, seed=0)
    whole = InMemoryIterator(recs, 8, seed=0)
    parts = [InMemoryIterator(recs, 8, process_index=p, process_count=2, seed=0) for p in range(2)]
    for _ in range(3):
        np.testing.assert_array_equal(np.concatenate([next(p)["labels"] for p in parts]), next(whole)["labels"])


def test_metrics_jsonl(tmp_path):
    log = MetricsLogger(tmp_path, total_steps=3, tensorboard=True, progress=False)
    log.log(1, {"loss": np.float32(2.5), "lr/llm": 1e-5, "finite": True})
    log.log(2, {"loss": float("nan")})
    log.log(1, {"loss": 1.5})
    log.close()
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert recs[1] == {"step": 1, "loss": 1.5} and recs[2]["loss"] == "nan"
    assert any((tmp_path / "tensorboard").iterdir())
    assert mfu(1e12, 0.5, 4e12) == 0.5 and mfu(1e12, 0.5, 0.0) == 0.0
