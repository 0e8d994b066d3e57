"""The demo's settings in one frozen dataclass: datasets, the training recipe file, budget.

``demo_config(quick)`` returns the full run or the smoke run. The recipe itself (what trains,
learning rates, AdamW, batch) lives in ``configs/train/demo_needle.yaml``, which extends the
stage-3 recipe, so a recipe default changed elsewhere moves the demo only through that file.
"""

from __future__ import annotations

import dataclasses

from hourllava_jax.demo.data import SplitSpec

RECIPE = "demo_needle"  # configs/train/demo_needle.yaml


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Attributes:
      train: the training videos (short); every training sample is spliced from them.
      held_out: held-out videos of the training lengths (never seen in training).
      long_held_out: held-out videos far longer than anything trained on (None: skipped).
      steps / batch_size: optimizer steps per variant and sequences per step.
      spliced_samples: distinct spliced training samples written to the training feature store.
      long_train: (seconds, share) of spliced samples on concatenated longer haystacks.
    """

    train: SplitSpec
    held_out: SplitSpec
    long_held_out: SplitSpec | None
    steps: int = 600
    batch_size: int = 16
    spliced_samples: int = 6000
    # Longer haystacks in training (concatenated training videos): without them the model meets
    # more memory, more decayed tokens and later LLM positions first at evaluation (docs/demo.md).
    long_train: tuple[tuple[int, float], ...] = ((128, 0.1), (256, 0.05))
    recipe: str = RECIPE
    video_size: int = 64  # mp4 side in pixels (frames are resized to the tower's 112 on decode)
    vocab_size: int = 512  # tiny.yaml's vocabulary
    seed: int = 0


DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
HELD_DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)


def demo_config(*, quick: bool = False, seed: int = 0, lengths: tuple[int, ...] = (32,),
                long_lengths: tuple[int, ...] = (600, 3600)) -> DemoConfig:
    """Full run: 80 training videos of 32 s (spliced, some concatenated into 128 s and 256 s
    haystacks), 60 held-out videos of 32 s at five depths, and one held-out video per depth at
    each of ``long_lengths`` (10 minutes and 1 hour by default).
    32 s at 1 FPS keeps F = 8 frames (25 %) under uniform temporal forgetting; 1 hour keeps 512
    of 3,600. ``quick``: a smoke run (minutes) whose accuracies are at chance."""
    if quick:
        return DemoConfig(
            train=SplitSpec(seed=seed, lengths=(32,), depths=DEPTHS, repeats=2),
            held_out=SplitSpec(seed=seed + 1, lengths=(32,), depths=HELD_DEPTHS, repeats=2),
            long_held_out=None, steps=30, batch_size=8, spliced_samples=240, long_train=(), seed=seed,
        )
    lengths = tuple(sorted(lengths))
    single = len(lengths) == 1
    long = SplitSpec(seed=seed + 2, lengths=tuple(sorted(long_lengths)), depths=HELD_DEPTHS, repeats=1) if long_lengths else None
    return DemoConfig(
        train=SplitSpec(seed=seed, lengths=lengths, depths=DEPTHS, repeats=16 if single else 8),
        held_out=SplitSpec(seed=seed + 1, lengths=lengths, depths=HELD_DEPTHS, repeats=12 if single else 6),
        long_held_out=long, seed=seed,
    )
