"""The mirror model's data: lines of words and of random letters, padded batches, mirrored targets.

Training pairs are lines of 1 to ``max_words`` consecutive words of the corpus (at most
``max_chars`` characters), mixed with lines of random letter strings so the model learns to copy
letters by position rather than remember words.  The corpus's last ``heldout`` fraction is never
trained on.  Batch ``k`` is drawn from ``numpy.random.default_rng([seed, k])``, so the data stream
needs no state of its own: a resumed run (weights, Adam slots, step from the checkpoint) continues
exactly.  Batches are drawn BLOCK at a time and a block's lines sorted by length before they are
cut into batches, so a batch's rows have similar lengths and its padded width stays small.
"""
from __future__ import annotations

import numpy as np

from charlm.data.vocab import Vocabulary
from charlm.errors import CharlmError
from charlm.mirror.config import MirrorConfig

WIDTH_STEP = 16          # padded widths are multiples of this (one compiled program each)
BLOCK = 32               # training batches drawn, sorted by length and shuffled together
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def mirror_words(line: str) -> str:
    """The expected output, by rule: used to make training targets and to score, never to answer."""
    return " ".join(word[::-1] for word in line.split(" "))


class LineSource:
    """Training lines cut from a text's words, and random-letter lines, as padded id arrays."""

    def __init__(self, text: str, vocab: Vocabulary, config: MirrorConfig):
        words = text.split()
        if not words:
            raise CharlmError("the corpus has no words to make training lines from")
        self.vocab, self.cfg = vocab, config
        self.space = vocab.chars.index(" ")
        self.ids = vocab.encode(" ".join(words), what="corpus").astype(np.int32)
        lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
        self.ends = np.cumsum(lengths + 1) - 1          # one past each word's last character
        self.starts = self.ends - lengths
        fits = lengths <= config.max_chars
        if not fits.any():
            raise CharlmError(f"every word of the corpus is longer than {config.max_chars} characters")
        self.fitting = np.nonzero(fits)[0]               # words a line may start with
        self._block = None
        self.letters = np.array([i for i, c in enumerate(vocab.chars) if not c.isspace()], dtype=np.int32)

    def batch(self, step: int):
        """Batch ``step``: ``(source ids [B, W], lengths [B])``, W a multiple of WIDTH_STEP.

        Batches come in blocks of BLOCK drawn from ``default_rng([seed, block])``; a block's lines
        are sorted by length and cut into its batches (taken in a shuffled order), so a batch's
        rows have similar lengths and the compiled loops run few padded steps.
        """
        block, k = divmod(step, BLOCK)
        if self._block is None or self._block[0] != block:
            self._block = (block, self._make_block(block))
        return self._block[1][k]

    def _make_block(self, block: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, block])
        n = cfg.batch_size * BLOCK
        words = rng.integers(1, cfg.max_words + 1, size=n)
        first = self.fitting[rng.integers(self.fitting.size, size=n)]
        count = np.minimum(words, len(self.starts) - first)
        while True:      # drop words from the end until the line fits (a fitting first word does)
            long = self.ends[first + count - 1] - self.starts[first] > cfg.max_chars
            if not long.any():
                break
            count[long] -= 1
        random_rows = rng.random(n) < cfg.random_fraction
        rows = [self._random_line(rng, words[k]) if random_rows[k]
                else self.ids[self.starts[first[k]]:self.ends[first[k] + count[k] - 1]] for k in range(n)]
        rows.sort(key=len)
        batches = [pad_rows(rows[i:i + cfg.batch_size]) for i in range(0, n, cfg.batch_size)]
        return [batches[i] for i in rng.permutation(BLOCK)]

    def _random_line(self, rng, n_words: int):
        sizes = rng.integers(1, min(12, self.cfg.max_chars) + 1, size=n_words)
        while sizes.sum() + sizes.size - 1 > self.cfg.max_chars:
            sizes = sizes[:-1]
        parts = []
        for size in sizes:
            parts += [self.letters[rng.integers(self.letters.size, size=size)], [self.space]]
        return np.concatenate(parts[:-1]).astype(np.int32)


def pad_rows(rows, width: int | None = None):
    """Rows of ids -> ``(ids [B, W], lengths [B])``, W rounded up to a multiple of WIDTH_STEP."""
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    longest = int(lengths.max(initial=0))
    width = width or max(WIDTH_STEP, -(-longest // WIDTH_STEP) * WIDTH_STEP)
    ids = np.zeros((len(rows), width), dtype=np.int32)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = r
    return ids, lengths


def mirror_targets(src: np.ndarray, lengths: np.ndarray, space: int) -> np.ndarray:
    """The mirrored lines of a padded batch (for training targets), vectorised over the batch."""
    b, w = src.shape
    pos = np.broadcast_to(np.arange(w), (b, w))
    inside = pos < lengths[:, None]
    gap = (src == space) | ~inside
    # a word runs from the position after the last gap before it to the position before the next
    last_gap = np.maximum.accumulate(np.where(gap, pos, -1), axis=1)
    next_gap = np.minimum.accumulate(np.where(gap, pos, w)[:, ::-1], axis=1)[:, ::-1]
    source = np.where(gap, pos, last_gap + next_gap - pos)
    return np.where(inside, np.take_along_axis(src, source, axis=1), 0).astype(np.int32)


# -- lines to score ----------------------------------------------------------------------------------
def cut_lines(text: str, count: int | None = None, seed: int = 0, max_words: int = 10, max_chars: int = 80) -> list[str]:
    """Consecutive lines of 1..max_words words (at most max_chars characters) from ``text``'s words."""
    words = text.split()
    rng = np.random.default_rng(seed)
    lines, i = [], 0
    while i < len(words) and (count is None or len(lines) < count):
        n = int(rng.integers(1, max_words + 1))
        line = " ".join(words[i:i + n])
        while len(line) > max_chars and n > 1:
            n -= 1
            line = " ".join(words[i:i + n])
        if len(line) <= max_chars:
            lines.append(line)
        i += n
    return lines


def random_letter_lines(count: int, seed: int = 0, max_words: int = 6, max_letters: int = 9,
                        letters: str = LETTERS) -> list[str]:
    """Lines of 1..max_words random strings of 1..max_letters letters (words nobody wrote)."""
    rng = np.random.default_rng(seed)
    pick = np.array(list(letters))
    return [" ".join("".join(rng.choice(pick, size=rng.integers(1, max_letters + 1)))
                     for _ in range(rng.integers(1, max_words + 1))) for _ in range(count)]
