"""Characters to integer ids and back, and the two ways of cutting ids into tokens.

The vocabulary is the sorted set of characters of the training corpus.  Ids are kept in the
smallest unsigned numpy dtype that holds them, so a 100M-character corpus costs 100 MB, not the
gigabytes a Python list would.

Tokens are what the model reads and predicts:

* ``char``: one token per character (``V`` tokens).
* ``bigram``: ud730 problem 2.  Non-overlapping character pairs ``(a, b)`` become the token
  ``a * V + b`` (``V**2`` tokens, 729 for text8).  A text of odd length leaves one character over;
  the code that reads or writes text (sampling, evaluation) handles that character itself.

This module is the one place that decides how text becomes tokens: training, sampling,
evaluation and export all call it.
"""
from __future__ import annotations

import unicodedata

import numpy as np

from .errors import CharlmError

TOKENIZATIONS = ("char", "bigram")
CHUNK = 1 << 22       # characters per numpy pass over a big corpus (bounds temporary memory)


def smallest_uint(max_value: int) -> np.dtype:
    """The narrowest unsigned dtype that holds ``max_value``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def _codepoints(text: str) -> np.ndarray:
    """The text's code points as a numpy array, without a per-character Python loop."""
    try:
        # Latin-1 covers ASCII corpora such as text8: one byte per character.
        return np.frombuffer(text.encode("latin-1"), dtype=np.uint8)
    except UnicodeEncodeError:
        # surrogatepass: a lone surrogate (Python's stand-in for an undecodable byte in argv)
        # becomes an ordinary unknown character instead of an encoding crash
        return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _present(codes: np.ndarray) -> np.ndarray:
    """The distinct values of a uint8 array, chunk by chunk (no int64 copy of it)."""
    seen = np.zeros(256, dtype=bool)
    for start in range(0, codes.size, CHUNK):
        seen[np.unique(codes[start:start + CHUNK])] = True
    return np.nonzero(seen)[0]


def describe_chars(chars) -> str:
    """``'Ж' (U+0416), '\\t' (U+0009)``: readable names for characters in error messages."""
    parts = []
    for ch in chars:
        shown = ch if ch.isprintable() and not ch.isspace() else repr(ch)[1:-1]
        name = unicodedata.name(ch, "")
        parts.append(f"'{shown}' (U+{ord(ch):04X}{' ' + name if name else ''})")
    return ", ".join(parts)


class Vocabulary:
    """The characters a model knows, in a fixed order (id = position)."""

    def __init__(self, chars: str):
        if not chars:
            raise CharlmError("the vocabulary is empty (no characters in the text)")
        if len(set(chars)) != len(chars):
            raise CharlmError("vocabulary characters must be unique")
        self.chars = "".join(chars)
        self.size = len(self.chars)
        self.dtype = smallest_uint(self.size - 1)
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
        self._order = np.argsort(self._codes)
        self._sorted_codes = self._codes[self._order]
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        codes = _codepoints(text)
        if codes.dtype == np.uint8:
            present = _present(codes)
        else:
            present = np.unique(codes)
        return cls("".join(chr(int(c)) for c in present))

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"Vocabulary({self.size} characters)"

    def to_dict(self) -> dict:
        return {"chars": self.chars}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        return cls(data["chars"])

    def unknown_chars(self, text: str) -> list[str]:
        """Characters of ``text`` the vocabulary lacks, in order of first appearance."""
        return [c for c in dict.fromkeys(text) if c not in self._index]

    def encode(self, text: str, oov: str = "error", what: str = "text") -> np.ndarray:
        """Text to ids.  ``oov``: ``error`` names unknown characters, ``skip`` drops them."""
        codes = _codepoints(text)
        if codes.size == 0:
            return np.zeros(0, dtype=self.dtype)
        if codes.dtype == np.uint8 and self._codes.max() < 256:
            table = np.full(256, -1, dtype=np.int16)
            table[self._codes] = np.arange(self.size)
            if (table[_present(codes)] >= 0).all():
                # every character known: map chunk by chunk straight into the compact dtype, so a
                # 100M-character corpus needs no wide temporary copies
                ids = np.empty(codes.size, dtype=self.dtype)
                small = table.astype(self.dtype)
                for start in range(0, codes.size, CHUNK):
                    np.take(small, codes[start:start + CHUNK], out=ids[start:start + CHUNK])
                return ids
            ids = table[codes]
            known = ids >= 0
        else:
            pos = np.searchsorted(self._sorted_codes, codes)
            pos = np.minimum(pos, self.size - 1)
            known = self._sorted_codes[pos] == codes
            ids = self._order[pos]
        if not known.all():
            if oov == "skip":
                ids = ids[known]
            else:
                unknown = self.unknown_chars(text)
                shown = describe_chars(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
                raise CharlmError(
                    f"{what} has {len(unknown)} character(s) outside the model's vocabulary: "
                    f"{shown} (use --oov skip to drop them)")
        return ids.astype(self.dtype)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in np.asarray(ids, dtype=np.int64).ravel())


class Tokenizer:
    """Cuts character ids into model tokens (``char`` or ``bigram``) and back."""

    def __init__(self, kind: str, vocab: Vocabulary):
        if kind not in TOKENIZATIONS:
            raise CharlmError(f"unknown model kind {kind!r}; choose from {', '.join(TOKENIZATIONS)}")
        self.kind = kind
        self.vocab = vocab
        self.chars_per_token = 1 if kind == "char" else 2
        self.num_tokens = vocab.size ** self.chars_per_token
        self.dtype = smallest_uint(self.num_tokens - 1)

    def tokens(self, ids: np.ndarray) -> np.ndarray:
        """Character ids to token ids; a bigram text of odd length drops its last character."""
        ids = np.asarray(ids)
        if self.kind == "char":
            return ids.astype(self.dtype, copy=False)
        n = ids.size // 2 * 2
        pairs = ids[:n].reshape(-1, 2).astype(self.dtype)
        return pairs[:, 0] * self.dtype.type(self.vocab.size) + pairs[:, 1]

    def leftover(self, ids: np.ndarray) -> np.ndarray:
        """The character ids that :meth:`tokens` left over (the last one of an odd bigram text)."""
        ids = np.asarray(ids)
        return ids[ids.size // self.chars_per_token * self.chars_per_token:]

    def chars(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids back to character ids (flattened in reading order)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if self.kind == "char":
            return tokens
        v = self.vocab.size
        return np.stack([tokens // v, tokens % v], axis=-1).reshape(*tokens.shape[:-1], -1)

    def encode_text(self, text: str, oov: str = "error", what: str = "text"):
        """Text to ``(tokens, leftover character ids)``."""
        ids = self.vocab.encode(text, oov=oov, what=what)
        return self.tokens(ids), self.leftover(ids)

    def decode_tokens(self, tokens) -> str:
        return self.vocab.decode(self.chars(np.atleast_1d(tokens)))
