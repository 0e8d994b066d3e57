"""Duration-balanced, deterministic, video-grouped sharding."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hourllava_jax.eval import sharding
from hourllava_jax.eval.items import EvalItem


def _items(durations: dict[str, float], per_video: int = 2) -> list[EvalItem]:
    return [EvalItem("b", f"{v}-{q}", f"/videos/{v}.mp4", "q", ("x", "y"), "A", video_id=v, duration=d)
            for v, d in durations.items() for q in range(per_video)]


def test_lpt_balances_and_groups_videos():
    durations = {"v1": 100.0, "v2": 70.0, "v3": 60.0, "v4": 40.0, "v5": 30.0}
    shards = sharding.plan_shards(_items(durations), 2)
    videos = [list(dict.fromkeys(x.video_id for x in s)) for s in shards]
    # LPT, longest first to the least loaded: v1->0 (100), v2->1 (70), v3->1 (130), v4->0 (140),
    # v5->1 (160).
    assert videos == [["v1", "v4"], ["v2", "v3", "v5"]]
    loads = [sum(durations[v] for v in vs) for vs in videos]
    assert loads == [140.0, 160.0]
    # Questions of a video are consecutive and in their original order.
    assert [x.id for x in shards[0]] == ["v1-0", "v1-1", "v4-0", "v4-1"]


def test_plan_is_a_partition_and_deterministic():
    rng = random.Random(0)
    durations = {f"v{i:03d}": rng.uniform(10, 3600) for i in range(60)}
    items = _items(durations, per_video=3)
    for n in (1, 2, 3, 8):
        shards = sharding.plan_shards(items, n)
        keys = [x.key for s in shards for x in s]
        assert sorted(keys) == sorted(x.key for x in items) and len(keys) == len(set(keys))
        owners = {}
        for i, s in enumerate(shards):
            for x in s:
                assert owners.setdefault(x.video_id, i) == i  # a video never spans two shards
        # Same input order -> identical plan (every process computes it independently).
        assert [[x.key for x in s] for s in sharding.plan_shards(items, n)] == [[x.key for x in s] for s in shards]
        loads = [sum(durations[v] for v in {x.video_id for x in s}) for s in shards]
        assert max(loads) <= sum(loads) / n + max(durations.values())  # LPT bound


def test_unknown_durations_are_probed(tmp_path: Path, make_video):
    short = make_video(tmp_path / "short.mp4", n_frames=2)
    long = make_video(tmp_path / "long.mp4", n_frames=6)
    items = [EvalItem("b", n, str(p), "q", ("x", "y"), "A", video_id=n) for n, p in
             (("s", short), ("l", long), ("m", tmp_path / "missing.mp4"))]
    costs = sharding.video_costs(items)
    assert costs == {"s": pytest.approx(2.0), "l": pytest.approx(6.0), "m": sharding.UNKNOWN_COST}


def test_process_shard_indices():
    assert sharding.shards_of_process(1, 3, 2) == [2, 3]
    with pytest.raises(ValueError):
        sharding.shards_of_process(3, 3)
    with pytest.raises(ValueError):
        sharding.plan_shards([], 0)
