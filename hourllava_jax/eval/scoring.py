"""Deterministic multiple-choice scoring: letter extraction from text, or argmax of log-likelihoods.

`extract_letter(text, options)` tries these rules in order and returns the first hit (valid
letters are the first len(options) of A..Z; letters are upper-case only, so "a dog" is never
option A):

1. `bare`: the whole response is one letter, optionally wrapped/punctuated: "B", "(B)", "B.",
   "[B]". An out-of-range letter here ("E" with 4 options) is a parse failure: the model
   clearly chose something that does not exist.
2. `leading`: the response starts with a letter followed by ")", ".", ":", "," or a line end:
   "B. the dog", "(C) red", "D: ...". A leading "A " followed by a word is the article.
3. `keyword`: "answer", "option" or "choice" (any case), optionally "is" and ":"/"-", then a
   letter: "Answer: C", "The answer is (B)", "option D". The *last* such phrase wins, since
   models that reason first state the conclusion last.
4. `paren`: exactly one distinct valid letter appears in parentheses anywhere: "... so (B)".
5. `text`: the response equals one option's text, or contains exactly one option's text
   (case-, space- and edge-punctuation-insensitive, whole words).
6. `standalone`: exactly one distinct valid letter appears as a standalone capital ("I pick
   C here"), not counting "A"/"I" followed by a lower-case word other than "or"/"and"
   (article / pronoun), so "A dog" is no choice but "either A or B" is ambiguous.

Anything else is a parse failure (None), scored as wrong and counted per benchmark.

`argmax_letter(logliks)` is the log-likelihood mode: the option with the highest
log p(option text | prompt); ties go to the earliest option, NaN counts as -inf, and an empty or
all-NaN list is a parse failure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from hourllava_jax.eval.items import LETTERS

_SPECIAL = re.compile(r"<\|[^|>]*\|>|</s>|<s>")
_BARE = re.compile(r"[\(\[]?\s*([A-Z])\s*[\)\]]?\s*[\.:,]?")
_LEADING = re.compile(r"[\(\[]?([A-Z])(?:[\)\]\.:,]|\s*$)", re.M)
_KEYWORD = re.compile(r"(?i:answer|option|choice)(?:\s+(?i:is))?\s*[:\-]?\s*[\(\[]?([A-Z])(?![A-Za-z0-9])")
_PAREN = re.compile(r"\(([A-Z])\)")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")


def _clean(text: str) -> str:
    # Chat special tokens and markdown emphasis are formatting, not content.
    return _SPECIAL.sub("", text).replace("**", "").replace("`", "").strip()


def _is_word(text: str, end: int, letter: str) -> bool:
    """True if the letter ending at `end` is the article "A" / pronoun "I" before a word
    ("A dog", "I think"), but not in "A or B" / "A and B", where it is a choice."""
    return letter in "AI" and re.match(r"\s+(?!(?:or|and)\b)[a-z]", text[end:]) is not None


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def extract(text: str, options: Sequence[str]) -> tuple[str | None, str]:
    """(letter or None, name of the rule that decided) for a raw response; see module docs."""
    valid = LETTERS[: len(options)]
    s = _clean(text)
    if not s:
        return None, "empty"
    m = _BARE.fullmatch(s)
    if m:
        return (m.group(1), "bare") if m.group(1) in valid else (None, "bare_out_of_range")
    m = _LEADING.match(s)
    if m and m.group(1) in valid and not _is_word(s, m.end(1), m.group(1)):
        return m.group(1), "leading"
    hits = [m.group(1) for m in _KEYWORD.finditer(s) if m.group(1) in valid and not _is_word(s, m.end(1), m.group(1))]
    if hits:
        return hits[-1], "keyword"
    paren = {m.group(1) for m in _PAREN.finditer(s)} & set(valid)
    if len(paren) == 1:
        return paren.pop(), "paren"
    ns = _norm(s)
    norms = [_norm(o) for o in options]
    exact = [i for i, o in enumerate(norms) if o and o == ns]
    if len(exact) == 1:
        return valid[exact[0]], "text"
    contained = [i for i, o in enumerate(norms) if o and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", ns)]
    if len(contained) == 1:
        return valid[contained[0]], "text"
    alone = {m.group(1) for m in _STANDALONE.finditer(s)
             if m.group(1) in valid and not _is_word(s, m.end(1), m.group(1))}
    if len(alone) == 1:
        return alone.pop(), "standalone"
    return None, "no_match"


def extract_letter(text: str, options: Sequence[str]) -> str | None:
    """The chosen letter of a raw response, or None (parse failure)."""
    return extract(text, options)[0]


def argmax_letter(logliks: Sequence[float]) -> str | None:
    """The letter of the highest log-likelihood; earliest wins ties; NaN = -inf; None if none."""
    best, best_i = -math.inf, None
    for i, v in enumerate(logliks):
        v = float(v)
        if math.isnan(v):
            continue
        if best_i is None or v > best:
            best, best_i = v, i
    return None if best_i is None or best_i >= len(LETTERS) else LETTERS[best_i]
