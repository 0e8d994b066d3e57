"""lmms-eval's scoring conventions, reported beside the strict score where they change the number.

The strict score (``eval/scoring.py``) counts an answer it cannot parse as wrong: a lower bound.
Some benchmarks' own scorers do otherwise, and the published numbers follow them:

* **LongVideoBench** (lmms-eval ``longvideobench/utils.py: parse_multi_choice_response``, commit
  75571cf, "same as the original LongVideoBench paper"): the answer prefixes "The best answer
  is", "The correct answer is", "The answer is", "The answer", "The best option is", "The
  correct option is", "Best answer:", "Best option:" are removed; the first capital A-E anywhere
  in the rest is the choice; a response with no such letter (or one of more than 10 words
  without one) gets a random choice among the options. lmms-eval draws from Python's global
  ``random`` (seeded once per run, so a draw depends on the run order); here the draw is seeded
  by the question's key and ``seed``, so it is the same for any sharding or resume. The expected
  score is the same; single draws differ.
* Video-MME, MLVU, LVBench: lmms-eval's ``extract_mcq_answer`` returns "" when it finds no
  letter and scores it wrong, as the strict score does (its rules for finding a letter differ
  in detail; nothing random): no second number.
* TempCompass: lmms-eval matches "A", "A." / "A)" prefixes or the full answer, and sends every
  other response to a GPT judge; a judge is not reproducible offline: no second number.

``lmms_eval_correct(record)`` returns the convention's verdict for one result record, or None when
the benchmark has no convention beside the strict score.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from hourllava_jax.eval.items import LETTERS

LVB_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer", "The best option is",
                "The correct option is", "Best answer:", "Best option:")
_LVB_LETTER = re.compile(r"[ABCDE]")
DEFAULT_SEED = 0

DESCRIPTIONS = {"longvideobench": "lmms-eval/LongVideoBench parser; unparsed -> seeded random option"}


def seeded_choice(key: str, n_options: int, seed: int = DEFAULT_SEED) -> str:
    """A letter among the first `n_options`, drawn from a generator seeded by (seed, key)."""
    return random.Random(f"{seed}/{key}").choice(LETTERS[:n_options])


def longvideobench_letter(text: str, n_options: int, key: str, seed: int = DEFAULT_SEED) -> tuple[str, bool]:
    """(letter, drawn at random) for a raw response under LongVideoBench's rule (module docstring)."""
    s = text.strip()
    for prefix in LVB_PREFIXES:
        s = s.replace(prefix, "")
    m = _LVB_LETTER.search(s)
    if m is None:  # also covers "more than 10 words and no letter"
        return seeded_choice(key, n_options, seed), True
    return m.group(0), False


def lmms_eval_correct(record: Mapping[str, Any], seed: int = DEFAULT_SEED) -> tuple[bool, bool] | None:
    """(correct, drawn at random) under the benchmark's lmms-eval convention, or None if it has none.

    Errors (missing or corrupt video, model failure) are wrong, as in the strict score. In
    log-likelihood mode the argmax never fails to parse, so the verdict is the strict one.
    """
    if record.get("benchmark") != "longvideobench":
        return None
    if record.get("status") != "ok":
        return False, False
    if record.get("mode") == "loglikelihood":
        return bool(record.get("correct")), False
    letter, drawn = longvideobench_letter(record.get("raw_output") or "", int(record["n_options"]), record["key"], seed)
    return letter == record.get("answer"), drawn
