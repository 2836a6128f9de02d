"""The Elman RNN and the GRU beside the LSTM (``--cell rnn`` / ``--cell gru``).

Both compute their gates from one matmul of ``[x, h]``, like the LSTM of :mod:`charlm.model`:

* Elman RNN: ``h' = tanh([x, h] @ kernel + bias)``, kernel ``[in + H, H]``.  The baseline that shows
  why gates exist: its gradient through time is a product of ``diag(1 - h'^2) @ W_h^T`` factors and
  shrinks fast with distance (benchmarks/gradient_decay.py draws it).
* GRU (Cho et al. 2014), kernel ``[in + H, 3H]`` with gate columns ``[z | r | n]`` (Keras' order):
  ``z, r = sigmoid([x, h] @ kernel[:, :2H] + bias[:2H])``, the candidate
  ``n = tanh(x @ W_xn + bias[2H:] + r * (h @ W_hn + recurrent_bias))`` and ``h' = z * h + (1 - z) * n``.
  The reset gate is applied *after* the recurrent matmul (Keras' ``reset_after=True``, cuDNN's
  GRU): so ``h @ kernel[in:]`` is one matmul per step, as for the LSTM, instead of a second matmul
  of ``r * h`` that would wait for ``r``.  ``recurrent_bias`` ``[H]`` is the candidate's bias inside
  the reset (Keras' recurrent bias of the ``n`` columns; the ``z``/``r`` recurrent biases would only
  add to ``bias``).

The model's state stays a list of ``(h, c)`` pairs whatever the cell, so the trainer's carried
variables, sampling, scoring, export and tf.distribute need no cell-specific code: a GRU or RNN
layer passes its ``c`` through untouched (it stays zero).

Training takes the LSTM's fast route: the input half ``x @ kernel[:in] + bias`` for every step at
once (:meth:`CharLM.input_projection`), only ``h @ kernel[in:]`` in the time loop, Python-unrolled
for windows up to ``model.STATIC_UNROLL_LIMIT`` (XLA compiles the training block) and a symbolic
loop beyond, both with a hand-derived backward pass: the loop carries only the ``dh`` chain, and
the recurrent kernel's gradient is one ``[H, T*B] @ [T*B, gH]`` matmul after it.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from charlm.fast.matmul import matmul_seq

# Training windows at most this long are unrolled in Python inside a tf.function (what XLA compiles
# best); longer ones use symbolic loops with the same hand-derived backward pass, which trace in
# seconds at any length (512 units x 50 steps: ~3.6 s for the first call instead of ~6.7 s).
# ``charlm.model`` reads it as its own ``STATIC_UNROLL_LIMIT`` and passes it here (tests lower it).
STATIC_UNROLL_LIMIT = 20


class Cell(tf.Module):
    """A layer whose gate pre-activations come from one ``[in + H, gates * H]`` kernel."""

    gates = 1

    def __init__(self, input_size: int, hidden: int, kernel: np.ndarray, dtype=tf.float32, name=None):
        super().__init__(name=name)
        self.input_size = input_size
        self.hidden = hidden
        self.kernel = tf.Variable(kernel, dtype=dtype, name="kernel")
        self.bias = tf.Variable(tf.zeros([self.gates * hidden], dtype=dtype), name="bias")

    @property
    def input_kernel(self):
        return self.kernel[: self.input_size]

    @property
    def recurrent_kernel(self):
        return self.kernel[self.input_size:]

    def params(self) -> tuple:
        """Recurrent-side weights besides the kernel (passed through the custom gradients)."""
        return ()

    def param_grads(self, d_hw, *params) -> tuple:
        return ()


class RNNCell(Cell):
    """Elman RNN layer: ``h' = tanh([x, h] @ kernel + bias)``."""

    gates = 1
    saved = 1

    def step(self, x, h):
        """One time step, the single-matmul way."""
        return tf.tanh(tf.matmul(tf.concat([x, h], axis=1), self.kernel) + self.bias)

    def forward(self, xw, h, hw):
        """From the input half ``xw`` (bias included) and ``hw = h @ kernel[in:]``: ``(h', saved)``."""
        h_new = tf.tanh(xw + hw)
        return h_new, (h_new,)

    def backward(self, dh, h_prev, saved):
        """``(d xw, d hw, dh through the direct path or None)`` from ``dh = dL/dh'``."""
        h_new, = saved
        d = dh * (1.0 - h_new * h_new)
        return d, d, None


class GRUCell(Cell):
    """GRU layer, reset gate after the recurrent matmul; gate columns ``[z | r | n]``."""

    gates = 3
    saved = 4

    def __init__(self, input_size: int, hidden: int, kernel: np.ndarray, dtype=tf.float32, name=None):
        super().__init__(input_size, hidden, kernel, dtype, name)
        self.recurrent_bias = tf.Variable(tf.zeros([hidden], dtype=dtype), name="recurrent_bias")

    def step(self, x, h):
        """One time step: ``z`` and ``r`` from one matmul of ``[x, h]``, the candidate's halves apart."""
        hidden = self.hidden
        zr = tf.sigmoid(tf.matmul(tf.concat([x, h], axis=1), self.kernel[:, :2 * hidden]) + self.bias[:2 * hidden])
        z, r = tf.split(zr, 2, axis=-1)
        xn = tf.matmul(x, self.input_kernel[:, 2 * hidden:]) + self.bias[2 * hidden:]
        n = tf.tanh(xn + r * (tf.matmul(h, self.recurrent_kernel[:, 2 * hidden:]) + self.recurrent_bias))
        return z * h + (1.0 - z) * n

    def params(self):
        return (self.recurrent_bias,)

    def forward(self, xw, h, hw, recurrent_bias):
        hidden = self.hidden
        x_zr, x_n = tf.split(xw, [2 * hidden, hidden], axis=-1)
        h_zr, h_n = tf.split(hw, [2 * hidden, hidden], axis=-1)
        z, r = tf.split(tf.sigmoid(x_zr + h_zr), 2, axis=-1)
        hn = h_n + recurrent_bias
        n = tf.tanh(x_n + r * hn)
        return n + z * (h - n), (z, r, n, hn)

    def backward(self, dh, h_prev, saved, recurrent_bias):
        z, r, n, hn = saved
        d_n = dh * (1.0 - z) * (1.0 - n * n)
        d_z = dh * (h_prev - n) * z * (1.0 - z)
        d_r = d_n * hn * r * (1.0 - r)
        return (tf.concat([d_z, d_r, d_n], axis=-1), tf.concat([d_z, d_r, d_n * r], axis=-1), dh * z)

    def param_grads(self, d_hw, recurrent_bias):
        d_n = tf.reshape(d_hw, [-1, 3 * self.hidden])[:, 2 * self.hidden:]
        return (tf.reduce_sum(d_n, axis=0),)


CELL_TYPES = {"rnn": RNNCell, "gru": GRUCell}


# -- the whole model over a sequence, and one step (CharLM dispatches here for gru and rnn) ----------
def unroll(model, tokens, state, seed=None, static=None, static_limit=STATIC_UNROLL_LIMIT):
    """``CharLM.unroll`` for GRU/RNN layers: ``(logits [T, B, V], new_state)``."""
    outputs = None
    new_state = []
    for layer, cell in enumerate(model.cells):
        if layer == 0:
            xw = model.input_projection(tokens, seed, cell.input_kernel, cell.bias)
        else:
            xw = matmul_seq(model._dropout(outputs, seed, layer), cell.input_kernel) + cell.bias
        h, c = state[layer]
        outputs, h = recur(cell, xw, h, static, static_limit)
        new_state.append((h, c))
    top = model._dropout(outputs, seed, len(model.cells))
    return matmul_seq(top, model.out_w) + model.out_b, new_state


def step_weights(model):
    """``CharLM.step_weights`` for GRU/RNN layers: each kernel split once, outside the loop (a
    kernel sliced inside a compiled loop makes XLA's one-row matmul slow)."""
    layers = [(cell.input_kernel, cell.recurrent_kernel, cell.bias) for cell in model.cells]
    w_x, _, bias = layers[0]
    table = (w_x if model.embedding is None else tf.matmul(model.embedding, w_x)) + bias
    return {"table": table, "layers": layers, "out_w": tf.identity(model.out_w), "out_b": tf.identity(model.out_b)}


def step(model, weights, tokens, state):
    """``CharLM.step`` for GRU/RNN layers: one inference step for tokens ``[B]``."""
    new_state = []
    x = None
    for layer, (cell, (w_x, w_h, bias)) in enumerate(zip(model.cells, weights["layers"])):
        h, c = state[layer]
        xw = tf.gather(weights["table"], tokens) if layer == 0 else tf.matmul(x, w_x) + bias
        x = cell.forward(xw, h, tf.matmul(h, w_h), *cell.params())[0]
        new_state.append((x, c))
    return tf.matmul(x, weights["out_w"]) + weights["out_b"], new_state


def recur(cell, xw, h, static=None, static_limit=STATIC_UNROLL_LIMIT):
    """The recurrent half of one layer over all steps: ``(outputs [T, B, H], h)``.

    ``static`` as in ``CharLM.unroll``: True unrolls in Python, False is a plain symbolic loop
    (inference), None picks the Python unroll for short windows and the loops for long ones.
    """
    w_h = cell.recurrent_kernel
    params = tuple(tf.convert_to_tensor(p) for p in cell.params())   # custom gradients take tensors
    steps = xw.shape[0]
    if static is None and steps is not None and steps <= static_limit:
        static = True
    if static is None:
        return _bptt_loop(cell)(xw, h, w_h, *params)
    if static:
        return _bptt_static(cell)(xw, h, w_h, *params)
    n = tf.shape(xw)[0]

    def body(t, h, out):
        h = cell.forward(xw[t], h, tf.matmul(h, w_h), *params)[0]
        return t + 1, h, out.write(t, h)

    _, h, out = tf.while_loop(lambda t, *_: t < n, body, (0, h, tf.TensorArray(xw.dtype, size=n)))
    return out.stack(), h


def _weight_grad(h_prev, d_hw):
    """The recurrent kernel's gradient over all steps as one ``[H, T*B] @ [T*B, gH]`` matmul."""
    return tf.matmul(tf.reshape(h_prev, [-1, tf.shape(h_prev)[-1]]),
                     tf.reshape(d_hw, [-1, tf.shape(d_hw)[-1]]), transpose_a=True)


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
            return (tf.stack(d_xws), d_h, _weight_grad(tf.stack(hs[:-1]), d_hw), *cell.param_grads(d_hw, *params))

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
            return (d_xws.stack(), d_h0, _weight_grad(h_prev, d_hw), *cell.param_grads(d_hw, *params))

        return (outputs, h_last), grad

    return run
