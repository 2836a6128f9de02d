"""Layer 0's input half as a row lookup (what it gains: no matmul over one-hot rows, a cheap gradient).

``x_t @ W_x + bias`` for one-hot input is row ``x_t`` of ``W_x + bias``; for an embedding it is a row
of ``embedding @ W_x + bias`` whenever that table is smaller than the positions it serves.  Used by
:meth:`charlm.nn.model.CharLM.input_projection` for every training window, scoring and sampling.
"""
from __future__ import annotations

import tensorflow as tf

# Up to this many rows, a lookup's gradient is a one-hot matmul (``[V, T*B] @ [T*B, 4H]``): on
# this CPU that sums 3200 positions of 2048 gates into 27 rows in ~3 ms, against ~16 ms for the
# scatter-add (UnsortedSegmentSum) that tf.gather's gradient becomes.
ONE_HOT_GRAD_ROWS = 64


@tf.custom_gradient
def _lookup_one_hot_grad(table, tokens):
    rows = tf.gather(table, tokens)

    def grad(d_rows):
        num = tf.shape(table)[0]
        one_hot = tf.one_hot(tf.reshape(tokens, [-1]), num, dtype=d_rows.dtype)
        d_flat = tf.reshape(d_rows, [-1, tf.shape(table)[1]])
        return tf.matmul(one_hot, d_flat, transpose_a=True), None

    return rows, grad


def lookup(table, tokens):
    """``tf.gather(table, tokens)``; for a small table its gradient is a one-hot matmul."""
    if table.shape[0] is not None and table.shape[0] <= ONE_HOT_GRAD_ROWS:
        return _lookup_one_hot_grad(table, tokens)
    return tf.gather(table, tokens)


def table_is_smaller(tokens, num_tokens: int) -> bool:
    """Whether a ``[num_tokens, gates]`` table costs less than projecting every position (static shapes)."""
    positions = tokens.shape.num_elements()
    return positions is not None and num_tokens <= positions
