"""Matmuls in a compute dtype: bfloat16 weights make a bfloat16 product, returned in the input's dtype.

Shared by the model (``charlm.nn.model``) and the cells' loops (``charlm.fast``).
"""
from __future__ import annotations

import tensorflow as tf


def matmul(a, b, **kwargs):
    """``a @ b`` in ``b``'s dtype (bfloat16 weights make a bfloat16 product), returned in ``a``'s."""
    if a.dtype == b.dtype:
        return tf.matmul(a, b, **kwargs)
    return tf.cast(tf.matmul(tf.cast(a, b.dtype), b, **kwargs), a.dtype)


def matmul_seq(x, w, compute=None):
    """``[T, B, K] @ [K, N]`` as one matmul (in ``compute``, returned in ``x``'s dtype)."""
    shape = tf.shape(x)
    y = matmul(tf.reshape(x, [-1, shape[-1]]), tf.cast(w, compute or w.dtype))
    return tf.reshape(y, tf.concat([shape[:-1], [tf.shape(w)[1]]], 0))
