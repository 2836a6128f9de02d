"""The LSTM language model: stacked single-matmul LSTM cells over char or bigram tokens.

A cell's four gates come from one matmul of ``[x, h]`` with one kernel (ud730 problem 1): the
columns of ``kernel`` are the input gate, forget gate, candidate ("update") and output gate, each
``hidden`` wide, and ``bias`` is one vector for all four.  ``LSTMCell.step`` computes exactly that.

For speed, :meth:`CharLM.unroll` splits the same matmul in two halves that are cheaper apart:
the input half ``x @ kernel[:in]`` for every time step at once (for one-hot input it is a row
lookup, for an embedding one big matmul), and only the recurrent half ``h @ kernel[in:]`` inside
the time loop.  ``[x, h] @ [[Wx], [Wh]] == x @ Wx + h @ Wh``, so both compute the same cell; the
tests check each against a plain-numpy four-matmul reference.

Inside :meth:`CharLM.unroll` the gate columns are taken in TensorFlow's fused-LSTM order
``[i | g | f | o]`` (:func:`to_block_order`, its own inverse), so that in float32/float16 the
long-window backward pass can run each step's gate gradients as one fused ``LSTMBlockCellGrad``
op; the stored kernel keeps the ``[i | f | g | o]`` order.

Dropout (Zaremba et al. 2014) touches only non-recurrent connections: the input of each layer and
the output of the top layer; the ``h -> h`` path through time is never dropped.  Dropout masks
come from stateless random ops seeded by the caller, so a training run is reproducible and
resumable.
"""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from charlm.nn import cells
from charlm.fast import kernels
from charlm.nn.cells import CELL_TYPES, STATIC_UNROLL_LIMIT, Cell
from charlm.config import ModelConfig
from charlm.fast.matmul import matmul, matmul_seq

# Gate blocks in one layer's kernel, per --cell (the GRU and Elman RNN live in charlm.cells).
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _initial(rng: np.random.Generator, shape, init: str, recurrent_rows: int = 0) -> np.ndarray:
    """Starting values of one weight matrix.  For an LSTM kernel ``[in + H, 4H]``,
    ``recurrent_rows`` is H: the "orthogonal" scheme treats those rows apart."""
    if init == "notebook":
        # ud730 writes tf.truncated_normal(shape, -0.1, 0.1): mean -0.1, sd 0.1, cut at 2 sd.
        values = rng.normal(-0.1, 0.1, size=shape)
        bad = np.abs(values + 0.1) > 0.2
        while bad.any():
            values[bad] = rng.normal(-0.1, 0.1, size=int(bad.sum()))
            bad = np.abs(values + 0.1) > 0.2
        return values
    if init == "orthogonal":
        # Keras' LSTM defaults: Glorot-uniform input (and output) weights; the recurrent rows
        # [H, 4H] orthonormal (the transposed Q of a Gaussian [4H, H], signs fixed by R's diagonal).
        rows, cols = shape
        fan_in = rows - recurrent_rows
        limit = np.sqrt(6.0 / (fan_in + cols))
        values = rng.uniform(-limit, limit, size=(fan_in, cols))
        if not recurrent_rows:
            return values
        q, r = np.linalg.qr(rng.normal(size=(cols, recurrent_rows)))
        return np.concatenate([values, (q * np.sign(np.diag(r))).T], axis=0)
    return rng.uniform(-0.08, 0.08, size=shape)


def lstm_gates(z, c):
    """The LSTM update from pre-activations ``z = [i | f | g | o]``: new ``(h, c)``."""
    h, c, _ = _cell_forward(to_block_order(z), c)
    return h, c


def to_block_order(w):
    """Gate columns ``[i | f | g | o]`` -> ``[i | g | f | o]`` (and back: the swap is its own inverse).

    ``[i | g | f | o]`` ("icfo") is the order of TensorFlow's fused ``LSTMBlockCell`` ops.
    """
    i, f, g, o = tf.split(w, 4, axis=-1)
    return tf.concat([i, g, f, o], axis=-1)


def initial_weights(config: ModelConfig, num_tokens: int, seed: int = 0) -> dict:
    """The starting weights of ``CharLM(config, num_tokens, seed)`` as numpy arrays (float64).

    ``embedding`` (or None), ``kernels`` (one ``[in + H, 4H]`` per layer; ``3H`` for a GRU, ``H``
    for an Elman RNN, see :mod:`charlm.cells`) and ``out_w``, drawn in that order from one
    generator; the biases start at zero.  The notebook benchmark starts its graph from these too.
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
        kernels.append(_initial(rng, (size + h, GATES[config.cell] * h), config.init, recurrent_rows=h))
        size = h
    return {"embedding": embedding, "kernels": kernels, "out_w": _initial(rng, (h, num_tokens), config.init)}


class LSTMCell(Cell):
    """One LSTM layer whose four gates come from a single matmul."""

    gates = 4

    def step(self, x, h, c):
        """One time step, the problem-1 way: ``[x, h] @ kernel + bias`` then the gates."""
        return lstm_gates(tf.matmul(tf.concat([x, h], axis=1), self.kernel) + self.bias, c)


class CharLM(tf.Module):
    """Embedding or one-hot input, ``layers`` LSTM cells, a softmax over the tokens.

    ``config.cell`` "gru" or "rnn" takes GRU or Elman-RNN layers instead (:mod:`charlm.cells`);
    their state keeps the ``(h, c)`` shape with ``c`` unused.
    """

    def __init__(self, config: ModelConfig, num_tokens: int, seed: int = 0, dtype=tf.float32,
                 compute_dtype=None):
        super().__init__(name="charlm")
        self.config = config
        self.num_tokens = num_tokens
        self.dtype = dtype
        # the matmuls' dtype in unroll (bfloat16: see charlm.precision); weights, states and
        # logits keep ``dtype``
        self.compute_dtype = compute_dtype or dtype
        start = initial_weights(config, num_tokens, seed)
        h = config.hidden
        if config.embedding_size:
            self.embedding = tf.Variable(start["embedding"], dtype=dtype, name="embedding")
            size = config.embedding_size
        else:
            self.embedding = None
            size = num_tokens
        self.cells = []
        if config.cell == "lstm":
            cell_type = LSTMCell
        else:
            cell_type = CELL_TYPES[config.cell]
        for layer, kernel in enumerate(start["kernels"]):
            self.cells.append(cell_type(size, h, kernel, dtype, name=f"{config.cell}_{layer}"))
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
        if shape is None and self.config.dropout_mask == "sequence" and x.shape.rank == 3:
            shape = tf.concat([[1], tf.shape(x)[1:]], 0)        # [1, B, D]: one mask per row
        keep = 1.0 - rate
        noise = tf.random.stateless_uniform(shape if shape is not None else tf.shape(x),
                                            seed=seed + tf.constant([0, salt], dtype=seed.dtype),
                                            dtype=self.dtype)
        return x * tf.cast(noise < keep, self.dtype) / keep

    # -- the whole model over a sequence ---------------------------------------------------------
    def input_projection(self, tokens, seed, w_x, bias):
        """Layer 0's ``x_t @ w_x + bias`` for all steps ``[T, B, 4H]`` (``w_x``: its input rows).

        One-hot input makes it a row lookup in ``w_x + bias``; an embedding does too (a lookup in
        ``embedding @ w_x + bias``) unless its dropout is on, when every step's dropped embedding
        is multiplied.  A lookup's gradient adds the gate gradients of each token's positions.
        """
        dropping = seed is not None and self.config.dropout > 0
        if self.embedding is None:
            if dropping:    # dropping a one-hot input drops its row (not the bias)
                rows = self._dropout(_lookup(w_x, tokens), seed, 0, shape=tf.concat([tf.shape(tokens), [1]], 0))
                return rows + bias
            return _lookup(w_x + bias, tokens)
        if not dropping and _table_is_smaller(tokens, self.num_tokens):
            return _lookup(tf.matmul(self.embedding, w_x) + bias, tokens)
        e = self._dropout(tf.gather(self.embedding, tokens), seed, 0)
        return matmul_seq(e, w_x, self.compute_dtype) + bias

    def unroll(self, tokens, state, seed=None, static=None):
        """Run the model over ``tokens`` ``[T, B]`` from ``state``.

        Returns ``(logits [T, B, num_tokens], new_state)``.  ``seed`` (a shape-[2] int tensor)
        turns dropout on; ``None`` is inference.  ``static``: ``True`` unrolls the time loop in
        Python, ``False`` is a plain symbolic loop (inference), ``None`` (default) picks the Python
        unroll for short windows and the hand-BPTT loops for long ones.  The gates are computed in
        block order (``to_block_order``).
        """
        if self.config.cell != "lstm":
            return cells.unroll(self, tokens, state, seed, static, static_limit=STATIC_UNROLL_LIMIT)
        outputs = None
        new_state = []
        for layer, cell in enumerate(self.cells):
            w_x, w_h = tf.split(to_block_order(cell.kernel), [cell.input_size, cell.hidden], axis=0)
            bias = to_block_order(cell.bias)
            if layer == 0:
                xw = self.input_projection(tokens, seed, w_x, bias)
            else:
                xw = matmul_seq(self._dropout(outputs, seed, layer), w_x, self.compute_dtype) + bias
            h, c = state[layer]
            outputs, h, c = _recur(xw, h, c, w_h, static, self.compute_dtype)
            new_state.append((h, c))
        top = self._dropout(outputs, seed, len(self.cells))
        return matmul_seq(top, self.out_w, self.compute_dtype) + self.out_b, new_state

    # -- one step at a time (sampling) -------------------------------------------------------------
    def step_weights(self):
        """What :meth:`step` reads, prepared once outside the loop that calls it.

        Layer 0's input half becomes a lookup table ``[num_tokens, 4H]`` (bias folded in); every
        kernel is split and put in block order here.  Slicing a kernel inside a compiled loop
        instead made XLA fuse the slice into a one-row matmul it then computed with slow generic
        code: one sequence at 512 units sampled at ~450 steps/s against ~15,000 this way.
        """
        if self.config.cell != "lstm":
            return cells.step_weights(self)
        layers = []
        for cell in self.cells:
            w_x, w_h = tf.split(to_block_order(cell.kernel), [cell.input_size, cell.hidden], axis=0)
            layers.append((w_x, w_h, to_block_order(cell.bias)))
        w_x, w_h, bias = layers[0]
        table = (w_x if self.embedding is None else tf.matmul(self.embedding, w_x)) + bias
        return {"table": table, "layers": layers, "out_w": tf.identity(self.out_w), "out_b": tf.identity(self.out_b)}

    def step(self, weights, tokens, state):
        """One inference step for tokens ``[B]`` with :meth:`step_weights`: ``(logits [B, V], new_state)``."""
        if self.config.cell != "lstm":
            return cells.step(self, weights, tokens, state)
        new_state = []
        x = None
        for layer, (w_x, w_h, bias) in enumerate(weights["layers"]):
            h, c = state[layer]
            xw = tf.gather(weights["table"], tokens) if layer == 0 else tf.matmul(x, w_x) + bias
            x, c, _ = _cell_forward(xw + tf.matmul(h, w_h), c)
            new_state.append((x, c))
        return tf.matmul(x, weights["out_w"]) + weights["out_b"], new_state


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


def _lookup(table, tokens):
    """``tf.gather(table, tokens)``; for a small table its gradient is a one-hot matmul."""
    if table.shape[0] is not None and table.shape[0] <= ONE_HOT_GRAD_ROWS:
        return _lookup_one_hot_grad(table, tokens)
    return tf.gather(table, tokens)


def _table_is_smaller(tokens, num_tokens: int) -> bool:
    """Whether a ``[num_tokens, 4H]`` table costs less than projecting every position (static shapes)."""
    positions = tokens.shape.num_elements()
    return positions is not None and num_tokens <= positions


def _recur(xw, h, c, w_h, static=None, compute=None):
    """The recurrent half of one layer over all steps (gates in block order): ``(outputs [T, B, H], h, c)``.

    ``compute`` is the dtype of the recurrent matmuls (default: ``xw``'s); everything else keeps
    ``xw``'s dtype.
    """
    compute = compute or xw.dtype
    steps = xw.shape[0]
    if static is None and steps is not None and steps <= STATIC_UNROLL_LIMIT:
        static = True
    if static is None:
        # long windows: the same hand-derived backward pass, as loops that trace once
        if xw.dtype == tf.float32 and kernels.lstm_steps() is not None:
            return _recur_steps(compute)(xw, h, c, w_h)
        return _recur_loop(compute)(xw, h, c, w_h)
    w_h = tf.cast(w_h, compute)
    if static:
        return _recur_static(xw, h, c, w_h)
    n = tf.shape(xw)[0]
    out = tf.TensorArray(xw.dtype, size=n)

    def body(t, h, c, out):
        h, c, _ = _cell_forward(xw[t] + matmul(h, w_h), c)
        return t + 1, h, c, out.write(t, h)

    _, h, c, out = tf.while_loop(lambda t, *_: t < n, body, (0, h, c, out))
    return out.stack(), h, c


# TensorFlow's fused LSTMBlockCellGrad kernel exists for these (CPU and GPU), not for float64.
_FUSED_GRAD_DTYPES = (tf.float32, tf.float16)


def _cell_forward(z, c):
    """One step from block-order pre-activations ``z = [i | g | f | o]``.

    Returns ``(h, c_new, (i, g, f, o, tanh c_new))``, the last kept for BPTT.
    """
    zi, zg, zf, zo = tf.split(z, 4, axis=-1)
    i, g, f, o = tf.sigmoid(zi), tf.tanh(zg), tf.sigmoid(zf), tf.sigmoid(zo)
    c_new = f * c + i * g
    tc = tf.tanh(c_new)
    return o * tc, c_new, (i, g, f, o, tc)


def _fused_grad_inputs(w_h):
    """Inputs ``LSTMBlockCellGrad`` only shape-checks here: the kernel, no bias, no peepholes."""
    hidden = tf.shape(w_h)[0]
    return {"w": w_h, "b": tf.zeros([4 * hidden], w_h.dtype),
            "wci": tf.zeros([hidden], w_h.dtype), "wcf": tf.zeros([hidden], w_h.dtype),
            "wco": tf.zeros([hidden], w_h.dtype)}


def _cell_backward(dh_t, d_c, c_prev, acts, fused=None):
    """One BPTT step: ``(dz [i | g | f | o], d_c for the previous step)`` from the saved activations.

    ``fused`` (from :func:`_fused_grad_inputs`) runs the same formulas as TensorFlow's one
    ``LSTMBlockCellGrad`` op.
    """
    i, g, f, o, tc = acts
    if fused is not None:
        d_c_prev, dz = tf.raw_ops.LSTMBlockCellGrad(
            # without peepholes the kernel reads tanh(c) from ``co``; ``cs`` is only shape-checked
            cs_prev=c_prev, i=i, cs=c_prev, f=f, o=o, ci=g, co=tc, cs_grad=d_c, h_grad=dh_t,
            x=c_prev[:, :0], h_prev=c_prev, use_peephole=False, **fused)[:2]
        return dz, d_c_prev
    d_c = d_c + dh_t * o * (1.0 - tc * tc)
    dz = tf.concat([d_c * g * i * (1.0 - i), d_c * i * (1.0 - g * g), d_c * c_prev * f * (1.0 - f),
                    dh_t * tc * o * (1.0 - o)], axis=-1)
    return dz, d_c * f


def _weight_grad(h_prev, d_xw, hidden, dtype):
    """The recurrent kernel's gradient over all steps as one ``[H, T*B] @ [T*B, 4H]`` matmul in ``dtype``."""
    return tf.matmul(tf.cast(tf.reshape(h_prev, [-1, hidden]), dtype),
                     tf.cast(tf.reshape(d_xw, [-1, 4 * hidden]), dtype), transpose_a=True)


@tf.custom_gradient
def _recur_static(xw, h, c, w_h):
    """The time loop unrolled in Python, with a hand-derived BPTT backward pass.

    Autodiff of the unrolled loop builds one small weight-gradient matmul per step plus much
    bookkeeping; here the backward pass keeps only the ``dz_t @ W_h^T`` chain in the loop and
    computes the recurrent weight gradient as one ``[H, T*B] @ [T*B, 4H]`` matmul.  (XLA compiles
    this path, so its backward stays in plain ops.)  ``w_h`` may be bfloat16: the matmuls take
    its dtype, the rest ``xw``'s.
    """
    steps = xw.shape[0]
    hs, cs, gates = [h], [c], []
    for t in range(steps):
        h_new, c_new, acts = _cell_forward(xw[t] + matmul(hs[-1], w_h), cs[-1])
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
            d_h = matmul(dzs[t], w_t)
        d_xw = tf.stack(dzs)
        return d_xw, d_h, d_c, _weight_grad(tf.stack(hs[:-1]), d_xw, tf.shape(h)[-1], w_h.dtype)

    return (outputs, hs[-1], cs[-1]), grad


@functools.lru_cache(maxsize=None)
def _recur_loop(compute):
    """``_recur_static``'s forward and hand-derived backward as symbolic while-loops, with the
    recurrent matmuls in ``compute`` (the fall-back of :func:`_recur_steps`: no kernel library,
    a GPU, or float64).

    The loop bodies are traced once whatever the window length, so a long window costs no more to
    build than a short one.  Each step's activations go to their own TensorArray (no concat and
    split per step), and in float32/float16 each backward step's gate gradients are TensorFlow's
    fused ``LSTMBlockCellGrad`` op instead of ~20 small ones.
    """
    @tf.custom_gradient
    def recur(xw, h, c, w_h):
        n = tf.shape(xw)[0]
        arrays = lambda k: tuple(tf.TensorArray(xw.dtype, size=n) for _ in range(k))  # noqa: E731
        w_c = tf.cast(w_h, compute)

        def forward(t, h, c, saved):
            h_new, c_new, acts = _cell_forward(xw[t] + matmul(h, w_c), c)
            return t + 1, h_new, c_new, tuple(a.write(t, v) for a, v in zip(saved, (h, c) + acts))

        _, h_last, c_last, saved = tf.while_loop(lambda t, *_: t < n, forward, (0, h, c, arrays(7)))
        h_prev = saved[0].stack()
        outputs = tf.concat([h_prev[1:], h_last[None]], 0)

        def grad(d_outputs, d_h, d_c):
            d_h = tf.zeros_like(h) if d_h is None else d_h
            d_c = tf.zeros_like(c) if d_c is None else d_c
            w_t = tf.transpose(w_c)
            fused = _fused_grad_inputs(w_h) if xw.dtype in _FUSED_GRAD_DTYPES else None

            def backward(k, d_h, d_c, dzs):
                t = n - 1 - k
                acts = tuple(a.read(t) for a in saved[2:])
                dz, d_c = _cell_backward(d_outputs[t] + d_h, d_c, saved[1].read(t), acts, fused)
                return k + 1, matmul(dz, w_t), d_c, dzs.write(t, dz)

            _, d_h0, d_c0, dzs = tf.while_loop(lambda k, *_: k < n, backward, (0, d_h, d_c, arrays(1)[0]))
            d_xw = dzs.stack()
            d_w = _weight_grad(h_prev, d_xw, tf.shape(h)[-1], compute)
            return d_xw, d_h0, d_c0, tf.cast(d_w, w_h.dtype)

        return (outputs, h_last, c_last), grad

    return recur


@functools.lru_cache(maxsize=None)
def _recur_steps(compute):
    """The long-window loops on charlm's own step kernels (:mod:`charlm.fast.kernels`), float32 on a CPU.

    Inside the loops everything is feature-major: a step's gates are ``[4H, B]`` (row blocks
    ``[i | g | f | o]``) and the recurrent product is ``W_h^T [4H, H] @ h [H, B]``, which oneDNN
    runs ~1.6x (float32) to ~4x (bfloat16 on AMX) faster per step here than ``h @ W_h``.  Each
    step's elementwise half is one op forward and one backward; the matmuls run in ``compute``.
    The window's input and output are transposed once at each end.
    """
    library = kernels.lstm_steps()

    @tf.custom_gradient
    def recur(xw, h, c, w_h):
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

    return recur
