"""Which characters of a corpus validate a run and which train it.

``first`` is the ud730 notebook's split: the first ``valid_size`` characters validate, the rest
train.  On text8 that is fine (the text is one kind throughout), but a general text file changes
as it goes (a collection of fortunes, a book's chapters, a source tree), and its first
characters say little about the rest.  ``spread`` holds out ``valid_size`` characters (at most a
tenth of the text) as ``SPREAD_CHUNKS`` equal chunks centred at evenly spaced points, so the
validation figure samples the whole text; training reads what is left, in order.
"""
from __future__ import annotations

import numpy as np

from charlm.errors import CharlmError

SPLITS = ("first", "spread")
SPREAD_CHUNKS = 20
MIN_CHUNK = 200         # characters; smaller hold-outs use fewer chunks


def spread_chunks(length: int, valid_size: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: the validation chunks of the ``spread`` split of ``length`` characters."""
    size = min(valid_size, length // 10)
    count = max(1, min(SPREAD_CHUNKS, size // MIN_CHUNK))
    width = size // count
    if width == 0:
        return []
    starts = [int((i + 0.5) * length / count) - width // 2 for i in range(count)]
    return [(s, s + width) for s in starts]


def split_ranges(length: int, valid_size: int, how: str = "first"):
    """``(validation ranges, training ranges)``, each a list of ``(start, end)`` in reading order:
    the split of a corpus of ``length`` characters without touching them (a memory-mapped corpus
    is read only where it is used)."""
    if how == "first":
        cut = min(valid_size, length)
        return [(0, cut)], [(cut, length)]
    if how != "spread":
        raise CharlmError(f"--valid-split must be one of {', '.join(SPLITS)} (got {how!r})")
    valid = spread_chunks(length, valid_size)
    edges = [0] + [x for chunk in valid for x in chunk] + [length]
    return valid, [(a, b) for a, b in zip(edges[0::2], edges[1::2]) if b > a]


def join(ids: np.ndarray, ranges) -> np.ndarray:
    """The ids of ``ranges`` in one array: a view when there is one range (no copy of a big corpus)."""
    ranges = [(a, b) for a, b in ranges if b > a]
    if len(ranges) == 1:
        return ids[ranges[0][0]:ranges[0][1]]
    return np.concatenate([ids[a:b] for a, b in ranges]) if ranges else ids[:0]


def split_ids(ids: np.ndarray, valid_size: int, how: str = "first") -> tuple[np.ndarray, np.ndarray]:
    """``(validation ids, training ids)`` of a corpus's character ids."""
    valid, train = split_ranges(ids.size, valid_size, how)
    return join(ids, valid), join(ids, train)
