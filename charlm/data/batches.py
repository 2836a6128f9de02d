"""The ud730 BatchGenerator, vectorised.

``batch_size`` cursors start evenly spaced through the token array (row ``b`` at
``b * (len // batch_size)``).  Each :meth:`BatchGenerator.next` returns ``num_unrollings + 1``
steps, and its first step is the previous call's last, so the model sees every transition once
and the carried LSTM state of row ``b`` always continues row ``b``'s own text (truncated BPTT).
Cursors wrap around the end of the text, as in the notebook.

The notebook builds one-hot rows with a Python loop per character; here a batch is one numpy
fancy-index of token ids, and the model turns ids into inputs itself.
"""
from __future__ import annotations

import numpy as np

from charlm.data.prepared import release
from charlm.errors import CharlmError

RELEASE_EVERY = 1 << 26     # tokens read between two releases of a memory map's pages


class BatchGenerator:
    def __init__(self, tokens: np.ndarray, batch_size: int, num_unrollings: int,
                 cursors: np.ndarray | None = None, unit: str = "tokens"):
        tokens = np.asarray(tokens)
        if tokens.ndim != 1:
            raise ValueError("tokens must be a 1-D array")
        if batch_size < 1 or num_unrollings < 1:
            raise CharlmError("batch size and unrollings must be at least 1")
        if tokens.size < batch_size * (num_unrollings + 1):
            raise CharlmError(
                f"the training text has {tokens.size} {unit}, fewer than one batch "
                f"(batch size {batch_size} x (unrollings {num_unrollings} + 1) = "
                f"{batch_size * (num_unrollings + 1)}); use a longer corpus or smaller "
                f"--batch-size/--unrollings")
        self.tokens = tokens
        self.batch_size = batch_size
        self.num_unrollings = num_unrollings
        segment = tokens.size // batch_size
        self.cursors = (np.arange(batch_size, dtype=np.int64) * segment
                        if cursors is None else np.array(cursors, dtype=np.int64))
        self._steps = np.arange(num_unrollings + 1, dtype=np.int64)
        self._read = 0

    def next(self) -> np.ndarray:
        """The next batch: token ids of shape ``[num_unrollings + 1, batch_size]`` (time major)."""
        return self.next_many(1)[0]

    def next_many(self, count: int) -> np.ndarray:
        """``count`` consecutive batches at once: shape ``[count, num_unrollings + 1, batch_size]``."""
        u = self.num_unrollings
        starts = self.cursors[None, :] + (np.arange(count, dtype=np.int64) * u)[:, None]
        positions = starts[:, None, :] + self._steps[None, :, None]
        self.cursors = (self.cursors + count * u) % self.tokens.size
        batches = self.tokens[positions % self.tokens.size]
        self._read += batches.size
        if self._read >= RELEASE_EVERY:         # a memory-mapped corpus: keep only recent pages resident
            self._read = 0
            release(self.tokens)
        return batches
