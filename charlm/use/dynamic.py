"""Dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models"): the
model adapts to the text while it scores it.

The text is read segment by segment.  Each segment is scored first, with the weights as they are;
then one gradient step on that segment's loss moves the weights, and the state is carried on.  So
every character is scored exactly once, before any update that has seen it: a character's score
depends only on the text before it.  The step is RMS-normalised, ``-lr * g / (rms + eps)``, with
``rms`` the root mean square of the same gradients gathered beforehand on the run's training text
(the "statistics pass") and ``g / rms`` clipped to ``+-STEP_CLIP`` (a character that training
hardly saw, repeated for a while, a ruled table of box-drawing characters in the Jargon File say,
otherwise grows its rows until the next character costs thousands of nats), and a decay pulls
every weight back towards its trained value, ``decay * rate * (trained - weight)``, where
``rate`` is ``rms`` over its mean (weights that training moves much also return fast), at most
``1 / decay``.  The adapted weights live only in memory: the run folder is never written.

What is adapted, and why not all of it: a long text is read as side-by-side streams (as
:mod:`charlm.use.scoring` does), each with its *own* adapted copy, because one copy shared by
streams would let a later piece of the text change the weights an earlier piece is scored with.
A per-stream copy of the recurrent kernels would turn the batched ``[S, H] @ [H, 4H]`` product of
every step into S matrix-vector products (and S times the weights to read), so the streams share
the trained recurrent kernels (and deeper layers' input kernels) and each adapts the rest: layer 0's
input table (the embedding times the input kernel, with its bias: one row per token), the deeper
layers' biases and the softmax (an adaptive softmax, :mod:`charlm.nn.softmax`, is shared by the
streams and kept as trained).  The recurrence itself runs on the cells' own training loops
(:mod:`charlm.fast`), their hand-derived backward pass included.  A stream's table is stepped
only in the rows its segment read, and decayed lazily (see ``_rows``): over thousands of tokens
a segment then costs the rows it reads, not the whole vocabulary.

The defaults were tuned on the validation splits of runs trained by the ``fast`` preset, and the
clip on the Jargon File's held-out text (benchmarks/README.md, "Dynamic evaluation"), never on
the texts whose figures are quoted beside them.

:meth:`DynamicScorer.adapt` reads a prime the same way, as one stream, and returns the adapted
weights in the form :meth:`CharLM.step_weights` has, with the state and the logits after the
prime: ``sample --dynamic`` generates from there (:class:`charlm.use.sampling.Sampler`).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from charlm.errors import CharlmError
from charlm.fast.matmul import matmul_seq
from charlm.fast.streams import WARMUP

LEARNING_RATE = 0.003     # RMS-normalised step size
DECAY = 0.01              # pull towards the trained weights per segment
SEGMENT = 50              # tokens per stream between two updates
PIECE_TOKENS = 16384      # default streams: one per this many tokens of text ...
MAX_STREAMS = 64          # ... up to this many
STATS_TOKENS = 50_000     # training tokens of the statistics pass ...
STATS_STREAMS = 32        # ... read as this many columns
EPSILON = 1e-8
RMS_FLOOR = 0.1           # of the mean rms: the least a step is divided by
STEP_CLIP = 10.0          # a weight's normalised gradient g / rms is clipped to +-this: at most lr * 10 a step
MEMORY_BYTES = 1 << 30    # adapted copies of all streams at most (with their gradients)


def layout(n: int, streams: int, segment: int):
    """``(ids positions, trained, scored)`` ``[rows, streams]`` for ``n`` tokens.

    Stream ``s`` scores tokens ``s*L .. (s+1)*L - 1``; every stream after the first first reads
    (and adapts to) the ``WARMUP`` tokens before its piece.  What a stream reads after its piece
    (the next piece's start, or padding past the end) is never scored, so it cannot reach a score.
    ``rows`` is a multiple of ``segment``.  ``pos`` is -1 where a row holds padding.
    """
    length = -(-n // streams)
    warmup = min(WARMUP, length) if streams > 1 else 0
    rows = warmup + length
    rows += -rows % segment
    first = np.arange(streams) * length
    start = np.where(first == 0, 0, first - warmup)
    pos = start[None, :] + np.arange(rows)[:, None]
    scored = (pos >= first[None, :]) & (pos < first[None, :] + length) & (pos < n)
    return np.where(pos < n, pos, -1), scored


class DynamicScorer:
    """Dynamic evaluation of one model; :meth:`gather_statistics` first, then :meth:`score_ids`."""

    def __init__(self, model, tokenizer, learning_rate: float = LEARNING_RATE, decay: float = DECAY,
                 segment: int = SEGMENT, streams: int | None = None, compute=None, step_clip: float = STEP_CLIP):
        if learning_rate < 0 or not 0 <= decay < 1 or segment < 1 or (streams is not None and streams < 1):
            raise CharlmError("dynamic evaluation needs a learning rate >= 0, a decay in [0, 1), "
                              "a segment of at least 1 token and at least one stream")
        self.model, self.tokenizer = model, tokenizer
        # an adaptive softmax (charlm.nn.softmax) is shared by the streams and kept as trained
        self.own_softmax = model.softmax.kind == "full"
        self.learning_rate, self.decay, self.segment, self.streams = learning_rate, decay, segment, streams
        self.step_clip = step_clip
        self.compute = compute or model.compute_dtype
        weights = model.step_weights()
        layers = weights["layers"]
        # the adapted weights, as trained: layer 0's input table, and the rest (deeper biases, softmax)
        self.table = weights["table"]
        self.trained = [*(bias for _, _, bias in layers[1:])]
        if self.own_softmax:
            self.trained += [weights["softmax"]["out_w"], weights["softmax"]["out_b"]]
        self.w_x = [tf.cast(w_x, self.compute) for w_x, _, _ in layers[1:]]
        self.w_h = [w_h for _, w_h, _ in layers]
        self.rms = None
        self._stats_fn = tf.function(self._stats_segment, reduce_retracing=True, autograph=False)
        self._segment_fn = tf.function(self._segment, reduce_retracing=True, autograph=False)
        self._catch_up_fn = tf.function(self._catch_up, reduce_retracing=True, autograph=False)

    # -- one segment -------------------------------------------------------------------------------
    # Each stream's copy of the input table is updated sparsely: a segment's gradient touches only
    # the rows of the tokens it read, and the decay towards the trained table, which moves every
    # row, is applied to a row when it is next read: ``table - trained`` shrinks by
    # ``(1 - decay * rate)`` a segment, so a row last brought up to date ``n`` segments ago is
    # ``trained + (1 - decay * rate)**n * (stored - trained)``.  The same update as a dense one
    # over the whole table every segment (tests/test_dynamic.py checks it against that), but a
    # segment costs the rows it reads, not the vocabulary: over 2,568 tokens (Chinese with byte
    # tokens) the dense update of every stream's whole table was ~60% of the time.
    def _rows(self, ids):
        """The (stream, token) rows a segment ``ids`` ``[T, S]`` reads: ``(where [U, 2], index [T, S])``,
        each row once, ``index`` a position's row."""
        streams = tf.shape(ids)[1]
        size = tf.shape(self.table)[0]
        keys = ids + size * tf.range(streams)[None]
        unique, index = tf.unique(tf.reshape(keys, [-1]))
        return tf.stack([unique // size, unique % size], 1), tf.reshape(index, tf.shape(ids))

    def _forward(self, rows, index, rest, ids, state, top):
        """Nats ``[T, S]`` of ``ids``, each stream with its own table rows ``rows`` ``[U, G]``
        (``index``: a position's row) and ``rest`` (deeper biases, a full softmax), the new state,
        the top outputs ``[T, S, H]``.  ``top``: the top output before the segment (zero at a start)."""
        biases = rest[:-2] if self.own_softmax else rest
        xw = tf.gather(rows, index)
        outputs, new_state = None, []
        for layer, cell in enumerate(self.model.cells):
            if layer:
                xw = matmul_seq(outputs, self.w_x[layer - 1], self.compute) + biases[layer - 1][None]
            outputs, layer_state = cell.sequence(xw, self.w_h[layer], state[layer], "auto", self.compute)
            new_state.append(layer_state)
        # token t is predicted from the output after token t - 1
        before = tf.concat([top[None], outputs[:-1]], 0)
        if not self.own_softmax:
            return -self.model.softmax.target_log_probs(before, ids), new_state, outputs
        logits = tf.einsum("tsh,shv->tsv", before, rest[-2]) + rest[-1][None]
        nats = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=logits)
        return nats, new_state, outputs

    def _grads(self, rows, index, rest, ids, trained, state, top):
        """Each stream's gradient of its mean loss over the ``trained`` positions of the segment,
        for its ``rows`` and its ``rest``."""
        with tf.GradientTape() as tape:
            tape.watch([rows, rest])
            nats, new_state, outputs = self._forward(rows, index, rest, ids, state, top)
            counts = tf.maximum(tf.reduce_sum(trained, 0), 1.0)
            loss = tf.reduce_sum(tf.reduce_sum(nats * trained, 0) / counts)
        d_rows, d_rest = tape.gradient(loss, [rows, rest])
        return nats, new_state, outputs, tf.convert_to_tensor(d_rows), [tf.convert_to_tensor(g) for g in d_rest]

    def _step(self, p, g, scale, rate, trained, lr, decay):
        """The update of weights ``p``: ``p - lr * clip(g * scale) + decay * rate * (trained - p)``."""
        return p - lr * tf.clip_by_value(g * scale, -self.step_clip, self.step_clip) + decay * rate * (trained - p)

    def _segment(self, table, last, count, rest, ids, trained, state, top, settings):
        """Score the segment ``count``, then one step: ``(nats, new rest, new state, outputs)``;
        ``table`` and ``last`` (the segment each row was last brought up to date for) are
        updated in place."""
        scale, rate, lr, decay, shrink = settings
        where, index = self._rows(ids)
        token = where[:, 1]
        base = tf.gather(self.table, token)
        behind = tf.cast(count - tf.gather_nd(last, where), tf.float32)[:, None]
        rows = base + tf.pow(tf.gather(shrink, token), behind) * (tf.gather_nd(table, where) - base)
        nats, new_state, outputs, d_rows, d_rest = self._grads(rows, index, rest, ids, trained, state, top)
        table.scatter_nd_update(where, self._step(rows, d_rows, tf.gather(scale[0], token), tf.gather(rate[0], token),
                                                  base, lr, decay))
        last.scatter_nd_update(where, tf.fill(tf.shape(token), count + 1))
        new = [self._step(p, g, s, r, t, lr, decay)
               for p, g, s, r, t in zip(rest, d_rest, scale[1:], rate[1:], self.trained)]
        return nats, new, new_state, outputs

    def _catch_up(self, table, last, count, shrink):
        """Every stream's table as it stands after segment ``count - 1`` (the decay applied to
        the rows not read since they were last brought up to date)."""
        behind = tf.cast(count - last, tf.float32)[..., None]
        return self.table[None] + tf.pow(shrink[None], behind) * (table - self.table[None])

    # -- the statistics pass ---------------------------------------------------------------------
    def _stats_segment(self, rest, ids, trained, state, top):
        """A segment's squared gradients, each stream's own, summed over the streams (the table's
        by token): ``(state, outputs, squares)``."""
        where, index = self._rows(ids)
        token = where[:, 1]
        _, new_state, outputs, d_rows, d_rest = self._grads(tf.gather(self.table, token), index, rest, ids,
                                                            trained, state, top)
        table = tf.math.unsorted_segment_sum(tf.square(d_rows), token, tf.shape(self.table)[0])
        return new_state, outputs, [table, *(tf.reduce_sum(tf.square(g), 0) for g in d_rest)]

    def gather_statistics(self, tokens: np.ndarray, count: int = STATS_TOKENS, streams: int = STATS_STREAMS):
        """The gradients' root mean square over ``count`` tokens of training text (``tokens``),
        read as ``streams`` columns from evenly spaced places, segment by segment, the weights fixed."""
        tokens = np.asarray(tokens, np.int32)
        streams = max(1, min(streams, tokens.size // (self.segment + 1)))
        if streams == 0 or tokens.size <= self.segment:
            raise CharlmError(f"dynamic evaluation's statistics pass needs more than {self.segment} "
                              f"tokens of training text (got {tokens.size})")
        rows = max(self.segment, min(count // streams, tokens.size // streams) // self.segment * self.segment)
        starts = (np.arange(streams) * (tokens.size - rows) // max(streams - 1, 1)) if streams > 1 else np.zeros(1, int)
        grid = tokens[starts[None, :] + np.arange(rows)[:, None]]
        rest = self._copies(streams)
        state, top = self._zero(streams)
        squares = [tf.zeros_like(t) for t in (self.table, *self.trained)]
        ones = tf.ones([self.segment, streams])
        for row in range(0, rows, self.segment):
            state, outputs, added = self._stats_fn(rest, tf.constant(grid[row:row + self.segment]), ones, state, top)
            top = outputs[-1]
            squares = [q + a for q, a in zip(squares, added)]
        samples = streams * (rows // self.segment)
        self.rms = [tf.sqrt(q / samples) for q in squares]
        self.stats_tokens = rows * streams
        return self

    # -- reading a text, segment by segment ----------------------------------------------------
    def _read(self, grid, trained, streams: int, each=None):
        """Score and adapt to ``grid`` ``[rows, streams]`` segment by segment (``trained``: the
        positions that count): ``(table, rest, state, top)`` after it, the table caught up.
        ``each(row, nats, outputs)`` is called after every segment."""
        settings = self._step_settings()
        table = tf.Variable(tf.tile(self.table[None], [streams, 1, 1]), trainable=False)
        last = tf.Variable(tf.zeros([streams, self.table.shape[0]], tf.int32), trainable=False)
        rest = self._copies(streams)
        state, top = self._zero(streams)
        count = 0
        for row in range(0, grid.shape[0], self.segment):      # the last segment may be shorter
            piece = slice(row, row + self.segment)
            nats, rest, state, outputs = self._segment_fn(table, last, tf.constant(count, tf.int32), rest,
                                                          tf.constant(grid[piece]), tf.constant(trained[piece]),
                                                          state, top, settings)
            top = outputs[-1]
            count += 1
            if each is not None:
                each(row, nats, outputs)
        return self._catch_up_fn(table, last, tf.constant(count, tf.int32), settings[-1]), rest, state, top

    # -- a prime to generate from ----------------------------------------------------------------
    def adapt(self, tokens: np.ndarray):
        """Read ``tokens`` as one stream, segment by segment, each scored and then learnt from:
        ``(step weights, state, logits)`` after the last token, the weights as
        :meth:`CharLM.step_weights` gives them (adapted table, deeper biases and full softmax)."""
        if self.rms is None:
            raise CharlmError("dynamic evaluation: gather_statistics() comes first")
        tokens = np.asarray(tokens, np.int32)
        if tokens.size == 0:
            raise CharlmError("sample --dynamic needs a prime to adapt to (--prime or --prime-file)")
        table, rest, state, top = self._read(tokens[:, None], np.ones([tokens.size, 1], np.float32), 1)
        adapted = [p[0] for p in rest]
        weights = self.model.step_weights()
        weights["table"] = table[0]
        deeper = adapted[:len(self.model.cells) - 1]
        weights["layers"] = [weights["layers"][0]] + [(w_x, w_h, bias) for (w_x, w_h, _), bias
                                                      in zip(weights["layers"][1:], deeper)]
        if self.own_softmax:
            weights["softmax"] = {"out_w": adapted[-2], "out_b": adapted[-1]}
        logits = self.model.softmax.step_logits(weights["softmax"], top)
        return weights, state, logits

    def _step_settings(self):
        """The update's per-weight ``scale`` and ``rate`` from the statistics (the table's first),
        lr, decay, and the table's shrink towards the trained one a segment, ``1 - decay * rate``."""
        mean = tf.add_n([tf.reduce_sum(r) for r in self.rms]) / sum(int(np.prod(r.shape)) for r in self.rms)
        # a weight whose gradient training never saw (a character absent from the statistics pass)
        # would get an unbounded step: the floor is a tenth of the mean
        scale = [1.0 / (r + EPSILON + RMS_FLOOR * mean) for r in self.rms]
        rate = [tf.minimum(r / mean, 1.0 / self.decay) if self.decay else tf.zeros_like(r) for r in self.rms]
        decay = tf.constant(self.decay, tf.float32)
        return scale, rate, tf.constant(self.learning_rate, tf.float32), decay, tf.maximum(1.0 - decay * rate[0], 0.0)

    # -- scoring -----------------------------------------------------------------------------------
    def _copies(self, streams: int):
        return [tf.tile(t[None], [streams] + [1] * t.shape.rank) for t in self.trained]

    def _zero(self, streams: int):
        hidden = self.model.config.hidden
        z = tf.zeros([streams, hidden])
        return [(z, z) for _ in self.model.cells], z

    def default_streams(self, tokens: int) -> int:
        per_stream = sum(int(np.prod(t.shape)) for t in (self.table, *self.trained)) * 4 * 4
        return max(1, min(MAX_STREAMS, tokens // PIECE_TOKENS, MEMORY_BYTES // per_stream))

    def score_tokens(self, tokens: np.ndarray, last_logits: bool = False):
        """``(nats of every token in text order, settings)``; with ``last_logits``, also the
        logits after the last token (from its stream's state and final weights)."""
        if self.rms is None:
            raise CharlmError("dynamic evaluation: gather_statistics() comes first")
        tokens = np.asarray(tokens, np.int32)
        n = tokens.size
        streams = min(self.streams or self.default_streams(n), max(1, n))
        pos, scored = layout(n, streams, self.segment)
        grid = np.where(pos >= 0, tokens[np.maximum(pos, 0)], 0).astype(np.int32)
        nats = np.zeros(pos.shape, np.float64)
        last = {}
        if last_logits:
            last_stream = int(np.flatnonzero(scored.any(0))[-1])
            last_row = int(np.flatnonzero(pos[:, last_stream] == n - 1)[0])

        def each(row, seg_nats, outputs):
            nats[row:row + self.segment] = seg_nats.numpy()
            if last_logits and row <= last_row < row + self.segment:
                last["output"] = outputs[last_row - row, last_stream]

        _, rest, _, _ = self._read(grid, (pos >= 0).astype(np.float32), streams, each)
        positions = np.zeros(n, np.float64)
        positions[pos[scored]] = nats[scored]
        settings = dict(learning_rate=self.learning_rate, decay=self.decay, segment=self.segment,
                        streams=streams, stats_tokens=self.stats_tokens)
        if not last_logits:
            return positions, settings
        if not self.own_softmax:
            return positions, settings, self.model.softmax.logits(last["output"][None])[0]
        logits = tf.matmul(last["output"][None], rest[-2][last_stream])[0] + rest[-1][last_stream]
        return positions, settings, logits
