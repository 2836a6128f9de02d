"""Recurrent cells behind one interface: the LSTM (ud730 problem 1), the GRU and the Elman RNN.

Every cell's gate pre-activations come from one matmul of ``[x, h]`` with one kernel
``[in + H, gates * H]`` and one bias ``[gates * H]``.  A cell declares

* its weights: ``kernel``, ``bias`` (and ``params()``, any others), ``input_kernel`` (the first
  ``in`` rows) and ``recurrent_kernel`` (the last ``H``);
* its step: ``cell(x, state)`` from the input, the textbook way, and ``cell.step(xw, hw, state)``
  from the two halves ``xw = x @ input_kernel + bias`` and ``hw = h @ recurrent_kernel``, which
  is what sampling and the fast paths use (``[x, h] @ kernel == x @ W_x + h @ W_h``);
* its sequence function: ``cell.sequence(xw, w_h, state, loop, compute)`` runs the recurrent half
  over a whole window, given the input half of every step at once (see :mod:`charlm.fast`).

The state is an ``(h, c)`` pair for every cell, so the model, the trainer's carried state,
sampling, scoring, export and tf.distribute treat all cells alike; a GRU or RNN passes its ``c``
through untouched (it stays zero).

* LSTM, gate columns ``[i | f | g | o]`` (input, forget, candidate "update", output gate: the
  order of ud730's four matrices, Keras and PyTorch)::

      i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_g);  c' = f * c + i * g;  h' = o * tanh(c')

* Elman RNN: ``h' = tanh([x, h] @ kernel + bias)``, kernel ``[in + H, H]``.  The baseline that
  shows why gates exist: its gradient through time is a product of ``diag(1 - h'^2) @ W_h^T``
  factors and shrinks fast with distance (benchmarks/gradient_decay.py draws it).
* GRU (Cho et al. 2014), gate columns ``[z | r | n]`` (Keras' order):
  ``z, r = sigmoid([x, h] @ kernel[:, :2H] + bias[:2H])``, the candidate
  ``n = tanh(x @ W_xn + bias[2H:] + r * (h @ W_hn + recurrent_bias))`` and ``h' = z * h + (1 - z) * n``.
  The reset gate is applied *after* the recurrent matmul (Keras' ``reset_after=True``, cuDNN's
  GRU): so ``h @ kernel[in:]`` is one matmul per step, as for the LSTM, instead of a second matmul
  of ``r * h`` that would wait for ``r``.  ``recurrent_bias`` ``[H]`` is the candidate's bias inside
  the reset (Keras' recurrent bias of the ``n`` columns; the ``z``/``r`` recurrent biases would only
  add to ``bias``).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from charlm.fast import bptt, lstm_loops


class Cell(tf.Module):
    """A layer whose gate pre-activations come from one ``[in + H, gates * H]`` kernel."""

    gates = 1
    # whether the cell's sequence function takes bfloat16 matmuls (--precision) ...
    bfloat16 = False
    # ... and whether long texts are scored with it in side-by-side streams (charlm.fast.streams)
    streams = False

    def __init__(self, input_size: int, hidden: int, kernel: np.ndarray, dtype=tf.float32, name=None):
        super().__init__(name=name)
        self.input_size = input_size
        self.hidden = hidden
        self.kernel = tf.Variable(kernel, dtype=dtype, name="kernel")
        self.bias = tf.Variable(tf.zeros([self.gates * hidden], dtype=dtype), name="bias")

    def split(self):
        """``(W_x, W_h)``: the kernel's input and recurrent rows as one ``tf.split``, whose gradient is
        one concat (two slices' gradients would be two kernel-sized tensors added: ~4% of a
        512-unit training step)."""
        return tf.split(self.kernel, [self.input_size, self.hidden], axis=0)

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

    def __call__(self, x, state):
        """One time step from the input ``x``: ``(h', state')``."""
        h, _ = state
        return self.step(tf.matmul(x, self.input_kernel) + self.bias, tf.matmul(h, self.recurrent_kernel), state)

    # single-state cells: one step from the halves, and a window on charlm.fast.bptt
    def step(self, xw, hw, state):
        """One step from the input half ``xw`` (bias included) and ``hw = h @ recurrent_kernel``."""
        h, c = state
        h_new = self.forward(xw, h, hw, *self.params())[0]
        return h_new, (h_new, c)

    def sequence(self, xw, w_h, state, loop: str = "auto", compute=None):
        """The recurrent half over a window ``xw`` ``[T, B, gates * H]`` with recurrent kernel ``w_h``:
        ``(outputs [T, B, H], state)``."""
        h, c = state
        outputs, h = bptt.recur(self, xw, h, w_h, loop)
        return outputs, (h, c)


class LSTMCell(Cell):
    """One LSTM layer whose four gates come from a single matmul (ud730 problem 1)."""

    gates = 4
    bfloat16 = True
    streams = True

    @staticmethod
    def forward(z, c, axis: int = -1):
        """The LSTM equations from pre-activations ``z = [i | f | g | o]`` (gates along ``axis``).

        Returns ``(h', c', saved)`` with ``saved = (i, f, g, o, tanh c')`` for :meth:`backward`.
        """
        zi, zf, zg, zo = tf.split(z, 4, axis=axis)
        i, f, g, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
        c_new = f * c + i * g
        tc = tf.tanh(c_new)
        return o * tc, c_new, (i, f, g, o, tc)

    @staticmethod
    def backward(dh, d_c, c_prev, saved):
        """One step of backpropagation through :meth:`forward`: ``(dz [i | f | g | o], dc for c)``
        from ``dh = dL/dh'``, ``d_c = dL/dc'`` (from the step after) and the saved activations."""
        i, f, g, o, tc = saved
        d_c = d_c + dh * o * (1.0 - tc * tc)
        dz = tf.concat([d_c * g * i * (1.0 - i), d_c * c_prev * f * (1.0 - f), d_c * i * (1.0 - g * g),
                        dh * tc * o * (1.0 - o)], axis=-1)
        return dz, d_c * f

    def __call__(self, x, state):
        """One time step, the problem-1 way: ``[x, h] @ kernel + bias`` then the gates."""
        h, c = state
        h, c, _ = self.forward(tf.matmul(tf.concat([x, h], axis=1), self.kernel) + self.bias, c)
        return h, (h, c)

    def step(self, xw, hw, state):
        h, c, _ = self.forward(xw + hw, state[1])
        return h, (h, c)

    def sequence(self, xw, w_h, state, loop: str = "auto", compute=None):
        outputs, h, c = lstm_loops.recur(type(self), xw, *state, w_h, loop, compute)
        return outputs, (h, c)


class RNNCell(Cell):
    """Elman RNN layer: ``h' = tanh([x, h] @ kernel + bias)``."""

    gates = 1
    saved = 1

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

    def __call__(self, x, state):
        """One time step: ``z`` and ``r`` from one matmul of ``[x, h]``, the candidate's halves apart."""
        h, c = state
        hidden = self.hidden
        zr = tf.sigmoid(tf.matmul(tf.concat([x, h], axis=1), self.kernel[:, :2 * hidden]) + self.bias[:2 * hidden])
        z, r = tf.split(zr, 2, axis=-1)
        xn = tf.matmul(x, self.input_kernel[:, 2 * hidden:]) + self.bias[2 * hidden:]
        n = tf.tanh(xn + r * (tf.matmul(h, self.recurrent_kernel[:, 2 * hidden:]) + self.recurrent_bias))
        h = z * h + (1.0 - z) * n
        return h, (h, c)

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


CELL_TYPES = {"lstm": LSTMCell, "gru": GRUCell, "rnn": RNNCell}
