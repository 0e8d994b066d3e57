"""Chat text and labels (design §4.4) against ids worked out by hand.

Two tokenizers whose ids are known without running the code under test:
* `byte_tok`: `build_tokenizer` with vocab_size 259 = 3 specials + 256 bytes and no merges. Ids:
  <|endoftext|> 0, <|im_start|> 1, <|im_end|> 2, then the 256 byte symbols of the byte-level
  alphabet sorted by code point: printable ASCII '!'..'~' are ids 3..96 (id = ord(c) - 30), the 94
  printable Latin-1 symbols 97..190, then bytes 0..32 (mapped to U+0100..U+0120) 191..223, so
  '\\n' (byte 10) is 201 and ' ' (byte 32) is 223.
* `qwen_tok`: a word-level tokenizer holding Qwen2's real ids for the template words (design §8.5:
  system 8948, user 872, You 2610, " are" 525, " a" 264, " helpful" 10950, " assistant" 17847,
  "." 13, "\\n" 198, specials 151643..151645) and Qwen2's pre-tokenizer, so the prefix tokenizes
  exactly as Qwen2's does: n0 must be 8.
"""

from __future__ import annotations

import numpy as np
import pytest

from hourllava_jax.data import chat, errors, records
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.records import Turn

M = -100  # ignored label
IMG = -200  # image placeholder id
NL, START, END = 201, 1, 2  # byte_tok ids of "\n", <|im_start|>, <|im_end|>


def b(text: str) -> list[int]:
    """byte_tok ids of ASCII `text`, by the rule in the module docstring."""
    out = []
    for c in text:
        o = ord(c)
        out.append(o - 30 if 33 <= o <= 126 else {10: 201, 32: 223}[o])
    return out


@pytest.fixture(scope="module")
def byte_tok(tmp_path_factory):
    from hourllava_jax.data.tokenizer import build_tokenizer

    return build_tokenizer(["anything"], 259, tmp_path_factory.mktemp("byte_tok"))


@pytest.fixture(scope="module")
def qwen_tok():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from hourllava_jax.data.tokenizer import QWEN_PATTERN

    vocab = {
        "system": 8948, "user": 872, "assistant": 77091, "You": 2610, "Ġare": 525, "Ġa": 264,
        "Ġhelpful": 10950, "Ġassistant": 17847, ".": 13, "Ċ": 198, "Hi": 13048, "<unk>": 151646,
        "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    }  # fmt: skip
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<|endoftext|>")


def _image_record(q="<image>\nHi?", a="Ok."):
    return records.parse_record({"id": "i", "image": "a.jpg", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}, "t.jsonl:1")


def test_byte_tokenizer_matches_the_hand_rule(byte_tok):
    assert byte_tok.encode("Hi?\n a~!", add_special_tokens=False) == b("Hi?\n a~!")
    assert byte_tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]


def test_golden_ids_and_labels_byte_tokenizer(byte_tok):
    out = chat.tokenize_record(_image_record(), byte_tok)
    sys_ids = [START, *b("system"), NL, *b("You are a helpful assistant."), END, NL]
    sys_lab = [START, *[M] * 6, NL, *[M] * 28, END, NL]
    user_ids = [START, *b("user"), NL, IMG, NL, *b("Hi?"), END, NL]
    user_lab = [START, M, M, M, M, NL, M, NL, M, M, M, END, NL]
    asst_ids = [START, *b("assistant"), NL, *b("Ok."), END, NL]
    assert out.input_ids.tolist() == sys_ids + user_ids + asst_ids
    assert out.labels.tolist() == sys_lab + user_lab + asst_ids  # assistant turn fully supervised
    assert out.input_ids.dtype == np.int32 and out.labels.dtype == np.int32
    assert out.image_positions.tolist() == [len(sys_ids) + 6] and out.n_images == 1
    # n0: masked text before the first image = len("system") + len("You are a helpful assistant.") + len("user").
    assert chat.kept_prefix_length(out) == 6 + 28 + 4


def test_qwen_ids_give_n0_equal_8(qwen_tok):
    out = chat.tokenize_record(_image_record(q="<image>\nHi", a="Hi"), qwen_tok)
    s, e, nl = 151644, 151645, 198
    assert out.input_ids.tolist() == [
        s, 8948, nl, 2610, 525, 264, 10950, 17847, 13, e, nl,
        s, 872, nl, IMG, nl, 13048, e, nl,
        s, 77091, nl, 13048, e, nl,
    ]  # fmt: skip
    assert out.labels.tolist() == [
        s, M, nl, M, M, M, M, M, M, e, nl,
        s, M, nl, M, nl, M, e, nl,
        s, 77091, nl, 13048, e, nl,
    ]  # fmt: skip
    assert chat.kept_prefix_length(out) == 8  # design §2.4


def test_time_instruction_text_is_exact():
    assert chat.time_instruction(3600.456, 128) == (
        "The video lasts for 3600.46 seconds, and 128 frames are uniformly sampled from it. "
        "Please answer the following questions related to this video."
    )
    rec = records.parse_record(
        {"id": "v", "video": "a.mp4", "data_source": "panda",
         "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "B"},
                           {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "So."}]},
        "w",
    )  # fmt: skip
    turns = chat.prepare_turns(rec, seconds=16.0, n_frames=16)
    # The release deletes "<image>" but not the "\n" after it: a blank line before the question.
    assert turns[0].value == (
        "<image>\nThe video lasts for 16.00 seconds, and 16 frames are uniformly sampled from it. "
        "Please answer the following questions related to this video.\n\nWhat?"
    )
    assert turns[1:] == rec.conversations[1:]
    assert chat.prepare_turns(rec) == rec.conversations  # no timing given: text unchanged


def test_video_record_tokens_concatenate_the_pieces(byte_tok):
    rec = records.parse_record(
        {"id": "v", "video": "a.mp4", "data_source": "panda",
         "conversations": [{"from": "human", "value": "What? <image>"}, {"from": "gpt", "value": "B"},
                           {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "So."}]},
        "w",
    )  # fmt: skip
    out = chat.tokenize_record(rec, byte_tok, seconds=5.5, n_frames=5)
    instr = "The video lasts for 5.50 seconds, and 5 frames are uniformly sampled from it. Please answer the following questions related to this video."
    first_user_after = b(f"\n{instr}\nWhat? ") + [END, NL]
    expect = (
        [START, *b("system"), NL, *b("You are a helpful assistant."), END, NL]
        + [START, *b("user"), NL, IMG] + first_user_after
        + [START, *b("assistant"), NL, *b("B"), END, NL]
        + [START, *b("user"), NL, *b("Why?"), END, NL]
        + [START, *b("assistant"), NL, *b("So."), END, NL]
    )  # fmt: skip
    assert out.input_ids.tolist() == expect
    keep = {NL, START, END}
    lab = out.labels.tolist()
    # Walk the turns: user/system tokens keep only \n, <|im_start|>, <|im_end|>; assistant all.
    n_sys = 6 + 1 + 1 + 28 + 2
    n_user1 = 1 + 4 + 1 + 1 + len(first_user_after)
    n_asst1 = 1 + 9 + 1 + 1 + 2
    n_user2 = 1 + 4 + 1 + 4 + 2
    bounds = np.cumsum([0, n_sys, n_user1, n_asst1, n_user2, len(expect) - n_sys - n_user1 - n_asst1 - n_user2])
    roles = ["system", "user", "assistant", "user", "assistant"]
    for role, lo, hi in zip(roles, bounds[:-1], bounds[1:]):
        for i in range(lo, hi):
            want = expect[i] if role == "assistant" or expect[i] in keep else M
            assert lab[i] == want, (role, i)
    assert chat.kept_prefix_length(out) == 6 + 28 + 4


def test_placeholder_moved_to_front_and_noise_tag_removed():
    turns = chat.normalize_placeholders([Turn("human", "Describe <image> please QA_GT_caption_based_noisy"), Turn("gpt", "A")])
    assert turns[0].value == "<image>\nDescribe  please "  # LLaVA strips, then drops the tag
    two = chat.normalize_placeholders([Turn("human", "A <image> B <image>")])
    assert two[0].value == "A <image> B <image>"  # several placeholders stay where they are


def test_multi_image_positions(byte_tok):
    rec = records.parse_record(
        {"id": "m", "image": ["a.jpg", "b.jpg"], "conversations": [{"from": "human", "value": "<image><image>?"}, {"from": "gpt", "value": "No"}]}, "w"
    )
    out = chat.tokenize_record(rec, byte_tok, image_token_id=-7)
    first = 1 + 6 + 1 + 28 + 2 + 1 + 4 + 1
    assert out.image_positions.tolist() == [first, first + 1]
    assert out.input_ids[first : first + 3].tolist() == [-7, -7, *b("?")]
    assert out.labels[first : first + 3].tolist() == [M, M, M]


def test_text_only_and_generation_prompt(byte_tok):
    rec = records.parse_record({"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}, "w")
    out = chat.tokenize_record(rec, byte_tok)
    assert out.n_images == 0 and IMG not in out.input_ids.tolist()
    with pytest.raises(ValueError, match="no placeholder"):
        chat.kept_prefix_length(out)
    prompt = chat.generation_prompt([Turn("human", "Hi")], byte_tok)
    assert prompt.tolist() == [START, *b("system"), NL, *b("You are a helpful assistant."), END, NL,
                               START, *b("user"), NL, *b("Hi"), END, NL, START, *b("assistant"), NL]  # fmt: skip
    with pytest.raises(ValueError, match="end with a human turn"):
        chat.generation_prompt(rec.conversations, byte_tok)


def test_errors(byte_tok):
    with pytest.raises(DataError) as ei:
        chat.tokenize_turns([Turn("human", "Q"), Turn("gpt", "<image>")], byte_tok, where="f:1")
    assert ei.value.reason == errors.BAD_CONVERSATION and ei.value.path == "f:1"
    with pytest.raises(ValueError, match="collides"):
        chat.tokenize_turns([Turn("human", "Q")], byte_tok, image_token_id=5)
