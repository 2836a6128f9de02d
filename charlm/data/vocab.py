"""Characters to integer ids and back, and the two ways of cutting ids into tokens.

The vocabulary is the sorted set of characters of the training corpus.  Ids are kept in the
smallest unsigned numpy dtype that holds them, so a 100M-character corpus costs 100 MB, not the
gigabytes a Python list would.

Tokens are what the model reads and predicts:

* ``char``: one token per character (``V`` tokens).
* ``bigram``: ud730 problem 2, in one of two layouts (:meth:`Tokenizer.for_ids` picks):

  - *dense*, for small alphabets: non-overlapping character pairs ``(a, b)`` become the token
    ``a * V + b`` (``V**2`` tokens, 729 for text8).  A text of odd length leaves one character
    over; the code that reads or writes text (sampling, evaluation) handles that character itself.
  - *sparse*, when ``V**2`` would be large (3,000 Chinese characters make 9M pairs): tokens
    ``0 .. V-1`` are the single characters and the rest are the pairs that occur in the training
    text's non-overlapping cut, listed in the run's ``config.json``.  A text is cut greedily left to
    right into known pairs, else single characters, so every text encodes and nothing is left over.

This module is the one place that decides how text becomes tokens: training, sampling,
evaluation and export all call it.
"""
from __future__ import annotations

import unicodedata

import numpy as np

from charlm.errors import CharlmError

TOKENIZATIONS = ("char", "bigram")
CHUNK = 1 << 22       # characters per numpy pass over a big corpus (bounds temporary memory)
# A bigram model keeps all V**2 pairs as tokens up to this many (V <= 64), or while that is no more
# than the sparse layout's V + (pairs seen); old runs (no "pairs" in config.json) are dense.
DENSE_PAIRS_MAX = 4096
PAIR_TABLE_MAX = 1 << 26     # pair -> token lookup as one table up to this many pairs (see _pair_token)


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


def byte_counts(codes: np.ndarray) -> np.ndarray:
    """``[256]`` counts of the values of a uint8 array, chunk by chunk (no int64 copy of it).

    It counts pairs of neighbours (the array seen as uint16) and adds up their two halves:
    bincount's cost is per element, so this is twice as fast as counting the bytes one by one.
    """
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, codes.size, CHUNK):
        piece = np.ascontiguousarray(codes[start:start + CHUNK])
        even = piece.size // 2 * 2
        pairs = np.bincount(piece[:even].view(np.uint16), minlength=1 << 16).reshape(256, 256)
        counts += pairs.sum(axis=0) + pairs.sum(axis=1)
        counts[piece[even:]] += 1
    return counts


def _present(codes: np.ndarray) -> np.ndarray:
    """The distinct values of a uint8 array."""
    return np.nonzero(byte_counts(codes))[0]


def describe_chars(chars) -> str:
    """``'Ж' (U+0416), '\\t' (U+0009)``: readable names for characters in error messages."""
    parts = []
    for ch in chars:
        shown = ch if ch.isprintable() and not ch.isspace() else repr(ch)[1:-1]
        name = unicodedata.name(ch, "")
        parts.append(f"'{shown}' (U+{ord(ch):04X}{' ' + name if name else ''})")
    return ", ".join(parts)


def greedy_pairs(known, ops):
    """The sparse bigram cut's rule: from left to right a known pair, else one character.

    ``known[k]``: the pair at positions ``k, k + 1`` is a token (False for the last position).
    Returns ``(pair, single)``: the positions where a pair token starts, and those taken alone.
    Vectorised per run of known positions: inside a run starting at a token boundary the pairs
    start at even offsets from the run's start, and a position that the pair before it does not
    cover is a single character.  Written once over ``ops`` (:data:`NUMPY_OPS` here; TensorFlow's
    in the exported SavedModel's graph, :mod:`charlm.use.export`).
    """
    previous = lambda a: ops.concat([[False], a[:-1]])  # noqa: E731
    index = ops.arange(known)
    starts = known & ~previous(known)
    # each position's run start: the latest start at or before it
    run_start = ops.gather(ops.concat([[0], ops.mask(index, starts)]), ops.cumsum(starts))
    pair = known & ((index - run_start) % 2 == 0)
    return pair, ~(pair | previous(pair))


class _NumpyOps:
    concat = staticmethod(np.concatenate)
    arange = staticmethod(lambda a: np.arange(a.size))
    mask = staticmethod(lambda a, m: a[m])
    gather = staticmethod(lambda a, i: a[i])
    cumsum = staticmethod(np.cumsum)


NUMPY_OPS = _NumpyOps


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

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> "Vocabulary":
        """The vocabulary of a text streamed in pieces: ``counts[c]`` is how often code point ``c``
        occurs (:mod:`charlm.data.prepared` adds them up chunk by chunk)."""
        return cls("".join(chr(int(c)) for c in np.nonzero(counts)[0]))

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
    """Cuts character ids into model tokens (``char`` or ``bigram``) and back.

    ``pairs``: the sparse bigram layout's pair list (``[P, 2]`` character ids, sorted); ``None`` is
    the dense layout (every pair, ``a * V + b``).
    """

    def __init__(self, kind: str, vocab: Vocabulary, pairs=None):
        if kind not in TOKENIZATIONS:
            raise CharlmError(f"unknown model kind {kind!r}; choose from {', '.join(TOKENIZATIONS)}")
        self.kind = kind
        self.vocab = vocab
        self.chars_per_token = 1 if kind == "char" else 2      # at most, for the sparse layout
        self.sparse = kind == "bigram" and pairs is not None
        v = vocab.size
        if self.sparse:
            pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
            self._pair_keys = pairs[:, 0] * v + pairs[:, 1]
            if pairs.size and ((pairs < 0).any() or (pairs >= v).any() or (np.diff(self._pair_keys) <= 0).any()):
                raise CharlmError("the bigram pair list is not sorted unique pairs of known characters")
            self.num_tokens = v + len(pairs)
            # each token's first and second character id (-1: a single character has none)
            self.first = np.concatenate([np.arange(v), pairs[:, 0]])
            self.second = np.concatenate([np.full(v, -1), pairs[:, 1]])
        else:
            self.num_tokens = v ** self.chars_per_token
        self.dtype = smallest_uint(self.num_tokens - 1)

    @classmethod
    def for_ids(cls, kind: str, vocab: Vocabulary, ids: np.ndarray) -> "Tokenizer":
        """The tokenizer a new run trains with on character ids ``ids`` (its training text)."""
        v = vocab.size
        if kind != "bigram" or v * v <= DENSE_PAIRS_MAX:
            return cls(kind, vocab)
        ids = np.asarray(ids)
        keys = np.zeros(0, dtype=np.int64)
        step = CHUNK // 2 * 2
        for start in range(0, ids.size // 2 * 2, step):
            piece = ids[start:min(start + step, ids.size // 2 * 2)].astype(np.int64)
            keys = np.union1d(keys, piece[0::2] * v + piece[1::2])
        if v * v <= v + keys.size:
            return cls(kind, vocab)
        return cls(kind, vocab, np.stack([keys // v, keys % v], axis=-1))

    def to_dict(self) -> dict:
        """What config.json must hold to rebuild this tokenizer (nothing for the dense layouts)."""
        if not self.sparse:
            return {}
        chars = self.vocab.chars
        return {"pairs": [chars[a] + chars[b] for a, b in zip(self.first[self.vocab.size:].tolist(),
                                                               self.second[self.vocab.size:].tolist())]}

    @classmethod
    def from_dict(cls, kind: str, vocab: Vocabulary, data: dict) -> "Tokenizer":
        if "pairs" not in data:
            return cls(kind, vocab)
        texts = data["pairs"]
        if not all(isinstance(p, str) and len(p) == 2 for p in texts):
            raise CharlmError("the bigram pair list must hold two-character strings")
        return cls(kind, vocab, vocab.encode("".join(texts), what="the bigram pair list").reshape(-1, 2))

    def tokens(self, ids: np.ndarray) -> np.ndarray:
        """Character ids to token ids; a dense bigram text of odd length drops its last character."""
        ids = np.asarray(ids)
        if self.kind == "char":
            return ids.astype(self.dtype, copy=False)
        if self.sparse:
            return self._greedy(ids)
        n = ids.size // 2 * 2
        pairs = ids[:n].reshape(-1, 2).astype(self.dtype)
        return pairs[:, 0] * self.dtype.type(self.vocab.size) + pairs[:, 1]

    def _greedy(self, ids: np.ndarray) -> np.ndarray:
        """The sparse cut (:func:`greedy_pairs`), chunk by chunk: chunks start at a token boundary,
        so each is cut on its own."""
        v, n = self.vocab.size, ids.size
        out = np.empty(n, dtype=self.dtype)
        count = pos = 0
        while pos < n:
            end = min(pos + CHUNK, n)
            a = ids[pos:end].astype(np.int64)
            token = np.zeros(a.size, dtype=self.dtype)          # 0: the pair is not a token
            token[:ids[pos + 1:end + 1].size] = self._pair_token(a[:ids[pos + 1:end + 1].size] * v
                                                                 + ids[pos + 1:end + 1])
            pair, single = greedy_pairs(token > 0, NUMPY_OPS)
            taken = np.where(pair, token, a)[pair | single]
            out[count:count + taken.size] = taken
            count += taken.size
            pos = end + 1 if pair[-1] else end
        return out[:count].copy()

    def _pair_token(self, keys: np.ndarray) -> np.ndarray:
        """Token ids of pair keys ``a * V + b``, 0 where the pair is no token.

        Up to ``PAIR_TABLE_MAX`` pairs a ``[V * V]`` table makes it one gather (3,000 characters:
        9M entries, 18 MB); beyond it a binary search, several times slower.
        """
        if self.vocab.size ** 2 <= PAIR_TABLE_MAX:
            if getattr(self, "_pair_table", None) is None:
                self._pair_table = np.zeros(self.vocab.size ** 2, dtype=self.dtype)
                self._pair_table[self._pair_keys] = np.arange(self.vocab.size, self.num_tokens)
            return self._pair_table[keys]
        table = self._pair_keys
        if not table.size:
            return np.zeros(keys.size, dtype=self.dtype)
        where = np.minimum(np.searchsorted(table, keys), table.size - 1)
        return np.where(table[where] == keys, where + self.vocab.size, 0).astype(self.dtype)

    def leftover(self, ids: np.ndarray) -> np.ndarray:
        """The character ids that :meth:`tokens` left over (the last one of an odd dense bigram text)."""
        ids = np.asarray(ids)
        if self.sparse:
            return ids[:0]
        return ids[ids.size // self.chars_per_token * self.chars_per_token:]

    def prime_tokens(self, ids: np.ndarray):
        """``(tokens, open character)`` of a prime: the open character (at most one) begins the
        first generated token; a sparse cut's final single character is opened too, so the
        model may still pair it with what it generates."""
        tokens, leftover = self.tokens(ids), self.leftover(ids)
        if self.sparse and tokens.size and tokens[-1] < self.vocab.size:
            return tokens[:-1], tokens[-1:].astype(np.asarray(ids).dtype)
        return tokens, leftover

    def starting_with(self, char_id: int) -> np.ndarray:
        """Boolean mask ``[num_tokens]`` of the tokens whose first character is ``char_id``."""
        if self.sparse:
            return self.first == char_id
        mask = np.zeros(self.num_tokens, dtype=bool)
        v = self.vocab.size
        mask[char_id * v:(char_id + 1) * v] = True
        return mask

    def sample_steps(self, length, opened=False):
        """Tokens to generate so that at least ``length`` new characters come out (``opened``:
        the first token repeats the prime's open character).  Plain arithmetic, so ints and
        TensorFlow integer tensors (the SavedModel's graph) take the same rule."""
        if self.sparse:
            return length + opened              # a token may hold one character only
        return -(-(length + opened) // self.chars_per_token)

    def chars(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids back to character ids (flattened in reading order; the sparse layout
        flattens a 2-D array of tokens into one sequence)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if self.kind == "char":
            return tokens
        if self.sparse:
            both = np.stack([self.first[tokens], self.second[tokens]], axis=-1).ravel()
            return both[both >= 0]
        v = self.vocab.size
        return np.stack([tokens // v, tokens % v], axis=-1).reshape(*tokens.shape[:-1], -1)

    def encode_text(self, text: str, oov: str = "error", what: str = "text"):
        """Text to ``(tokens, leftover character ids)``."""
        ids = self.vocab.encode(text, oov=oov, what=what)
        return self.tokens(ids), self.leftover(ids)

    def decode_tokens(self, tokens) -> str:
        return self.vocab.decode(self.chars(np.atleast_1d(tokens)))
