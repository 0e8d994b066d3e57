"""The demo's settings in one frozen dataclass: datasets, answer format, model tweaks, recipe.

``demo_config(quick)`` returns the full run (<= 15 min on 2 uncontended cores) or the smoke run
(~2 min). The values are the ones prototyping found to learn within that budget (docs/demo.md).
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


def demo_config(*, quick: bool = False, seed: int = 0) -> DemoConfig:
    lengths = (32, 48, 64)
    if quick:
        return DemoConfig(
            train=SplitSpec(seed=seed, lengths=(32,), depths=(0.0, 0.5, 1.0), repeats=4),
            held_out=SplitSpec(seed=seed + 1, lengths=(32,), depths=(0.1, 0.5, 0.9), repeats=2),
            recipe=Recipe(steps=30, batch_size=8),
            seed=seed,
        )
    return DemoConfig(
        train=SplitSpec(seed=seed, lengths=lengths, depths=tuple(round(d, 3) for d in (0.0, 0.25, 0.5, 0.75, 1.0)), repeats=8),
        held_out=SplitSpec(seed=seed + 1, lengths=lengths, depths=(0.1, 0.3, 0.5, 0.7, 0.9), repeats=4),
        recipe=Recipe(),
        seed=seed,
    )
