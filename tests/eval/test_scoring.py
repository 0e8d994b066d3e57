"""Answer extraction on hand-written responses, log-likelihood argmax, and the prompt format."""

from __future__ import annotations

import math

import pytest

from hourllava_jax.eval import prompt, scoring
from hourllava_jax.eval.items import EvalItem, Subtitle

OPTIONS = ("a red car", "a blue bus", "a green bike", "a dog")

CASES = [
    # (response, expected letter, rule)
    ("B", "B", "bare"),
    (" (C) ", "C", "bare"),
    ("D.", "D", "bare"),
    ("[A]", "A", "bare"),
    ("E", None, "bare_out_of_range"),  # 4 options: E does not exist
    ("B. a blue bus", "B", "leading"),
    ("C) a green bike because it is green", "C", "leading"),
    ("A: the car", "A", "leading"),
    ("Answer: C", "C", "keyword"),
    ("The correct answer is (D).", "D", "keyword"),
    ("the answer is b", None, "no_match"),  # lower-case letters are never option letters
    ("First I thought option A, but the answer is B", "B", "keyword"),  # the last statement wins
    ("**Answer:** B<|im_end|>", "B", "keyword"),
    ("I would pick (B) here.", "B", "paren"),
    ("a green bike", "C", "text"),
    ("It is clearly a blue bus in the video.", "B", "text"),
    ("A dog is running.", "D", "text"),  # "A" is the article, the option text decides
    ("I think it is C", "C", "standalone"),
    ("I don't know", None, "no_match"),
    ("Either A or B", None, "no_match"),  # two candidates: ambiguous
    ("", None, "empty"),
    ("<|im_end|>", None, "empty"),
]


@pytest.mark.parametrize("response,letter,rule", CASES)
def test_extract(response: str, letter: str | None, rule: str):
    assert scoring.extract(response, OPTIONS) == (letter, rule)
    assert scoring.extract_letter(response, OPTIONS) == letter


def test_parse_failure_rate_of_the_table():
    failures = sum(scoring.extract_letter(r, OPTIONS) is None for r, _, _ in CASES)
    assert failures == 6


def test_argmax_letter():
    assert scoring.argmax_letter([-3.0, -1.0, -2.0]) == "B"
    assert scoring.argmax_letter([-1.0, -1.0]) == "A"  # ties: earliest
    assert scoring.argmax_letter([math.nan, -5.0, math.nan]) == "B"
    assert scoring.argmax_letter([-math.inf, -math.inf]) == "A"
    assert scoring.argmax_letter([math.nan]) is None
    assert scoring.argmax_letter([]) is None


def _item(**kw) -> EvalItem:
    base = dict(benchmark="b", id="1", video="/v.mp4", question="What moves?", options=("car", "bus"), answer="A")
    return EvalItem(**{**base, **kw})


def test_prompt_format():
    assert prompt.build_prompt(_item()) == (
        "What moves?\nA. car\nB. bus\nAnswer with the option's letter from the given choices directly.")


def test_prompt_keeps_subtitles_at_sampled_frames():
    subs = (Subtitle(0.0, 1.5, "hi"), Subtitle(2.0, 3.0, "there"), Subtitle(10.0, 11.0, "late"))
    item = _item(subtitles=subs)
    assert prompt.build_prompt(item, timestamps=[1.0, 2.5]) == (
        "This video's subtitles are listed below:\nhi\nthere\n"
        "What moves?\nA. car\nB. bus\nAnswer with the option's letter from the given choices directly.")
    assert "late" in prompt.build_prompt(item)  # no timestamps: every line
    assert "subtitles" not in prompt.build_prompt(item, timestamps=[5.0])  # none on screen: no header
