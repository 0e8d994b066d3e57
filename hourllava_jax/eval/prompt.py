"""The user text of a multiple-choice question, per benchmark, as lmms-eval writes it.

Published long-video numbers (LLaVA-Video's, and the Hour-LLaVA table it is compared with) come
from lmms-eval, whose prompt differs per task. ``build_prompt(item, timestamps, style)`` returns
the text after the video placeholder; the time instruction and the chat template are added by the
inference pipeline (design §4), which knows the sampled frames.

Styles (``--prompt``):

* ``llava_vid`` (default): lmms-eval's prompt for the LLaVA-Video model family (its
  ``llava_vid`` task kwargs where a task has them, the task default otherwise). Hour-LLaVA is
  built on LLaVA-Video, so this is the comparable one.
* ``lmms_default``: lmms-eval's generic task default (differs from ``llava_vid`` only on
  Video-MME without subtitles).
* ``llava``: this project's earlier single prompt for every benchmark (options as "A. x", then
  "Answer with the option's letter from the given choices directly.").

Strings are taken verbatim from lmms-eval commit 75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3
(2026-08-06), ``lmms_eval/tasks/``:

* ``videomme/utils.py: videomme_doc_to_text`` + ``videomme/videomme.yaml`` post prompts;
  ``videomme_doc_to_text_subtitle`` (its post prompt is hard-coded, the yaml's is unused);
* ``longvideobench/utils.py: longvideobench_doc_to_text`` + ``longvideobench_val_v.yaml``;
* ``mlvu/utils.py: mlvu_doc_to_text`` + ``mlvu/mlvu_dev.yaml``;
* ``lvbench/utils.py: lvbench_doc_to_text`` + ``lvbench/lvbench.yaml``;
* ``tempcompass/utils.py: tempcompass_doc_to_text_multi_choice`` + ``_default_template_yaml``.

The readers split each benchmark's question from its options (``EvalItem.options`` hold bare
texts), so the options are re-lettered here in the benchmark's own published layout: "A. x"
(Video-MME's ``options`` field, TempCompass's question text, LongVideoBench's doc_to_text),
"(A) x" (LVBench's question text; MLVU, see below).

MLVU: lmms-eval's ``sy1998/MLVU_dev`` rows carry the options inside ``question``; we read the
``MLVU/MVLU`` json files (same questions, ``candidates`` separate, per MLVU's authors) and
render them as "(A) x" lines, the layout of MLVU's own evaluation and the one the post prompt's
trailing "Best option: (" expects. The exact line layout inside that parquet field could not be
checked here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from hourllava_jax.eval.items import LETTERS, EvalItem, Subtitle

Style = Literal["llava_vid", "lmms_default", "llava"]
STYLES: tuple[str, ...] = ("llava_vid", "lmms_default", "llava")

# --- the project's earlier prompt (--prompt llava) ----------------------------------------------
POST_PROMPT = "Answer with the option's letter from the given choices directly."
SUBTITLE_HEADER = "This video's subtitles are listed below:"

# --- lmms-eval strings (commit above) -----------------------------------------------------------
VIDEOMME_OPTION_PROMPT = ("Select the best answer to the following multiple-choice question based on the video and "
                          "the subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
VIDEOMME_POST = {"lmms_default": "\nAnswer with the option's letter from the given choices directly.",
                 "llava_vid": "The best answer is:"}
VIDEOMME_SUB_HEADER = "This video's subtitles are listed below: \n"  # sic: space before the newline
VIDEOMME_NO_SUBS = "No subtitles available"
LVB_POST = "Answer with the option's letter from the given choices directly.\n"
MLVU_POST = "\nOnly give the best option.\nBest option: ("
LVBENCH_POST = "\nAnswer the question with the option letter"  # sic: no final period (lvbench.yaml)
TEMPCOMPASS_POST = "\nPlease directly give the best option:"

# Greedy generation budget of each task yaml's generation_kwargs (16 where a yaml sets none:
# TempCompass, whose budget is the model wrapper's, and needle).
MAX_NEW_TOKENS = {"videomme": 16, "videomme_sub": 16, "longvideobench": 32, "mlvu": 16, "lvbench": 16}
DEFAULT_MAX_NEW_TOKENS = 16


def format_options(options: Sequence[str], paren: bool = False) -> str:
    """("x", "y") -> "A. x\\nB. y" (or "(A) x\\n(B) y" with ``paren``)."""
    return "\n".join(f"({LETTERS[i]}) {o}" if paren else f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def select_subtitles(subs: Sequence[Subtitle], timestamps: Sequence[float] | None) -> list[Subtitle]:
    """The lines on screen at any of `timestamps` (seconds), in subtitle order; all if None.

    A line covers ``start <= t < end`` (lmms-eval tests frame indices against the line's frame
    span the same half-open way). lmms-eval samples its own frames (``frame_num`` uniformly over
    the file); we pass the frames the model actually sees.
    """
    if timestamps is None:
        return list(subs)
    times = sorted(timestamps)
    return [s for s in subs if any(s.start <= t < s.end for t in times)]


def _llava(item: EvalItem, timestamps: Sequence[float] | None) -> str:
    parts = []
    subs = select_subtitles(item.subtitles, timestamps)
    if subs:
        parts.append(SUBTITLE_HEADER + "\n" + "\n".join(s.text for s in subs))
    parts += [item.question, format_options(item.options), POST_PROMPT]
    return "\n".join(parts)


def _videomme(item: EvalItem, timestamps: Sequence[float] | None, style: str) -> str:
    question = item.question + "\n" + format_options(item.options)
    if item.benchmark != "videomme_sub":
        return VIDEOMME_OPTION_PROMPT + "\n" + question + "\n" + VIDEOMME_POST[style]
    # lmms-eval: no subtitle file -> "No subtitles available"; a file none of whose lines is on
    # screen at a sampled frame -> an empty block.
    if item.subtitles:
        subtitle = "\n".join(s.text for s in select_subtitles(item.subtitles, timestamps))
    else:
        subtitle = VIDEOMME_NO_SUBS
    return VIDEOMME_SUB_HEADER + subtitle + "\n" + VIDEOMME_OPTION_PROMPT + "\n" + question + "\n" + "The best answer is:"


def build_prompt(item: EvalItem, timestamps: Sequence[float] | None = None, style: Style = "llava_vid") -> str:
    """The user text for `item` (str) in `style` (module docstring). `timestamps`: seconds of
    the sampled frames, used only to pick subtitle lines; None keeps every line. Benchmarks that
    lmms-eval does not define (needle) use the ``llava`` prompt in every style."""
    if style not in STYLES:
        raise ValueError(f"prompt style must be one of {STYLES}, got {style!r}")
    b = item.benchmark
    if style == "llava" or b not in LMMS_BENCHMARKS:
        return _llava(item, timestamps)
    if b in ("videomme", "videomme_sub"):
        return _videomme(item, timestamps, style)
    if b == "longvideobench":
        return f"{item.question}\n{format_options(item.options)}\n{LVB_POST}"
    if b == "mlvu":
        return item.question + "\n" + format_options(item.options, paren=True) + MLVU_POST
    if b == "lvbench":
        return item.question + "\n" + format_options(item.options, paren=True) + LVBENCH_POST
    return item.question + "\n" + format_options(item.options) + TEMPCOMPASS_POST  # tempcompass


LMMS_BENCHMARKS = frozenset({"videomme", "videomme_sub", "longvideobench", "mlvu", "lvbench", "tempcompass"})
