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

Byte fallback (as SentencePiece's): a vocabulary may end in 256 *byte ids* (``C .. C + 255``
after its ``C`` characters).  A character outside the vocabulary (unseen in training, or rarer
than ``min_count`` when the vocabulary was chosen, :meth:`Vocabulary.from_counts`) is read and
written as its UTF-8 bytes, so every text encodes; the rare characters of the training text are
what trains the byte ids.  Ids are then *units*, not characters: :meth:`Vocabulary.characters`
counts the characters a run of ids stands for, :meth:`Vocabulary.complete` where its last whole
character ends, and :meth:`Tokenizer.utf8_grammar` is the automaton that lets a sampler emit
only valid UTF-8.  Bigram pairs are pairs of characters only; a byte id is always a token alone.

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
BYTES = 256
BYTE_FALLBACKS = ("auto", "on", "off")
OOVS = ("error", "skip", "bytes")
# byte_fallback "auto" adds the byte ids only to an alphabet at least this large that has a rare
# tail: below it the 256 byte ids would more than double the output layer of a small alphabet
# (English, text8), whose rare characters cost little to keep as characters.
AUTO_BYTES_MIN_CHARS = 256


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
    """The characters a model knows, in a fixed order (id = position), and with ``byte_fallback``
    the 256 UTF-8 byte ids after them."""

    def __init__(self, chars: str, byte_fallback: bool = False):
        if not chars and not byte_fallback:
            raise CharlmError("the vocabulary is empty (no characters in the text)")
        if len(set(chars)) != len(chars):
            raise CharlmError("vocabulary characters must be unique")
        self.chars = "".join(chars)
        self.num_chars = len(self.chars)
        self.bytes = bool(byte_fallback)
        self.size = self.num_chars + BYTES * self.bytes      # ids: characters, then bytes
        self.dtype = smallest_uint(self.size - 1)
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
        self._order = np.argsort(self._codes)
        self._sorted_codes = self._codes[self._order]
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str, min_count: int = 1, byte_fallback: str = "off") -> "Vocabulary":
        """The text's characters (see :meth:`from_counts` for ``min_count`` and ``byte_fallback``)."""
        codes = _codepoints(text)
        if codes.dtype == np.uint8:
            counts = byte_counts(codes)
        else:
            present, found = np.unique(codes, return_counts=True)
            counts = np.zeros(int(present[-1]) + 1 if present.size else 1, dtype=np.int64)
            counts[present] = found
        return cls.from_counts(counts, min_count, byte_fallback)

    @classmethod
    def from_counts(cls, counts: np.ndarray, min_count: int = 1, byte_fallback: str = "off") -> "Vocabulary":
        """The vocabulary of a text whose code point ``c`` occurs ``counts[c]`` times
        (:mod:`charlm.data.prepared` adds them up chunk by chunk).

        ``byte_fallback``: ``on`` adds the byte ids and leaves the characters seen fewer than
        ``min_count`` times to them; ``auto`` does so when some character is that rare and the
        alphabet has at least ``AUTO_BYTES_MIN_CHARS`` characters; ``off`` keeps every character.
        """
        if byte_fallback not in BYTE_FALLBACKS:
            raise CharlmError(f"--byte-fallback must be one of {', '.join(BYTE_FALLBACKS)} (got {byte_fallback!r})")
        if min_count < 1:
            raise CharlmError(f"--min-char-count must be at least 1 (got {min_count})")
        counts = np.asarray(counts)
        present = np.nonzero(counts)[0]
        rare = counts[present] < min_count
        on = byte_fallback == "on" or (byte_fallback == "auto" and rare.any()
                                        and present.size >= AUTO_BYTES_MIN_CHARS)
        kept = present[~rare] if on else present
        return cls("".join(chr(int(c)) for c in kept), byte_fallback=on)

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and (other.chars, other.bytes) == (self.chars, self.bytes)

    def __repr__(self) -> str:
        return f"Vocabulary({self.num_chars} characters{' + 256 bytes' if self.bytes else ''})"

    def to_dict(self) -> dict:
        return {"chars": self.chars, **({"byte_fallback": True} if self.bytes else {})}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        # a run saved before byte fallback existed has characters only
        return cls(data["chars"], byte_fallback=bool(data.get("byte_fallback", False)))

    def default_oov(self, oov: str | None) -> str:
        """``oov`` as given, else ``bytes`` for a vocabulary with byte ids and ``error`` without."""
        oov = oov or ("bytes" if self.bytes else "error")
        if oov not in OOVS:
            raise CharlmError(f"--oov must be one of {', '.join(OOVS)} (got {oov!r})")
        if oov == "bytes" and not self.bytes:
            raise CharlmError("--oov bytes needs a model with byte tokens (train it with --byte-fallback on); "
                              "use --oov skip or error")
        return oov

    def unknown_chars(self, text: str) -> list[str]:
        """Characters of ``text`` the vocabulary lacks, in order of first appearance."""
        return [c for c in dict.fromkeys(text) if c not in self._index]

    def encode(self, text: str, oov: str | None = None, what: str = "text") -> np.ndarray:
        """Text to ids.  ``oov``: ``error`` names unknown characters, ``skip`` drops them,
        ``bytes`` writes them as their UTF-8 byte ids (the default with byte ids)."""
        oov = self.default_oov(oov)
        codes = _codepoints(text)
        if codes.size == 0:
            return np.zeros(0, dtype=self.dtype)
        if codes.dtype == np.uint8 and self.num_chars and self._codes.max() < 256:
            table = np.full(256, -1, dtype=np.int16)
            table[self._codes] = np.arange(self.num_chars)
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
            pos = np.minimum(pos, max(self.num_chars - 1, 0))
            known = self._sorted_codes[pos] == codes if self.num_chars else np.zeros(codes.size, bool)
            ids = self._order[pos] if self.num_chars else np.zeros(codes.size, np.int64)
        if not known.all():
            if oov == "bytes":
                ids = utf8_units(codes.astype(np.int64), ids, known, self.num_chars)
            elif oov == "skip":
                ids = ids[known]
            else:
                unknown = self.unknown_chars(text)
                shown = describe_chars(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
                raise CharlmError(
                    f"{what} has {len(unknown)} character(s) outside the model's vocabulary: "
                    f"{shown} (use --oov skip to drop them)")
        return ids.astype(self.dtype)

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if not self.bytes or not (ids >= self.num_chars).any():
            return "".join(self.chars[i] for i in ids)
        if getattr(self, "_unit_bytes", None) is None:
            self._unit_bytes = [c.encode("utf-8", "surrogatepass") for c in self.chars] + \
                [bytes([b]) for b in range(BYTES)]
        return b"".join(self._unit_bytes[i] for i in ids).decode("utf-8", "replace")

    def characters(self, ids) -> int:
        """How many characters ``ids`` stand for: every id but a UTF-8 continuation byte's."""
        ids = np.asarray(ids)
        if not self.bytes:
            return int(ids.size)
        count = 0
        for start in range(0, ids.size, CHUNK):
            piece = ids[start:start + CHUNK].astype(np.int64) - self.num_chars
            count += int(piece.size - np.count_nonzero((piece >= 0) & (piece & 0xC0 == 0x80)))
        return count

    def complete(self, ids) -> int:
        """How many of ``ids`` make whole characters: all but an unfinished UTF-8 sequence at the end."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if not self.bytes:
            return ids.size
        for back in range(1, min(4, ids.size) + 1):
            b = int(ids[-back]) - self.num_chars
            if b < 0 or b < 0x80:
                return ids.size          # a character or an ASCII byte: nothing open
            if b >= 0xC0:                # a lead byte: its sequence is 2, 3 or 4 bytes long
                need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
                return ids.size if back >= need else ids.size - back
        return ids.size


def utf8_units(codes: np.ndarray, ids: np.ndarray, known: np.ndarray, num_chars: int) -> np.ndarray:
    """``ids`` where ``known``, each other code point as its UTF-8 byte ids (``num_chars + byte``)."""
    length = np.where(known, 1, 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000))
    starts = np.cumsum(length) - length
    source = np.repeat(np.arange(codes.size), length)
    k = np.arange(source.size) - starts[source]          # the byte's place in its character
    c, n = codes[source], length[source]
    shifted = c >> (6 * (n - 1 - k))
    lead = np.array([0, 0, 0xC0, 0xE0, 0xF0])[n]
    byte = np.where(k == 0, lead | shifted, 0x80 | (shifted & 0x3F))
    return np.where(known[source], ids[source], num_chars + byte)


# The UTF-8 automaton (RFC 3629's well-formed sequences): state 0 is between characters; the
# others wait for continuation bytes.  (state, first byte, last byte, next state) for each range
# of bytes a state takes; a character token is taken in state 0 only.
UTF8_STATES = 8
UTF8_MOVES = ((0, 0x00, 0x7F, 0), (0, 0xC2, 0xDF, 1), (0, 0xE0, 0xE0, 3), (0, 0xE1, 0xEC, 2),
              (0, 0xED, 0xED, 4), (0, 0xEE, 0xEF, 2), (0, 0xF0, 0xF0, 5), (0, 0xF1, 0xF3, 6),
              (0, 0xF4, 0xF4, 7), (1, 0x80, 0xBF, 0), (2, 0x80, 0xBF, 1), (3, 0xA0, 0xBF, 1),
              (4, 0x80, 0x9F, 1), (5, 0x90, 0xBF, 2), (6, 0x80, 0xBF, 2), (7, 0x80, 0x8F, 2))


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
    def for_ids(cls, kind: str, vocab: Vocabulary, ids: np.ndarray, min_pair_count: int = 1,
                max_tokens: int | None = None) -> "Tokenizer":
        """The tokenizer a new run trains with on character ids ``ids`` (its training text).

        A sparse bigram vocabulary keeps the pairs its own greedy cut of ``ids`` takes at least
        ``min_pair_count`` times, the most frequent first, so that it has at most ``max_tokens``
        tokens (``None``: no cap); the rest of the text is cut into single characters.  The
        counts are the greedy cut's: the candidate pairs (those the non-overlapping cut holds at
        least ``min_pair_count`` times) cut the text greedily, and a pair is kept by how often that
        cut takes it, which is how often the model sees it as a token (a pair that overlaps a more
        frequent one on both sides is seldom taken, however often it occurs).
        """
        v = vocab.size
        if min_pair_count < 1:
            raise CharlmError(f"--min-pair-count must be at least 1 (got {min_pair_count})")
        if max_tokens is not None and max_tokens < 1:
            raise CharlmError(f"--max-tokens must be at least 1 (got {max_tokens})")
        if kind != "bigram" or v * v <= DENSE_PAIRS_MAX:
            return cls(kind, vocab)
        keys, counts = cls._pair_counts(ids, vocab, 0)
        room = v * v if max_tokens is None else max(0, max_tokens - v)
        if min_pair_count > 1 or keys.size > room:
            # candidates by the non-overlapping cut, then kept by the greedy cut's own counts
            keys = keys[counts >= min_pair_count]
            candidates = cls(kind, vocab, np.stack([keys // v, keys % v], axis=-1))
            taken = candidates.tokens(np.asarray(ids))
            used = np.bincount(taken.astype(np.int64), minlength=candidates.num_tokens)[v:]
            order = np.argsort(-used, kind="stable")
            order = order[used[order] >= min_pair_count][:room]
            keys = np.sort(keys[order])
        if not vocab.bytes and v * v <= v + keys.size:
            return cls(kind, vocab)
        return cls(kind, vocab, np.stack([keys // v, keys % v], axis=-1))

    @staticmethod
    def _pair_counts(ids: np.ndarray, vocab: Vocabulary, offset: int):
        """``(keys a * V + b, counts)`` of the character pairs (no byte ids) of the cut of ``ids``
        into pairs from ``offset``, chunk by chunk."""
        v, c = vocab.size, vocab.num_chars
        ids = np.asarray(ids)[offset:]
        keys = np.zeros(0, dtype=np.int64)
        counts = np.zeros(0, dtype=np.int64)
        step = CHUNK // 2 * 2
        end = ids.size // 2 * 2
        for start in range(0, end, step):
            piece = ids[start:min(start + step, end)].astype(np.int64)
            a, b = piece[0::2], piece[1::2]
            found, found_counts = np.unique((a * v + b)[(a < c) & (b < c)], return_counts=True)
            keys, where = np.unique(np.concatenate([keys, found]), return_inverse=True)
            counts = np.bincount(where, weights=np.concatenate([counts, found_counts]),
                                 minlength=keys.size).astype(np.int64)
        return keys, counts

    def utf8_grammar(self):
        """The UTF-8 automaton over this tokenizer's tokens, for a vocabulary with byte ids (else
        ``None``): ``(next [S, N] int32, made [S, N] int32)``, the automaton's state after token
        ``n`` in state ``s`` (-1: ``n`` is not allowed there) and the characters it completes."""
        if not self.vocab.bytes:
            return None
        c, n = self.vocab.num_chars, self.num_tokens
        follow = np.full((UTF8_STATES, n), -1, dtype=np.int32)
        made = np.zeros((UTF8_STATES, n), dtype=np.int32)
        follow[0, :c] = 0
        made[0, :c] = 1
        if self.sparse:                  # pair tokens: two characters
            follow[0, c + BYTES:] = 0
            made[0, c + BYTES:] = 2
        for state, low, high, after in UTF8_MOVES:
            follow[state, c + low:c + high + 1] = after
            made[state, c + low:c + high + 1] = after == 0
        return follow, made

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
        return cls(kind, vocab, vocab.encode("".join(texts), oov="error", what="the bigram pair list").reshape(-1, 2))

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
        if self.sparse and tokens.size and tokens[-1] < self.vocab.num_chars:
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

    def encode_text(self, text: str, oov: str | None = None, what: str = "text"):
        """Text to ``(tokens, leftover character ids)``."""
        ids = self.vocab.encode(text, oov=oov, what=what)
        return self.tokens(ids), self.leftover(ids)

    def decode_tokens(self, tokens) -> str:
        return self.vocab.decode(self.chars(np.atleast_1d(tokens)))
