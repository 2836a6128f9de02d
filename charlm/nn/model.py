"""The language model: an embedding (or one-hot input), stacked recurrent cells, a softmax.

``CharLM`` reads tokens ``[T, B]`` (characters or bigrams, :mod:`charlm.data.vocab`) and returns
the logits of the next token at every position and the new state.  The cells
(:mod:`charlm.nn.cells`: LSTM by default, ``config.cell`` "gru" or "rnn") all compute their gates
from one matmul of ``[x, h]``; the model splits that matmul in two halves that are cheaper apart:
the input half ``x @ kernel[:in] + bias`` for every time step at once (for one-hot input a row
lookup, for an embedding one big matmul, :mod:`charlm.fast.lookup`), and only the recurrent half
``h @ kernel[in:]`` inside the time loop, which each cell runs over the window itself
(``cell.sequence``, whose speed machinery lives in :mod:`charlm.fast`).  The tests check every
path against a plain-numpy four-matmul reference.

Dropout (Zaremba et al. 2014) touches only non-recurrent connections: the input of each layer and
the output of the top layer; the ``h -> h`` activations through time are never dropped.  The
recurrent *weights* may be (``weight_drop``, DropConnect as in AWD-LSTM, Merity et al. 2018): one
mask over each recurrent kernel per training batch, the same at every time step and for every
row, so the fast loops run unchanged on the masked kernel (it costs one kernel-sized draw a step).  Dropout masks
come from stateless random ops seeded by the caller, so a training run is reproducible and
resumable.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from charlm.config import ModelConfig
from charlm.fast.lookup import lookup, table_is_smaller
from charlm.fast.matmul import matmul_seq
from charlm.nn import softmax
from charlm.nn.cells import CELL_TYPES
from charlm.nn.init import initial_weights


class CharLM(tf.Module):
    """Embedding or one-hot input, ``config.layers`` cells of ``config.cell``, a softmax over the tokens.

    ``dtype`` is the weights', states' and logits' type; ``compute_dtype`` the matmuls' (bfloat16:
    :mod:`charlm.fast.precision`), for cells that take it.  ``token_rank``: an adaptive softmax's
    ranking of the tokens by training count (:func:`charlm.nn.softmax.rank_from_counts`; a loaded
    model's comes from its checkpoint).
    """

    def __init__(self, config: ModelConfig, num_tokens: int, seed: int = 0, dtype=tf.float32,
                 compute_dtype=None, token_rank=None):
        super().__init__(name="charlm")
        self.config = config
        self.num_tokens = num_tokens
        self.dtype = dtype
        cell_type = CELL_TYPES[config.cell]
        self.compute_dtype = (compute_dtype or dtype) if cell_type.bfloat16 else dtype
        start = initial_weights(config, num_tokens, seed)
        if config.embedding_size:
            self.embedding = tf.Variable(start["embedding"], dtype=dtype, name="embedding")
            size = config.embedding_size
        else:
            self.embedding = None
            size = num_tokens
        self.cells = []
        for layer, kernel in enumerate(start["kernels"]):
            self.cells.append(cell_type(size, config.hidden, kernel, dtype, name=f"{config.cell}_{layer}"))
            size = config.hidden
        # the output layer (charlm.nn.softmax); its variables are the model's own attributes, so
        # a full softmax's are ``out_w``/``out_b`` in the checkpoint, as they always were
        self.softmax = softmax.build(config.softmax, config.hidden, num_tokens, start["softmax"], dtype,
                                     self.compute_dtype, config.softmax_cutoffs, token_rank)
        for name, variable in self.softmax.variables.items():
            setattr(self, name, variable)

    def zero_state(self, batch_size):
        z = tf.zeros([batch_size, self.config.hidden], dtype=self.dtype)
        return [(z, z) for _ in self.cells]

    def num_parameters(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.trainable_variables))

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

    # -- the whole model over a window ---------------------------------------------------------
    def input_projection(self, tokens, seed, w_x, bias):
        """Layer 0's ``x_t @ w_x + bias`` for all steps ``[T, B, gates * H]`` (``w_x``: its input rows).

        One-hot input makes it a row lookup in ``w_x + bias``; an embedding does too (a lookup in
        ``embedding @ w_x + bias``) unless its dropout is on, when every step's dropped embedding
        is multiplied.  A lookup's gradient adds the gate gradients of each token's positions.
        """
        dropping = seed is not None and self.config.dropout > 0
        if self.embedding is None:
            if dropping:    # dropping a one-hot input drops its row (not the bias)
                rows = self._dropout(lookup(w_x, tokens), seed, 0, shape=tf.concat([tf.shape(tokens), [1]], 0))
                return rows + bias
            return lookup(w_x + bias, tokens)
        if not dropping and table_is_smaller(tokens, self.num_tokens):
            return lookup(tf.matmul(self.embedding, w_x) + bias, tokens)
        e = self._dropout(tf.gather(self.embedding, tokens), seed, 0)
        return matmul_seq(e, w_x, self.compute_dtype) + bias

    def unroll(self, tokens, state, seed=None, loop: str = "auto"):
        """Run the model over ``tokens`` ``[T, B]`` from ``state``: ``(logits [T, B, V], new_state)``,
        the logits those of :meth:`charlm.nn.softmax.FullSoftmax.logits` (an adaptive softmax's:
        exact log-probabilities).  :meth:`features` and ``model.softmax.loss`` are the training path.
        """
        top, new_state = self.features(tokens, state, seed, loop)
        return self.softmax.logits(top), new_state

    def features(self, tokens, state, seed=None, loop: str = "auto"):
        """Run the model over ``tokens`` ``[T, B]`` from ``state``: ``(top [T, B, H], new_state)``,
        the top layer's output (after its dropout) that the softmax reads.

        ``seed`` (a shape-[2] int tensor) turns dropout on; ``None`` is inference.  ``loop`` is how
        each cell runs the window (:func:`charlm.fast.bptt.choose`): "auto" (the default: unrolled
        in Python for short windows, hand-BPTT loops for long ones), "unrolled", "loop", or
        "inference" (a plain loop, no gradient machinery).
        """
        outputs = None
        new_state = []
        for layer, cell in enumerate(self.cells):
            w_x, w_h = cell.split()
            if layer == 0:
                xw = self.input_projection(tokens, seed, w_x, cell.bias)
            else:
                xw = matmul_seq(self._dropout(outputs, seed, layer), w_x, self.compute_dtype) + cell.bias
            if seed is not None and self.config.weight_drop > 0:
                keep = 1.0 - self.config.weight_drop
                noise = tf.random.stateless_uniform(tf.shape(w_h), seed=seed + tf.constant([1, layer], seed.dtype),
                                                    dtype=self.dtype)
                w_h = w_h * tf.cast(noise < keep, self.dtype) / keep
            outputs, layer_state = cell.sequence(xw, w_h, state[layer], loop, self.compute_dtype)
            new_state.append(layer_state)
        return self._dropout(outputs, seed, len(self.cells)), new_state

    def initial_logits(self):
        """The logits of the zero state (whose top output is 0): ``[V]``."""
        return self.softmax.initial_logits()

    # -- one step at a time (sampling) -------------------------------------------------------------
    def step_weights(self):
        """What :meth:`step` reads, prepared once outside the loop that calls it.

        Layer 0's input half becomes a lookup table ``[num_tokens, gates * H]`` (bias folded in);
        every kernel is split here.  Slicing a kernel inside a compiled loop instead made XLA fuse
        the slice into a one-row matmul it then computed with slow generic code: one sequence at
        512 units sampled at ~450 steps/s against ~15,000 this way.
        """
        layers = []
        for cell in self.cells:
            w_x, w_h = cell.split()
            layers.append((w_x, w_h, tf.identity(cell.bias)))
        w_x, _, bias = layers[0]
        table = (w_x if self.embedding is None else tf.matmul(self.embedding, w_x)) + bias
        return {"table": table, "layers": layers, "softmax": self.softmax.step_weights()}

    def step(self, weights, tokens, state, ranked=False):
        """One inference step for tokens ``[B]`` with :meth:`step_weights`: ``(logits [B, V], new_state)``
        (``ranked``: the logits' columns in the softmax's ``sampling_order``)."""
        new_state = []
        x = None
        for layer, (cell, (w_x, w_h, bias)) in enumerate(zip(self.cells, weights["layers"])):
            xw = tf.gather(weights["table"], tokens) if layer == 0 else tf.matmul(x, w_x) + bias
            x, layer_state = cell.step(xw, tf.matmul(state[layer][0], w_h), state[layer])
            new_state.append(layer_state)
        return self.softmax.step_logits(weights["softmax"], x, ranked=ranked), new_state
