"""Scoring a long text as side-by-side streams (what it gains: the matmuls see a batch, not one row).

Used by :class:`charlm.use.scoring.Scorer` for texts of more than ``STREAM_TOKENS`` tokens (and
for validation while training) when the model's cells can run feature-major (the LSTM).  The text
is cut into ``streams`` contiguous pieces that run as the columns of one batch, each with its own
state.  Each piece after the first first reads the ``WARMUP`` tokens before it without scoring
them, so its state has context when its own tokens are scored; the figure then differs from the
one-state one by far less than a run's seed moves it (measured in benchmarks/README.md).

Inside the loop the states are feature-major ``[H, S]`` and the gates ``[4H, S]``; with charlm's
kernels (:mod:`charlm.fast.kernels`) a step is a matmul, a column lookup and one op per layer;
without, the cell's own equations compute the same on the same layout.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from charlm.fast import kernels

STREAM_TOKENS = 4096      # default streams: one per this many tokens ...
MAX_STREAMS = 256         # ... up to this many
WARMUP = 256              # tokens a stream reads before its own, unscored
STREAM_STEPS = 128        # time steps per compiled call of the streamed loop
# Layer 0's input columns come from the transposed table (charlm's column kernel: each output row
# reads one table row, which stays in cache) up to this many tokens; above, a row of the table
# no longer stays in cache (6,000 tokens, 512 units: 822 against 175 us a step at 48 streams), and
# the table's rows are gathered and transposed instead.
COLUMN_TOKENS = 1024


def default_streams(tokens: int) -> int:
    return max(1, min(MAX_STREAMS, tokens // STREAM_TOKENS))


def grid_steps(tokens: int, streams: int) -> int:
    """Rows of :func:`grid` for a text of ``tokens`` tokens: a multiple of ``STREAM_STEPS``."""
    length = -(-tokens // streams)
    steps = min(WARMUP, length) + length
    return steps + -steps % STREAM_STEPS


def grid(tokens: np.ndarray, streams: int, start: int = 0, stop: int | None = None):
    """``(ids, valid, scored)`` ``[steps, streams]``: column ``s`` holds piece ``s`` (tokens ``s*L``
    to ``(s+1)*L``) after the ``WARMUP`` tokens before it; positions outside the text are padding,
    through which a stream's state stays as it is (so the first stream starts from the zero state,
    as one state would).  ``steps`` is :func:`grid_steps`; ``start``/``stop`` give only those rows
    (a long text, memory-mapped, is read a block of rows at a time)."""
    n = tokens.size
    length = -(-n // streams)
    warmup = min(WARMUP, length)
    stop = grid_steps(n, streams) if stop is None else stop
    first = np.arange(streams)[None, :] * length
    pos = np.arange(start, stop)[:, None] - warmup + first
    valid = (pos >= 0) & (pos < n)
    scored = valid & (pos >= first) & (pos < first + length)    # each position exactly once
    ids = np.where(valid, tokens[np.clip(pos, 0, n - 1)], 0).astype(np.int32)
    return ids, valid, scored


def stream_weights(model, compute):
    """The model's weights for the streamed loop: transposed (feature-major), the recurrent and
    deeper input kernels in ``compute``; layer 0's input half the ``[V, 4H]`` table of
    :meth:`CharLM.step_weights` and its transpose (a token's column); the output layer's
    ``model.softmax.step_weights(compute)``.  The transpose is kept only for a table of at most
    ``COLUMN_TOKENS`` rows."""
    weights = model.step_weights()
    layers = [(tf.cast(tf.transpose(w_x), compute), tf.cast(tf.transpose(w_h), compute), bias[:, None])
              for w_x, w_h, bias in weights["layers"]]
    out = {"table": weights["table"], "layers": layers, "softmax": model.softmax.step_weights(compute)}
    if weights["table"].shape[0] <= COLUMN_TOKENS:
        out["table_t"] = tf.transpose(weights["table"])
    return out


def zero_state(model, streams: int):
    return [(tf.zeros([model.config.hidden, streams]),) * 2 for _ in model.cells]


def last_logits(model, state):
    """The logits after the last stream's state (the text's end)."""
    top = tf.transpose(state[-1][0])[-1:]
    return model.softmax.logits(top)[0]


def score(cells, dtype, output, weights, ids, valid, scored, state):
    """Nats of the ``scored`` positions of ``ids`` ``[K, S]``; the states are ``[H, S]``.
    ``output``: the model's softmax (``step_nats`` of ``weights["softmax"]``, ``[S, H]`` and the targets)."""
    library = kernels.lstm_steps() if dtype == tf.float32 else None

    def body(t, state, total):
        # the prediction for position t comes from the state before it
        nats = output.step_nats(weights["softmax"], tf.transpose(state[-1][0]), ids[t])
        total += tf.reduce_sum(tf.where(scored[t], tf.cast(nats, tf.float64), 0.0))
        keep = valid[t]
        new_state = []
        x = None
        for layer, (cell, (w_x, w_h, bias)) in enumerate(zip(cells, weights["layers"])):
            h, c = state[layer]
            zr = tf.matmul(w_h, tf.cast(h, w_h.dtype))
            xw = _mm(w_x, x) + bias if layer else _columns(weights, ids[t], library)
            if library is not None:
                x, _, c = library.charlm_lstm_step(xw, zr, h, c, keep)
            else:
                x, c_new, _ = cell.forward(xw + tf.cast(zr, tf.float32), c, axis=0)
                x, c = tf.where(keep[None, :], x, h), tf.where(keep[None, :], c_new, c)
            new_state.append((x, c))
        return t + 1, new_state, total

    _, state, total = tf.while_loop(lambda t, *_: t < tf.shape(ids)[0], body,
                                    (0, state, tf.constant(0.0, tf.float64)))
    return total, state


def _columns(weights, ids, library):
    """Layer 0's input half for tokens ``ids`` ``[S]``: ``[4H, S]``, by charlm's column kernel
    from the transposed table where :func:`stream_weights` kept one, else gathered and transposed."""
    if library is not None and "table_t" in weights:
        return library.charlm_columns(weights["table_t"], ids)
    return tf.transpose(tf.gather(weights["table"], ids))


def _mm(w, x):
    """``w @ x`` in ``w``'s dtype, returned in float32."""
    return tf.cast(tf.matmul(w, tf.cast(x, w.dtype)), tf.float32)
