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


def split_ids(ids: np.ndarray, valid_size: int, how: str = "first") -> tuple[np.ndarray, np.ndarray]:
    """``(validation ids, training ids)`` of a corpus's character ids."""
    if how == "first":
        return ids[:valid_size], ids[valid_size:]
    if how != "spread":
        raise CharlmError(f"--valid-split must be one of {', '.join(SPLITS)} (got {how!r})")
    chunks = spread_chunks(ids.size, valid_size)
    keep = np.ones(ids.size, bool)
    for start, end in chunks:
        keep[start:end] = False
    return ids[~keep], ids[keep]

