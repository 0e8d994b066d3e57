"""The project's small BPE (`build_tokenizer`) and local loading (`load_tokenizer`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hourllava_jax.data.tokenizer import (
    ChatTokenIds,
    TokenizerError,
    build_tokenizer,
    chat_token_ids,
    load_tokenizer,
)

CORPUS = [
    "What colour was the flash?\nA. red\nB. green\nC. blue\nD. yellow\nAnswer with the option's letter from the given choices directly.",
    "The video lasts for 123.45 seconds, and 120 frames are uniformly sampled from it. Please answer the following questions related to this video.",
    "In which direction did the red square move?",
    "Red, blue, green.",
] * 5


def test_specials_match_tiny_config(tmp_path):
    tok = build_tokenizer(CORPUS, 300, tmp_path / "tok")
    ids = chat_token_ids(tok)
    assert ids == ChatTokenIds(newline=ids.newline, im_start=1, im_end=2, pad=0)
    tiny = yaml.safe_load((Path(__file__).parents[2] / "configs/model/tiny.yaml").read_text())["llm"]
    assert (tiny["eos_token_id"], tiny["pad_token_id"]) == (ids.im_end, ids.pad)
    assert tok.eos_token_id == 2 and tok.pad_token_id == 0
    assert len(tok) <= 300 <= tiny["vocab_size"]


def test_load_roundtrip_and_single_token_newline(tmp_path):
    build_tokenizer(CORPUS, 400, tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    assert len(tok) == 400  # the corpus has enough pairs for every merge
    text = "<|im_start|>user\nWhat colour was the flash?\n\nÜmlaut 7.5<|im_end|>\n"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text  # byte-level: lossless, even for unseen characters
    assert ids[0] == 1 and ids[-2:] == [2, chat_token_ids(tok).newline]
    assert tok.encode("\n", add_special_tokens=False) == [chat_token_ids(tok).newline]
    # Qwen2's pattern: digits are single tokens.
    assert tok.convert_ids_to_tokens(tok.encode("2026", add_special_tokens=False)) == ["2", "0", "2", "6"]
    # Frequent words are merged (" the" occurs 30 times in CORPUS).
    assert len(tok.encode(" the", add_special_tokens=False)) == 1
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_deterministic_and_order_independent(tmp_path):
    build_tokenizer(CORPUS, 350, tmp_path / "a")
    build_tokenizer(list(reversed(CORPUS)), 350, tmp_path / "b")
    a = json.loads((tmp_path / "a" / "tokenizer.json").read_text())
    b = json.loads((tmp_path / "b" / "tokenizer.json").read_text())
    assert a["model"]["vocab"] == b["model"]["vocab"] and a["model"]["merges"] == b["model"]["merges"]


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="259"):
        build_tokenizer(CORPUS, 200, tmp_path / "x")
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    plain = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    plain.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=plain, unk_token="<unk>").save_pretrained(tmp_path / "plain")
    with pytest.raises(TokenizerError, match=r"special token <\|endoftext\|> is missing"):
        load_tokenizer(tmp_path / "plain")
