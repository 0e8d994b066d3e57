"""Golden strings: each benchmark's prompt is lmms-eval's (commit 75571cf, see eval/prompt.py),
written out literally here so a change to the table cannot pass unnoticed."""

from __future__ import annotations

import pytest

from hourllava_jax.eval.items import EvalItem, Subtitle
from hourllava_jax.eval.prompt import build_prompt, select_subtitles


def _item(benchmark: str, options=("red", "green", "blue", "yellow"), subs=()) -> EvalItem:
    return EvalItem(benchmark, "q1", "/v.mp4", "What colour is the car?", tuple(options), "A", subtitles=tuple(subs))


VIDEOMME_HEAD = ("Select the best answer to the following multiple-choice question based on the video and the subtitles. "
                 "Respond with only the letter (A, B, C, or D) of the correct option.\n")
OPTS_DOT = "A. red\nB. green\nC. blue\nD. yellow"
OPTS_PAREN = "(A) red\n(B) green\n(C) blue\n(D) yellow"

GOLDEN = {
    ("videomme", "llava_vid"): VIDEOMME_HEAD + "What colour is the car?\n" + OPTS_DOT + "\nThe best answer is:",
    ("videomme", "lmms_default"): VIDEOMME_HEAD + "What colour is the car?\n" + OPTS_DOT
    + "\n\nAnswer with the option's letter from the given choices directly.",
    ("longvideobench", "llava_vid"): "What colour is the car?\n" + OPTS_DOT
    + "\nAnswer with the option's letter from the given choices directly.\n",
    ("mlvu", "llava_vid"): "What colour is the car?\n" + OPTS_PAREN + "\nOnly give the best option.\nBest option: (",
    ("lvbench", "llava_vid"): "What colour is the car?\n" + OPTS_PAREN + "\nAnswer the question with the option letter",
    ("tempcompass", "llava_vid"): "What colour is the car?\n" + OPTS_DOT + "\nPlease directly give the best option:",
}


@pytest.mark.parametrize("benchmark,style", sorted(GOLDEN))
def test_lmms_eval_prompts(benchmark, style):
    assert build_prompt(_item(benchmark), None, style) == GOLDEN[(benchmark, style)]


@pytest.mark.parametrize("benchmark", ["longvideobench", "mlvu", "lvbench", "tempcompass"])
def test_llava_vid_equals_lmms_default_outside_videomme(benchmark):
    # lmms-eval defines llava_vid kwargs only for Video-MME.
    assert build_prompt(_item(benchmark), None, "lmms_default") == build_prompt(_item(benchmark), None, "llava_vid")


def test_videomme_subtitles_as_lmms_eval():
    subs = (Subtitle(0.0, 1.5, "Hello there"), Subtitle(2.0, 3.0, "second line"), Subtitle(10.0, 11.0, "never sampled"))
    tail = "\n" + VIDEOMME_HEAD + "What colour is the car?\n" + OPTS_DOT + "\nThe best answer is:"
    for style in ("llava_vid", "lmms_default"):  # the subtitle task hard-codes its post prompt
        got = build_prompt(_item("videomme_sub", subs=subs), [0.0, 1.0, 2.0, 3.0], style)
        assert got == "This video's subtitles are listed below: \nHello there\nsecond line" + tail
    # No subtitle file: lmms-eval's placeholder; a file with no line on screen: an empty block.
    assert build_prompt(_item("videomme_sub"), [0.0], "llava_vid") == (
        "This video's subtitles are listed below: \nNo subtitles available" + tail)
    assert build_prompt(_item("videomme_sub", subs=subs), [5.0], "llava_vid") == (
        "This video's subtitles are listed below: \n" + tail)


def test_llava_style_is_the_earlier_prompt():
    expected = "What colour is the car?\n" + OPTS_DOT + "\nAnswer with the option's letter from the given choices directly."
    for b in ("videomme", "longvideobench", "mlvu", "lvbench", "tempcompass", "needle"):
        assert build_prompt(_item(b), None, "llava") == expected
    # needle is not an lmms-eval task: the llava prompt in every style.
    assert build_prompt(_item("needle"), None, "llava_vid") == expected
    subs = (Subtitle(0.0, 2.0, "hi"),)
    assert build_prompt(_item("videomme_sub", subs=subs), [1.0], "llava") == (
        "This video's subtitles are listed below:\nhi\n" + expected)


def test_subtitle_selection_is_half_open():
    subs = (Subtitle(0.0, 1.0, "a"), Subtitle(1.0, 2.0, "b"))
    assert [s.text for s in select_subtitles(subs, [1.0])] == ["b"]
    assert [s.text for s in select_subtitles(subs, None)] == ["a", "b"]


def test_unknown_style_is_an_error():
    with pytest.raises(ValueError, match="prompt style"):
        build_prompt(_item("mlvu"), None, "gpt4v")
