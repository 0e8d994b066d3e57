"""The multiple-choice prompt of LLaVA-Video style evaluation (lmms-eval `llava_vid` tasks).

    [This video's subtitles are listed below:
    <subtitle lines>
    ]<question>
    A. <option>
    B. <option>
    ...
    Answer with the option's letter from the given choices directly.

This is the user text after the video placeholder. The time instruction ("The video lasts for
... seconds, and N frames are uniformly sampled from it", design §4) and the chat template are
added by the inference pipeline, which knows the sampled frames; it passes their timestamps
here so that, with subtitles, only the lines shown during a sampled frame are kept (the
lmms-eval Video-MME "w/ subs" rule), which bounds the prompt length on hour-long videos.
"""

from __future__ import annotations

from collections.abc import Sequence

from hourllava_jax.eval.items import LETTERS, EvalItem, Subtitle

POST_PROMPT = "Answer with the option's letter from the given choices directly."
SUBTITLE_HEADER = "This video's subtitles are listed below:"


def format_options(options: Sequence[str]) -> str:
    """("x", "y") -> "A. x\\nB. y"."""
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def select_subtitles(subs: Sequence[Subtitle], timestamps: Sequence[float] | None) -> list[Subtitle]:
    """The lines on screen at any of `timestamps` (seconds), in order; all lines if None."""
    if timestamps is None:
        return list(subs)
    times = sorted(timestamps)
    return [s for s in subs if any(s.start <= t <= s.end for t in times)]


def build_prompt(item: EvalItem, timestamps: Sequence[float] | None = None) -> str:
    """The user text for `item` (str). `timestamps`: seconds of the sampled frames, used only
    to pick subtitle lines; None keeps every line."""
    parts = []
    subs = select_subtitles(item.subtitles, timestamps)
    if subs:
        parts.append(SUBTITLE_HEADER + "\n" + "\n".join(s.text for s in subs))
    parts += [item.question, format_options(item.options), POST_PROMPT]
    return "\n".join(parts)
