"""The LSTM over a whole window, three ways, each with the same hand-derived backward pass.

What they gain: the recurrent half ``h @ W_h`` is the only matmul left inside the time loop (the
input half is done for all steps at once by the model), the loop carries only the ``dh``/``dc``
chains backward, and the recurrent kernel's gradient is one ``[H, T*B] @ [T*B, 4H]`` matmul after
it.  When each is used (:func:`recur`, ``loop`` as in :func:`charlm.fast.bptt.choose`):

* ``unrolled`` — short windows (up to ``STATIC_UNROLL_LIMIT`` steps): the loop unrolled in Python,
  which XLA compiles best (the ud730 presets; XLA doubles their speed here).
* ``loop`` on charlm's C++ step kernels (:mod:`charlm.fast.kernels`) — long windows in float32 on a
  CPU: feature-major tensors (a step's gates are ``[4H, B]``), the product ``W_h^T @ h`` that
  oneDNN runs ~1.6x (float32) to ~4x (bfloat16 on AMX) faster here than ``h @ W_h``, and one op
  per step's elementwise half forward and backward.
* ``loop`` in plain TensorFlow ops — long windows elsewhere (no compiler, a GPU, float16/64):
  symbolic while-loops traced once at any length; in float32/float16 each backward step's gate
  gradients are TensorFlow's fused ``LSTMBlockCellGrad`` op instead of ~20 small ones.
* ``inference`` — a plain while-loop, no hand backward (scoring).

The cell equations come from the cell (``cell.forward(z, c)`` and ``cell.backward(...)`` of
:class:`charlm.nn.cells.LSTMCell`), gate columns ``[i | f | g | o]``.  TensorFlow's fused op
orders its gates ``[i | g | f | o]``: :func:`_tf_gate_order` converts at its boundary only.
``compute`` is the dtype of the recurrent matmuls (bfloat16: see :mod:`charlm.fast.precision`);
everything else keeps ``xw``'s dtype.
"""
from __future__ import annotations

import functools

import tensorflow as tf

from charlm.fast import bptt, kernels
from charlm.fast.matmul import matmul

# TensorFlow's fused LSTMBlockCellGrad kernel exists for these (CPU and GPU), not for float64.
_FUSED_GRAD_DTYPES = (tf.float32, tf.float16)


def recur(cell_type, xw, h, c, w_h, loop: str = "auto", compute=None):
    """The recurrent half of one LSTM layer over all steps: ``(outputs [T, B, H], h, c)``.

    ``cell_type`` supplies the equations (``forward``, ``backward``); ``w_h`` is the recurrent kernel.
    """
    compute = compute or xw.dtype
    form = bptt.choose(loop, xw.shape[0])
    if form == "loop":
        if xw.dtype == tf.float32 and kernels.lstm_steps() is not None:
            return _kernel_loop(compute)(xw, h, c, w_h)
        return _loop(cell_type, compute)(xw, h, c, w_h)
    w_h = tf.cast(w_h, compute)
    if form == "unrolled":
        return _unrolled(cell_type)(xw, h, c, w_h)
    n = tf.shape(xw)[0]
    out = tf.TensorArray(xw.dtype, size=n)

    def body(t, h, c, out):
        h, c, _ = cell_type.forward(xw[t] + matmul(h, w_h), c)
        return t + 1, h, c, out.write(t, h)

    _, h, c, out = tf.while_loop(lambda t, *_: t < n, body, (0, h, c, out))
    return out.stack(), h, c


def _tf_gate_order(w):
    """Gate columns ``[i | f | g | o]`` <-> ``[i | g | f | o]``, TensorFlow's fused-op order (its own inverse)."""
    i, f, g, o = tf.split(w, 4, axis=-1)
    return tf.concat([i, g, f, o], axis=-1)


def _fused_backward(dh, d_c, c_prev, saved, fused):
    """``cell.backward`` as TensorFlow's one ``LSTMBlockCellGrad`` op: ``dz`` comes in ``[i | g | f | o]``."""
    i, f, g, o, tc = saved
    d_c_prev, dz = tf.raw_ops.LSTMBlockCellGrad(
        # without peepholes the kernel reads tanh(c) from ``co``; ``cs`` is only shape-checked
        cs_prev=c_prev, i=i, cs=c_prev, f=f, o=o, ci=g, co=tc, cs_grad=d_c, h_grad=dh,
        x=c_prev[:, :0], h_prev=c_prev, use_peephole=False, **fused)[:2]
    return dz, d_c_prev


def _fused_grad_inputs(w_h):
    """Inputs ``LSTMBlockCellGrad`` only shape-checks here: the kernel, no bias, no peepholes."""
    hidden = tf.shape(w_h)[0]
    return {"w": w_h, "b": tf.zeros([4 * hidden], w_h.dtype),
            "wci": tf.zeros([hidden], w_h.dtype), "wcf": tf.zeros([hidden], w_h.dtype),
            "wco": tf.zeros([hidden], w_h.dtype)}


@functools.lru_cache(maxsize=None)
def _unrolled(cell_type):
    """The time loop unrolled in Python, with the hand-derived backward pass.  (XLA compiles this
    path, so its backward stays in plain ops.)  ``w_h`` may be bfloat16: the matmuls take its
    dtype, the rest ``xw``'s."""

    @tf.custom_gradient
    def run(xw, h, c, w_h):
        steps = xw.shape[0]
        hs, cs, saved = [h], [c], []
        for t in range(steps):
            h_new, c_new, acts = cell_type.forward(xw[t] + matmul(hs[-1], w_h), cs[-1])
            hs.append(h_new)
            cs.append(c_new)
            saved.append(acts)
        outputs = tf.stack(hs[1:])

        def grad(d_outputs, d_h, d_c):
            d_h = tf.zeros_like(h) if d_h is None else d_h
            d_c = tf.zeros_like(c) if d_c is None else d_c
            w_t = tf.transpose(w_h)
            dzs = [None] * steps
            for t in reversed(range(steps)):
                dzs[t], d_c = cell_type.backward(d_outputs[t] + d_h, d_c, cs[t], saved[t])
                d_h = matmul(dzs[t], w_t)
            d_xw = tf.stack(dzs)
            return d_xw, d_h, d_c, bptt.weight_grad(tf.stack(hs[:-1]), d_xw, w_h.dtype)

        return (outputs, hs[-1], cs[-1]), grad

    return run


@functools.lru_cache(maxsize=None)
def _loop(cell_type, compute):
    """The unrolled form's forward and backward as symbolic while-loops, the recurrent matmuls in
    ``compute``.  Each step's activations go to their own TensorArray (no concat and split per
    step); in float32/float16 the backward steps run TensorFlow's fused op, in its gate order."""

    @tf.custom_gradient
    def run(xw, h, c, w_h):
        n = tf.shape(xw)[0]
        arrays = lambda k: tuple(tf.TensorArray(xw.dtype, size=n) for _ in range(k))  # noqa: E731
        w_c = tf.cast(w_h, compute)

        def forward(t, h, c, saved):
            h_new, c_new, acts = cell_type.forward(xw[t] + matmul(h, w_c), c)
            return t + 1, h_new, c_new, tuple(a.write(t, v) for a, v in zip(saved, (h, c) + acts))

        _, h_last, c_last, saved = tf.while_loop(lambda t, *_: t < n, forward, (0, h, c, arrays(7)))
        h_prev = saved[0].stack()
        outputs = tf.concat([h_prev[1:], h_last[None]], 0)

        def grad(d_outputs, d_h, d_c):
            d_h = tf.zeros_like(h) if d_h is None else d_h
            d_c = tf.zeros_like(c) if d_c is None else d_c
            fused = _fused_grad_inputs(w_h) if xw.dtype in _FUSED_GRAD_DTYPES else None
            order = _tf_gate_order if fused is not None else (lambda w: w)
            w_t = tf.transpose(order(w_c))          # rows in the order the step's dz comes in

            def backward(k, d_h, d_c, dzs):
                t = n - 1 - k
                acts = tuple(a.read(t) for a in saved[2:])
                step_back = cell_type.backward if fused is None else functools.partial(_fused_backward, fused=fused)
                dz, d_c = step_back(d_outputs[t] + d_h, d_c, saved[1].read(t), acts)
                return k + 1, matmul(dz, w_t), d_c, dzs.write(t, dz)

            _, d_h0, d_c0, dzs = tf.while_loop(lambda k, *_: k < n, backward, (0, d_h, d_c, arrays(1)[0]))
            d_xw = order(dzs.stack())
            d_w = bptt.weight_grad(h_prev, d_xw, compute)
            return d_xw, d_h0, d_c0, tf.cast(d_w, w_h.dtype)

        return (outputs, h_last, c_last), grad

    return run


@functools.lru_cache(maxsize=None)
def _kernel_loop(compute):
    """The long-window loops on charlm's own step kernels, float32 on a CPU.

    Inside the loops everything is feature-major: a step's gates are ``[4H, B]`` (row blocks
    ``[i | f | g | o]``) and the recurrent product is ``W_h^T [4H, H] @ h [H, B]``.  Each step's
    elementwise half is one op forward and one backward; the matmuls run in ``compute``.  The
    window's input and output are transposed once at each end.
    """
    library = kernels.lstm_steps()

    @tf.custom_gradient
    def run(xw, h, c, w_h):
        n = tf.shape(xw)[0]
        hidden = tf.shape(w_h)[0]
        arrays = lambda dtype: tf.TensorArray(dtype, size=n)  # noqa: E731
        xw_t = tf.transpose(xw, [0, 2, 1])
        w_t = tf.cast(tf.transpose(w_h), compute)
        h0 = tf.transpose(h)

        def forward(t, h, h_low, c, saved, h_lows, hs):
            h_new, h_new_low, c_new, acts = library.charlm_lstm_forward(xw_t[t], tf.matmul(w_t, h_low), c)
            return t + 1, h_new, h_new_low, c_new, saved.write(t, acts), h_lows.write(t, h_low), hs.write(t, h_new)

        _, h_last, _, c_last, saved, h_lows, hs = tf.while_loop(
            lambda t, *_: t < n, forward,
            (0, h0, tf.cast(h0, compute), tf.transpose(c), arrays(tf.float32), arrays(compute), arrays(tf.float32)))
        outputs = tf.transpose(hs.stack(), [0, 2, 1])

        def grad(d_outputs, d_h, d_c):
            d_out = tf.transpose(d_outputs, [0, 2, 1])
            if d_h is not None:       # the last step's h also reaches the carried state
                d_out = tf.concat([d_out[:-1], d_out[-1:] + tf.transpose(d_h)[None]], 0)
            d_c = tf.zeros_like(c_last) if d_c is None else tf.transpose(d_c)
            w_c = tf.cast(w_h, compute)

            def backward(k, d_hr, d_c, dzs, dz_lows):
                t = n - 1 - k
                dz, dz_low, d_c = library.charlm_lstm_backward(d_out[t], d_hr, d_c, saved.read(t))
                return k + 1, tf.matmul(w_c, dz_low), d_c, dzs.write(t, dz), dz_lows.write(t, dz_low)

            _, d_hr, d_c0, dzs, dz_lows = tf.while_loop(
                lambda k, *_: k < n, backward,
                (0, tf.zeros_like(tf.cast(h_last, compute)), d_c, arrays(tf.float32), arrays(compute)))
            # [T, X, B] -> [X, T*B] for the weight gradient's one matmul
            by_row = lambda a, rows: tf.reshape(tf.transpose(a.stack(), [1, 0, 2]), [rows, -1])  # noqa: E731
            d_w = tf.matmul(by_row(h_lows, hidden), by_row(dz_lows, 4 * hidden), transpose_b=True)
            return (tf.transpose(dzs.stack(), [0, 2, 1]), tf.transpose(tf.cast(d_hr, tf.float32)),
                    tf.transpose(d_c0), tf.cast(d_w, w_h.dtype))

        return (outputs, tf.transpose(h_last), tf.transpose(c_last)), grad

    return run
