"""Tokenizers: load a Hugging Face tokenizer from a local directory; train the project's small BPE.

The chat code (`data/chat.py`, design §4) needs four ids from any tokenizer: `\\n`, `<|im_start|>`,
`<|im_end|>` (these keep their labels) and `<|endoftext|>` (padding). `chat_token_ids` reads them
from the tokenizer, so nothing in the package hard-codes Qwen's 198 / 151644 / 151645 / 151643.

`build_tokenizer` trains a byte-level BPE (Qwen2's pre-tokenizer regex, so digits are single
tokens and newlines split off the same way) with the Qwen2 special tokens at ids 0, 1, 2:
`<|endoftext|>`=0, `<|im_start|>`=1, `<|im_end|>`=2 — what `configs/model/tiny.yaml` expects
(`pad_token_id: 0`, `eos_token_id: 2`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily below: `transformers` takes seconds to import, and record
    from transformers import PreTrainedTokenizerFast  # readers / video workers never need it

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # in id order for `build_tokenizer`

# Qwen2's pre-tokenizer split pattern (design §8.5).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Same ChatML as design §4.4 ("qwen_1_5"), for users of `tokenizer.apply_chat_template`; the training
# code does not use it (chat.py renders turns itself so it can label them).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class TokenizerError(ValueError):
    """A tokenizer directory is missing or lacks what the chat format needs."""


@dataclasses.dataclass(frozen=True)
class ChatTokenIds:
    """The ids the labelling rule (design §4.4) and padding need, read from a tokenizer.

    newline: id of "\\n" alone (Qwen2: 198); im_start / im_end: 151644 / 151645 in Qwen2;
    pad: `<|endoftext|>` (151643 in Qwen2).
    """

    newline: int
    im_start: int
    im_end: int
    pad: int

    @property
    def keep_label(self) -> frozenset[int]:
        """Ids that keep their own label even inside system/user turns."""
        return frozenset((self.newline, self.im_start, self.im_end))


def _single_id(tokenizer: PreTrainedTokenizerFast, text: str, where: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise TokenizerError(f"{where}: {text!r} must be a single token, got ids {ids}")
    return int(ids[0])


def chat_token_ids(tokenizer: PreTrainedTokenizerFast) -> ChatTokenIds:
    """Reads the newline / ChatML / pad ids from `tokenizer` (raises TokenizerError if absent)."""
    where = getattr(tokenizer, "name_or_path", "tokenizer") or "tokenizer"
    ids = {}
    for tok in SPECIAL_TOKENS:
        i = tokenizer.convert_tokens_to_ids(tok)
        if i is None or i == tokenizer.unk_token_id:
            raise TokenizerError(f"{where}: special token {tok} is missing")
        ids[tok] = int(i)
    return ChatTokenIds(
        newline=_single_id(tokenizer, "\n", where),
        im_start=ids[IM_START],
        im_end=ids[IM_END],
        pad=ids[ENDOFTEXT],
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Loads a Hugging Face tokenizer from a local directory (never the hub) and checks it.

    Works for a real Qwen2 tokenizer directory and for `build_tokenizer`'s output.
    """
    path = Path(path)
    if not path.is_dir():
        raise TokenizerError(f"{path}: tokenizer directory does not exist")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    chat_token_ids(tok)  # fail now, naming the directory, if the chat ids are missing
    return tok


def build_tokenizer(corpus_texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE on `corpus_texts`, saves it in HF format to `out_dir`, returns it.

    Args:
      corpus_texts: training texts (e.g. `synthetic.corpus_texts(records)`); the ChatML scaffold
        and system prompt are added so the template's words get merged too.
      vocab_size: total vocabulary including the 256 byte symbols and 3 special tokens
        (so at least 259); at most 512 for `configs/model/tiny.yaml`.
      out_dir: directory for `tokenizer.json`, `tokenizer_config.json`, ...

    Deterministic: the same texts (in any order) and size give the same `tokenizer.json`
    (checked across processes). Special ids: `<|endoftext|>`=0, `<|im_start|>`=1,
    `<|im_end|>`=2. Every single byte, so "\\n" in particular, is a token of its own.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    n_base = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < n_base:
        raise ValueError(f"vocab_size {vocab_size} < {n_base} (3 special tokens + 256 bytes)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    scaffold = [
        f"{IM_START}system\nYou are a helpful assistant.{IM_END}\n{IM_START}user\n",
        f"{IM_END}\n{IM_START}assistant\n",
    ]
    # Sorted (not de-duplicated: BPE merges follow frequencies), so the input order cannot change
    # the result. Every conversation carries the scaffold, so it is weighted like a quarter of
    # the texts (about one conversation per four turns).
    texts = sorted(corpus_texts)
    texts = sorted(texts + scaffold * max(2, len(texts) // 4))
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=32768,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHATML_TEMPLATE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    # Record what it was built for (read by humans; loading does not need it).
    (out_dir / "hourllava_tokenizer.json").write_text(
        json.dumps({"vocab_size": vocab_size, "num_texts": len(texts)}, indent=1) + "\n"
    )
    return fast
