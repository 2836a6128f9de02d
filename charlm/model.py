"""The LSTM language model: stacked single-matmul LSTM cells over char or bigram tokens.

A cell's four gates come from one matmul of ``[x, h]`` with one kernel (ud730 problem 1): the
columns of ``kernel`` are the input gate, forget gate, candidate ("update") and output gate, each
``hidden`` wide, and ``bias`` is one vector for all four.  ``LSTMCell.step`` computes exactly that.

For speed, :meth:`CharLM.unroll` splits the same matmul in two halves that are cheaper apart:
the input half ``x @ kernel[:in]`` for every time step at once (for one-hot input it is a row
lookup, for an embedding one big matmul), and only the recurrent half ``h @ kernel[in:]`` inside
the time loop.  ``[x, h] @ [[Wx], [Wh]] == x @ Wx + h @ Wh``, so both compute the same cell; the
tests check each against a plain-numpy four-matmul reference.

Dropout (Zaremba et al. 2014) touches only non-recurrent connections: the input of each layer and
the output of the top layer; the ``h -> h`` path through time is never dropped.  Dropout masks
come from stateless random ops seeded by the caller, so a training run is reproducible and
resumable.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from .config import ModelConfig

# Training windows at most this long are unrolled in Python inside a tf.function (what XLA compiles
# best); longer ones use symbolic loops with the same hand-derived backward pass, which trace in
# seconds at any length (512 units x 50 steps: ~3.6 s for the first call instead of ~6.7 s).
STATIC_UNROLL_LIMIT = 20


def _initial(rng: np.random.Generator, shape, init: str) -> np.ndarray:
    if init == "notebook":
        # ud730 writes tf.truncated_normal(shape, -0.1, 0.1): mean -0.1, sd 0.1, cut at 2 sd.
        values = rng.normal(-0.1, 0.1, size=shape)
        bad = np.abs(values + 0.1) > 0.2
        while bad.any():
            values[bad] = rng.normal(-0.1, 0.1, size=int(bad.sum()))
            bad = np.abs(values + 0.1) > 0.2
        return values
    return rng.uniform(-0.08, 0.08, size=shape)


def lstm_gates(z, c):
    """The LSTM update from pre-activations ``z = [i | f | g | o]``: new ``(h, c)``."""
    i, f, g, o = tf.split(z, 4, axis=-1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


def initial_weights(config: ModelConfig, num_tokens: int, seed: int = 0) -> dict:
    """The starting weights of ``CharLM(config, num_tokens, seed)`` as numpy arrays (float64).

    ``embedding`` (or None), ``kernels`` (one ``[in + H, 4H]`` per layer) and ``out_w``, drawn in
    that order from one generator; the biases start at zero.  The notebook benchmark starts its
    graph from these too.
    """
    rng = np.random.default_rng(seed)
    h = config.hidden
    embedding = None
    size = num_tokens
    if config.embedding_size:
        embedding = rng.uniform(-1.0, 1.0, size=(num_tokens, config.embedding_size))
        size = config.embedding_size
    kernels = []
    for _ in range(config.layers):
        kernels.append(_initial(rng, (size + h, 4 * h), config.init))
        size = h
    return {"embedding": embedding, "kernels": kernels, "out_w": _initial(rng, (h, num_tokens), config.init)}


class LSTMCell(tf.Module):
    """One LSTM layer whose four gates come from a single matmul."""

    def __init__(self, input_size: int, hidden: int, kernel: np.ndarray, dtype=tf.float32, name=None):
        super().__init__(name=name)
        self.input_size = input_size
        self.hidden = hidden
        self.kernel = tf.Variable(kernel, dtype=dtype, name="kernel")
        self.bias = tf.Variable(tf.zeros([4 * hidden], dtype=dtype), name="bias")

    @property
    def input_kernel(self):
        return self.kernel[: self.input_size]

    @property
    def recurrent_kernel(self):
        return self.kernel[self.input_size:]

    def step(self, x, h, c):
        """One time step, the problem-1 way: ``[x, h] @ kernel + bias`` then the gates."""
        return lstm_gates(tf.matmul(tf.concat([x, h], axis=1), self.kernel) + self.bias, c)


class CharLM(tf.Module):
    """Embedding or one-hot input, ``layers`` LSTM cells, a softmax over the tokens."""

    def __init__(self, config: ModelConfig, num_tokens: int, seed: int = 0, dtype=tf.float32):
        super().__init__(name="charlm")
        self.config = config
        self.num_tokens = num_tokens
        self.dtype = dtype
        start = initial_weights(config, num_tokens, seed)
        h = config.hidden
        if config.embedding_size:
            self.embedding = tf.Variable(start["embedding"], dtype=dtype, name="embedding")
            size = config.embedding_size
        else:
            self.embedding = None
            size = num_tokens
        self.cells = []
        for layer, kernel in enumerate(start["kernels"]):
            self.cells.append(LSTMCell(size, h, kernel, dtype, name=f"lstm_{layer}"))
            size = h
        self.out_w = tf.Variable(start["out_w"], dtype=dtype, name="out_w")
        self.out_b = tf.Variable(tf.zeros([num_tokens], dtype=dtype), name="out_b")

    # -- state ---------------------------------------------------------------------------------
    def zero_state(self, batch_size):
        z = tf.zeros([batch_size, self.config.hidden], dtype=self.dtype)
        return [(z, z) for _ in self.cells]

    def num_parameters(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.trainable_variables))

    # -- dropout -------------------------------------------------------------------------------
    def _dropout(self, x, seed, salt: int, shape=None):
        rate = self.config.dropout
        if seed is None or rate <= 0:
            return x
        keep = 1.0 - rate
        noise = tf.random.stateless_uniform(shape if shape is not None else tf.shape(x),
                                            seed=seed + tf.constant([0, salt], dtype=seed.dtype),
                                            dtype=self.dtype)
        return x * tf.cast(noise < keep, self.dtype) / keep

    # -- the whole model over a sequence ---------------------------------------------------------
    def input_projection(self, tokens, seed=None):
        """``x_t @ kernel[:in] + bias`` of layer 0 for all steps: ``[T, B, 4H]``."""
        cell = self.cells[0]
        if self.embedding is None:
            # One-hot input times a matrix is a row lookup; dropping a one-hot input drops its row.
            xw = tf.gather(cell.input_kernel, tokens)
            if seed is not None and self.config.dropout > 0:
                xw = self._dropout(xw, seed, 0, shape=tf.concat([tf.shape(tokens), [1]], 0))
        else:
            e = self._dropout(tf.gather(self.embedding, tokens), seed, 0)
            xw = _matmul_seq(e, cell.input_kernel)
        return xw + cell.bias

    def unroll(self, tokens, state, seed=None, static=None):
        """Run the model over ``tokens`` ``[T, B]`` from ``state``.

        Returns ``(logits [T, B, num_tokens], new_state)``.  ``seed`` (a shape-[2] int tensor)
        turns dropout on; ``None`` is inference.  ``static``: ``True`` unrolls the time loop in
        Python, ``False`` is a plain symbolic loop (inference), ``None`` (default) picks the Python
        unroll for short windows and the hand-BPTT loops for long ones.
        """
        outputs = None
        new_state = []
        for layer, cell in enumerate(self.cells):
            if layer == 0:
                xw = self.input_projection(tokens, seed)
            else:
                xw = _matmul_seq(self._dropout(outputs, seed, layer), cell.input_kernel) + cell.bias
            h, c = state[layer]
            outputs, h, c = _recur(xw, h, c, cell.recurrent_kernel, static)
            new_state.append((h, c))
        top = self._dropout(outputs, seed, len(self.cells))
        return _matmul_seq(top, self.out_w) + self.out_b, new_state

    # -- one step at a time (sampling) -------------------------------------------------------------
    def input_table(self):
        """Layer 0's ``x @ kernel[:in] + bias`` for every token: ``[num_tokens, 4H]``."""
        cell = self.cells[0]
        table = cell.input_kernel if self.embedding is None else tf.matmul(self.embedding, cell.input_kernel)
        return table + cell.bias

    def step(self, table, tokens, state):
        """One inference step for tokens ``[B]``: ``(logits [B, V], new_state)``."""
        new_state = []
        x = None
        for layer, cell in enumerate(self.cells):
            h, c = state[layer]
            xw = tf.gather(table, tokens) if layer == 0 else tf.matmul(x, cell.input_kernel) + cell.bias
            x, c = lstm_gates(xw + tf.matmul(h, cell.recurrent_kernel), c)
            new_state.append((x, c))
        return tf.matmul(x, self.out_w) + self.out_b, new_state


def _matmul_seq(x, w):
    """``[T, B, K] @ [K, N]`` as one matmul."""
    shape = tf.shape(x)
    y = tf.matmul(tf.reshape(x, [-1, shape[-1]]), w)
    return tf.reshape(y, tf.concat([shape[:-1], [tf.shape(w)[1]]], 0))


def _recur(xw, h, c, w_h, static=None):
    """The recurrent half of one layer over all steps: ``(outputs [T, B, H], h, c)``."""
    steps = xw.shape[0]
    if static is None and steps is not None and steps <= STATIC_UNROLL_LIMIT:
        static = True
    if static is None:
        # long windows: the same hand-derived backward pass, as loops that trace once
        return _recur_loop(xw, h, c, w_h)
    if static:
        return _recur_static(xw, h, c, w_h)
    n = tf.shape(xw)[0]
    out = tf.TensorArray(xw.dtype, size=n)

    def body(t, h, c, out):
        h, c = lstm_gates(xw[t] + tf.matmul(h, w_h), c)
        return t + 1, h, c, out.write(t, h)

    _, h, c, out = tf.while_loop(lambda t, *_: t < n, body, (0, h, c, out))
    return out.stack(), h, c


def _cell_forward(z, c):
    """One step from pre-activations ``z``: ``(h, c_new, (i, f, g, o, tanh c_new))``, kept for BPTT."""
    zi, zf, zg, zo = tf.split(z, 4, axis=-1)
    i, f, g, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
    c_new = f * c + i * g
    tc = tf.tanh(c_new)
    return o * tc, c_new, (i, f, g, o, tc)


def _cell_backward(dh_t, d_c, c_prev, acts):
    """One BPTT step: ``(dz, d_c for the previous step)`` from the step's saved activations."""
    i, f, g, o, tc = acts
    d_c = d_c + dh_t * o * (1.0 - tc * tc)
    dz = tf.concat([d_c * g * i * (1.0 - i), d_c * c_prev * f * (1.0 - f),
                    d_c * i * (1.0 - g * g), dh_t * tc * o * (1.0 - o)], axis=-1)
    return dz, d_c * f


def _weight_grad(h_prev, d_xw, hidden):
    """The recurrent kernel's gradient over all steps as one ``[H, T*B] @ [T*B, 4H]`` matmul."""
    return tf.matmul(tf.reshape(h_prev, [-1, hidden]), tf.reshape(d_xw, [-1, 4 * hidden]), transpose_a=True)


@tf.custom_gradient
def _recur_static(xw, h, c, w_h):
    """The time loop unrolled in Python, with a hand-derived BPTT backward pass.

    Autodiff of the unrolled loop builds one small weight-gradient matmul per step plus much
    bookkeeping; here the backward pass keeps only the ``dz_t @ W_h^T`` chain in the loop and
    computes the recurrent weight gradient as one ``[H, T*B] @ [T*B, 4H]`` matmul.
    """
    steps = xw.shape[0]
    hs, cs, gates = [h], [c], []
    for t in range(steps):
        h_new, c_new, acts = _cell_forward(xw[t] + tf.matmul(hs[-1], w_h), cs[-1])
        hs.append(h_new)
        cs.append(c_new)
        gates.append(acts)
    outputs = tf.stack(hs[1:])

    def grad(d_outputs, d_h, d_c):
        d_h = tf.zeros_like(h) if d_h is None else d_h
        d_c = tf.zeros_like(c) if d_c is None else d_c
        w_t = tf.transpose(w_h)
        dzs = [None] * steps
        for t in reversed(range(steps)):
            dzs[t], d_c = _cell_backward(d_outputs[t] + d_h, d_c, cs[t], gates[t])
            d_h = tf.matmul(dzs[t], w_t)
        d_xw = tf.stack(dzs)
        return d_xw, d_h, d_c, _weight_grad(tf.stack(hs[:-1]), d_xw, tf.shape(h)[-1])

    return (outputs, hs[-1], cs[-1]), grad


@tf.custom_gradient
def _recur_loop(xw, h, c, w_h):
    """``_recur_static``'s forward and hand-derived backward as symbolic while-loops.

    The loop bodies are traced (and, under XLA, compiled) once whatever the window length, so a
    long window costs no more to build than a short one.
    """
    n = tf.shape(xw)[0]
    ta = lambda: tf.TensorArray(xw.dtype, size=n)  # noqa: E731

    def forward(t, h, c, hs, cs, acts):
        h_new, c_new, saved = _cell_forward(xw[t] + tf.matmul(h, w_h), c)
        return t + 1, h_new, c_new, hs.write(t, h), cs.write(t, c), acts.write(t, tf.concat(saved, -1))

    _, h_last, c_last, h_prev, c_prev, acts = tf.while_loop(
        lambda t, *_: t < n, forward, (0, h, c, ta(), ta(), ta()))
    h_prev, c_prev, acts = h_prev.stack(), c_prev.stack(), acts.stack()
    outputs = tf.concat([h_prev[1:], h_last[None]], 0)

    def grad(d_outputs, d_h, d_c):
        d_h = tf.zeros_like(h) if d_h is None else d_h
        d_c = tf.zeros_like(c) if d_c is None else d_c
        w_t = tf.transpose(w_h)

        def backward(k, d_h, d_c, dzs):
            t = n - 1 - k
            dz, d_c = _cell_backward(d_outputs[t] + d_h, d_c, c_prev[t], tf.split(acts[t], 5, axis=-1))
            return k + 1, tf.matmul(dz, w_t), d_c, dzs.write(t, dz)

        _, d_h0, d_c0, dzs = tf.while_loop(lambda k, *_: k < n, backward, (0, d_h, d_c, ta()))
        d_xw = dzs.stack()
        return d_xw, d_h0, d_c0, _weight_grad(h_prev, d_xw, tf.shape(h)[-1])

    return (outputs, h_last, c_last), grad
