"""A deterministic in-memory batch iterator with grain-style ``get_state()/set_state()``.

Stands in for the grain pipelines in tests and the demo. The state is the number of *global*
batches already produced (plus a fingerprint of the order), so it is the same on every process
and a run can resume with a different process count: the global order never depends on it.

Each process yields only its rows of the global batch (``float/int[G / P, ...]`` per key for
``P`` processes); ``train/distributed.py`` assembles them into one global ``jax.Array``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from hourllava_jax.config.tokens import IGNORE_INDEX


class InMemoryIterator(Iterator[dict[str, np.ndarray]]):
    """Iterates ``records`` (dict of arrays, leading dim = record) in fixed-size global batches.

    Epoch ``e`` visits records in ``permutation(seed, e)`` order (identity if not shuffled) and
    drops the tail that does not fill a batch. Infinite: epochs repeat.
    """

    def __init__(
        self,
        records: Mapping[str, np.ndarray],
        global_batch_size: int,
        *,
        process_index: int = 0,
        process_count: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ):
        sizes = {k: len(v) for k, v in records.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"records have different lengths: {sizes}")
        self._n = next(iter(sizes.values()))
        if global_batch_size % process_count:
            raise ValueError(f"global batch {global_batch_size} does not split over {process_count} processes")
        if self._n < global_batch_size:
            raise ValueError(f"{self._n} records cannot fill one batch of {global_batch_size}")
        self._records = {k: np.asarray(v) for k, v in records.items()}
        self._g = global_batch_size
        self._local = global_batch_size // process_count
        self._p = process_index
        self._shuffle = shuffle
        self._seed = seed
        self._batches_per_epoch = self._n // global_batch_size
        self._next = 0  # global batches produced so far

    def _order(self, epoch: int) -> np.ndarray:
        if not self._shuffle:
            return np.arange(self._n)
        return np.random.default_rng([self._seed, epoch]).permutation(self._n)

    def __next__(self) -> dict[str, np.ndarray]:
        epoch, b = divmod(self._next, self._batches_per_epoch)
        rows = self._order(epoch)[b * self._g : (b + 1) * self._g]
        mine = rows[self._p * self._local : (self._p + 1) * self._local]
        self._next += 1
        return {k: v[mine] for k, v in self._records.items()}

    def _fingerprint(self) -> dict[str, Any]:
        return {"num_records": self._n, "global_batch_size": self._g, "shuffle": self._shuffle, "seed": self._seed}

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable position: ``{"next_batch": int, ...fingerprint}``."""
        return {"next_batch": self._next, **self._fingerprint()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a position; a state from a different data order is an error, not a silent skip."""
        fp = self._fingerprint()
        diff = {k: (state.get(k), v) for k, v in fp.items() if state.get(k) != v}
        if diff:
            raise ValueError(f"data iterator state is for another dataset/order: {diff} (saved, current)")
        self._next = int(state["next_batch"])


def synthetic_records(
    num_records: int, seq_len: int, vocab_size: int, *, feature_shape: tuple[int, ...] = (), seed: int = 0
) -> dict[str, np.ndarray]:
    """Random LM records: ``input_ids int32[N, S]``, ``labels int32[N, S]`` (next token; the first
    quarter ``-100`` like a prompt) and, if ``feature_shape`` is given, ``features float32[N, *shape]``."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(num_records, seq_len + 1), dtype=np.int32)
    labels = ids[:, 1:].copy()
    labels[:, : seq_len // 4] = IGNORE_INDEX
    out = {"input_ids": ids[:, :-1], "labels": labels}
    if feature_shape:
        out["features"] = rng.standard_normal((num_records, *feature_shape), dtype=np.float32)
    return out
