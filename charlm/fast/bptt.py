"""A recurrent layer over a whole window with a hand-derived backward pass (any single-state cell:
the GRU and the Elman RNN; the LSTM's own loops are in :mod:`charlm.fast.lstm_loops`).

What it gains: autodiff of a time loop builds one small weight-gradient matmul per step plus much
bookkeeping; here the backward pass carries only the ``dh`` chain through time and computes the
recurrent kernel's gradient after it as one ``[H, T*B] @ [T*B, gH]`` matmul.

When it is used: every training window.  ``loop`` picks the form (:func:`choose`):

* ``"unrolled"``: the time loop unrolled in Python, what XLA compiles best (short windows);
* ``"loop"``: the same forward and backward as symbolic while-loops, traced once at any length
  (512 units x 50 steps: ~3.6 s for the first call instead of ~6.7 s unrolled);
* ``"inference"``: a plain while-loop without the hand backward (scoring, no gradient wanted);
* ``"auto"`` (default): ``unrolled`` up to :data:`STATIC_UNROLL_LIMIT` steps, ``loop`` beyond.

The cell supplies its equations: ``cell.forward(xw, h, hw, *params) -> (h', saved)`` and
``cell.backward(dh, h_prev, saved, *params) -> (d xw, d hw, dh through a direct path or None)``,
with ``xw`` the input half (bias included) and ``hw = h @ recurrent kernel``.
"""
from __future__ import annotations

import tensorflow as tf

LOOPS = ("auto", "unrolled", "loop", "inference")
# Training windows at most this long are unrolled in Python inside a tf.function; longer ones use
# the symbolic loops.  Read at call time (tests lower it to reach the loops with short windows).
STATIC_UNROLL_LIMIT = 20


def choose(loop: str, steps) -> str:
    """The form a window of ``steps`` (static, or None) runs as."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, not {loop!r}")
    if loop == "auto":
        return "unrolled" if steps is not None and steps <= STATIC_UNROLL_LIMIT else "loop"
    return loop


def recur(cell, xw, h, w_h, loop: str = "auto"):
    """The recurrent half of one layer over all steps (recurrent kernel ``w_h``): ``(outputs [T, B, H], h)``."""
    params = tuple(tf.convert_to_tensor(p) for p in cell.params())   # custom gradients take tensors
    form = choose(loop, xw.shape[0])
    if form == "loop":
        return _bptt_loop(cell)(xw, h, w_h, *params)
    if form == "unrolled":
        return _bptt_static(cell)(xw, h, w_h, *params)
    n = tf.shape(xw)[0]

    def body(t, h, out):
        h = cell.forward(xw[t], h, tf.matmul(h, w_h), *params)[0]
        return t + 1, h, out.write(t, h)

    _, h, out = tf.while_loop(lambda t, *_: t < n, body, (0, h, tf.TensorArray(xw.dtype, size=n)))
    return out.stack(), h


def weight_grad(h_prev, d_hw, dtype=None):
    """The recurrent kernel's gradient over all steps as one ``[H, T*B] @ [T*B, gH]`` matmul (in ``dtype``)."""
    h_flat = tf.reshape(h_prev, [-1, tf.shape(h_prev)[-1]])
    d_flat = tf.reshape(d_hw, [-1, tf.shape(d_hw)[-1]])
    if dtype is not None:
        h_flat, d_flat = tf.cast(h_flat, dtype), tf.cast(d_flat, dtype)
    return tf.matmul(h_flat, d_flat, transpose_a=True)


def _step_back(cell, dh, h_prev, saved, w_t, params):
    """One BPTT step: ``(d xw, d hw, dh for the previous step)``."""
    d_xw, d_hw, direct = cell.backward(dh, h_prev, saved, *params)
    d_h = tf.matmul(d_hw, w_t)
    return d_xw, d_hw, d_h if direct is None else d_h + direct


def _bptt_static(cell):
    """The time loop unrolled in Python (XLA compiles it), with a hand-derived backward pass."""

    @tf.custom_gradient
    def run(xw, h, w_h, *params):
        steps = xw.shape[0]
        hs, saved = [h], []
        for t in range(steps):
            h_new, acts = cell.forward(xw[t], hs[-1], tf.matmul(hs[-1], w_h), *params)
            hs.append(h_new)
            saved.append(acts)
        outputs = tf.stack(hs[1:])

        def grad(d_outputs, d_h):
            d_outputs = tf.zeros_like(outputs) if d_outputs is None else d_outputs
            d_h = tf.zeros_like(h) if d_h is None else d_h
            w_t = tf.transpose(w_h)
            d_xws, d_hws = [None] * steps, [None] * steps
            for t in reversed(range(steps)):
                d_xws[t], d_hws[t], d_h = _step_back(cell, d_outputs[t] + d_h, hs[t], saved[t], w_t, params)
            d_hw = tf.stack(d_hws)
            return (tf.stack(d_xws), d_h, weight_grad(tf.stack(hs[:-1]), d_hw), *cell.param_grads(d_hw, *params))

        return (outputs, hs[-1]), grad

    return run


def _bptt_loop(cell):
    """``_bptt_static``'s forward and backward as symbolic while-loops (traced once at any length)."""

    @tf.custom_gradient
    def run(xw, h, w_h, *params):
        n = tf.shape(xw)[0]
        arrays = lambda k: tuple(tf.TensorArray(xw.dtype, size=n) for _ in range(k))  # noqa: E731

        def forward(t, h, saved):
            h_new, acts = cell.forward(xw[t], h, tf.matmul(h, w_h), *params)
            return t + 1, h_new, tuple(a.write(t, v) for a, v in zip(saved, (h,) + acts))

        _, h_last, saved = tf.while_loop(lambda t, *_: t < n, forward, (0, h, arrays(1 + cell.saved)))
        h_prev = saved[0].stack()
        outputs = tf.concat([h_prev[1:], h_last[None]], 0)

        def grad(d_outputs, d_h):
            d_outputs = tf.zeros_like(outputs) if d_outputs is None else d_outputs
            d_h = tf.zeros_like(h) if d_h is None else d_h
            w_t = tf.transpose(w_h)

            def backward(k, d_h, d_xws, d_hws):
                t = n - 1 - k
                acts = tuple(a.read(t) for a in saved[1:])
                d_xw, d_hw, d_h = _step_back(cell, d_outputs[t] + d_h, saved[0].read(t), acts, w_t, params)
                return k + 1, d_h, d_xws.write(t, d_xw), d_hws.write(t, d_hw)

            _, d_h0, d_xws, d_hws = tf.while_loop(lambda k, *_: k < n, backward, (0, d_h, *arrays(2)))
            d_hw = d_hws.stack()
            return (d_xws.stack(), d_h0, weight_grad(h_prev, d_hw), *cell.param_grads(d_hw, *params))

        return (outputs, h_last), grad

    return run
