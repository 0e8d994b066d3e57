"""Deterministic split of evaluation items into shards, balanced by video duration.

Work is proportional to video length (decoding and encoding dominate; the questions of a video
share one encoding), so the unit of work is a video: all questions of a video go to the same
shard, consecutively, so the answerer encodes it once. Videos are assigned by greedy
longest-processing-time (LPT): sort by cost, descending, and give each to the least-loaded
shard; LPT is within 4/3 of the optimal makespan. Ties break on the video key and the lowest
shard index, so every process computes the same plan from the same items with no
communication.

Shard numbering: process p of P with S shards per process owns shards p*S .. p*S + S-1 of P*S.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from pathlib import Path

from hourllava_jax.eval.items import EvalItem

# Cost of a video whose duration is unknown and cannot be probed (e.g. missing): it will fail
# fast, so it should not crowd a shard.
UNKNOWN_COST = 1.0


def probe_duration(path: str) -> float | None:
    """Container duration in seconds from the header (no decoding), or None if unreadable."""
    if not Path(path).is_file():
        return None
    try:
        import av  # lazy: only needed when annotations carry no durations

        with av.open(path) as c:
            if c.duration is not None:
                return c.duration / 1_000_000  # av.time_base is microseconds
            s = c.streams.video[0] if c.streams.video else None
            if s is not None and s.duration is not None and s.time_base is not None:
                return float(s.duration * s.time_base)
    except Exception:  # any demuxer error: unreadable = unknown cost, the runner reports it
        return None
    return None


def video_costs(items: Sequence[EvalItem], probe: Callable[[str], float | None] = probe_duration) -> dict[str, float]:
    """Cost per video group: the annotated duration, else the probed one, else UNKNOWN_COST."""
    costs: dict[str, float] = {}
    for item in items:
        if item.group in costs:
            continue
        d = item.duration if item.duration is not None else probe(item.video)
        costs[item.group] = float(d) if d is not None and d > 0 else UNKNOWN_COST
    return costs


def plan_shards(items: Sequence[EvalItem], num_shards: int,
                costs: dict[str, float] | None = None) -> list[list[EvalItem]]:
    """Splits `items` into `num_shards` lists (LPT over videos).

    Args:
      items: the benchmark's items, any order.
      num_shards: number of shards (int >= 1).
      costs: video group -> cost (seconds); default `video_costs(items)`.
    Returns:
      list[list[EvalItem]] of length num_shards; each shard's items are grouped by video, videos
      in descending cost order, questions in their original order.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    costs = video_costs(items) if costs is None else costs
    groups: dict[str, list[EvalItem]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    order = sorted(groups, key=lambda g: (-costs.get(g, UNKNOWN_COST), g))
    heap = [(0.0, s) for s in range(num_shards)]
    shards: list[list[EvalItem]] = [[] for _ in range(num_shards)]
    for g in order:
        load, s = heapq.heappop(heap)
        shards[s].extend(groups[g])
        heapq.heappush(heap, (load + costs.get(g, UNKNOWN_COST), s))
    return shards


def shards_of_process(process_index: int, process_count: int, shards_per_process: int = 1) -> list[int]:
    """The global shard indices owned by one process."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return list(range(process_index * shards_per_process, (process_index + 1) * shards_per_process))
