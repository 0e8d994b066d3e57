"""The demo's settings in one frozen dataclass: datasets, answer format, model tweaks, recipe.

``demo_config(quick)`` returns the full run or the smoke run; docs/demo.md gives their budgets
and why these values.
"""

from __future__ import annotations

import dataclasses

from hourllava_jax.demo.data import SplitSpec
from hourllava_jax.demo.train import Recipe


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    train: SplitSpec
    held_out: SplitSpec
    recipe: Recipe
    answer_format: str = "word"  # dataset.ANSWER_FORMATS
    video_size: int = 64  # mp4 side in pixels (frames are resized to the tower's 112 on decode)
    vocab_size: int = 512  # tiny.yaml's vocabulary
    # Model overrides on configs/model/tiny.yaml. Plain attention: at these lengths the score
    # matrices are small, and the chunked CPU path only pays off for long memories.
    model_overrides: tuple[str, ...] = ("attention_impl=reference",)
    eval_batch_size: int = 16
    text_multiple: int = 16  # token padding bucket (all demo prompts share one bucket)
    seed: int = 0


def demo_config(*, quick: bool = False, seed: int = 0, lengths: tuple[int, ...] = (32,)) -> DemoConfig:
    """Full run: 80 training videos of 32 s (any haystack x any needle x any second by splicing,
    ``dataset.training_batches``), 60 held-out videos at five depths, 1500 steps per variant.
    32 s at 1 FPS keeps F = 8 frames (25 %) under uniform temporal forgetting.

    Several ``lengths`` (validated: 32, 48, 64): 8 training and 6 held-out videos per (length,
    depth); MemAug then costs ~2.2x the single-length run (docs/demo.md)."""
    depths = (0.0, 0.25, 0.5, 0.75, 1.0)
    held_depths = (0.1, 0.3, 0.5, 0.7, 0.9)
    if quick:
        return DemoConfig(
            train=SplitSpec(seed=seed, lengths=(32,), depths=depths, repeats=2),
            held_out=SplitSpec(seed=seed + 1, lengths=(32,), depths=held_depths, repeats=2),
            recipe=Recipe(steps=30, batch_size=8),
            seed=seed,
        )
    lengths = tuple(sorted(lengths))
    single = len(lengths) == 1
    return DemoConfig(
        train=SplitSpec(seed=seed, lengths=lengths, depths=depths, repeats=16 if single else 8),
        held_out=SplitSpec(seed=seed + 1, lengths=lengths, depths=held_depths, repeats=12 if single else 6),
        recipe=Recipe(steps=1500, batch_size=16),
        seed=seed,
    )
