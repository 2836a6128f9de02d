"""The output layer: the distribution of the next token given the top layer's output ``h``.

Two kinds behind one interface (``SOFTMAXES``):

* ``full``: ``logits = h @ out_w + out_b`` over every token (the notebook's softmax).
* ``adaptive`` (Grave et al. 2017, "Efficient softmax approximation for GPUs"): the tokens are
  ranked by their count in the training text.  A *head* scores the ``cutoffs[0]`` most frequent
  tokens plus one entry per *tail cluster* (ranks ``cutoffs[k-1] .. cutoffs[k]``, the last tail
  ending at the vocabulary's size); each tail has its own softmax behind a narrower projection
  (``h -> H / 4**k -> cluster``).  ``log p(token) = log p_head(cluster) + log p_tail(token)``,
  exactly normalised over the whole vocabulary.  The ranking is kept in the checkpoint
  (``token_rank``, a non-trainable variable), the cutoffs in ``config.json``.

Every layer gives:

* ``loss(h, targets)`` (mean nats per token) and ``total(h, targets)`` (their sum), for training.
  The adaptive layer *gathers* the rows of each tail by their targets' cluster, so a tail's two
  matmuls are paid only for the positions whose target lies in it; ``dense_total`` computes every
  cluster for every position (the reference the tests compare it with).
* ``logits(h)`` ``[..., V]``: scores whose softmax is the model's distribution (the full layer's
  logits; the adaptive layer's exact log-probabilities), what scoring and sampling read;
  ``log_probs(h)`` the normalised log-probabilities; ``target_log_probs(h, targets)``.
* ``step_weights(compute)``, ``step_logits(weights, h)`` and ``step_nats(weights, h, targets)``:
  the same for one step of sampling or the streamed scorer, with the weights prepared once
  outside their loop.  ``step_logits(weights, h, ranked=True)`` gives the columns in the order
  ``sampling_order(weights)`` names (the token at each column; ``None``: token order), which the
  sampler picks from without reordering every step.
* ``initial_logits()``: the prediction of the zero state (whose top output is 0).

The variables live on the model (:class:`charlm.nn.model.CharLM`) under the names of
``variables``: ``out_w``/``out_b`` for ``full``, so runs saved before this module load unchanged.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from charlm.fast.matmul import matmul, matmul_seq

SOFTMAXES = ("full", "adaptive")
# --softmax auto: adaptive for vocabularies of more than this many tokens (benchmarks/softmax.py)
AUTO_TOKENS = 1000
# default cutoffs: the head's share of the tokens, and its bounds (benchmarks/softmax.py cutoffs:
# on fortunes-zh's 5,750 characters a head of 256 trained fastest and scored best of 256, 512, 1000)
HEAD_SHARE = 1 / 20
HEAD_MIN, HEAD_MAX = 256, 2000
# hidden 0 (`--preset fast`): the width for the softmax the vocabulary gets.  Over a large
# alphabet the recurrence, not the output layer, sets an adaptive model's step time, and in 150 s
# 384 units made 1.5x the steps of 512 and scored lower on Chinese, held out of the same source and
# of another (benchmarks/README.md, "Large alphabets at equal time")
WIDTH = {"full": 512, "adaptive": 384}
# ... and at most this where the matmuls run in float32 (no bfloat16 hardware): there a 512-unit
# step costs about twice a 384-unit one, and 384 units scored lower on English at 150 s and 600 s
# and on text8 at 150 s (256 won at 150 s, lost at 600 s; benchmarks/README.md, "`fast` on a CPU
# without bfloat16")
FLOAT32_WIDTH = 384
# embedding size -1 (`--preset fast`): the embedding for the softmax the vocabulary gets.  Over
# thousands of tokens a 64-wide embedding is a bottleneck: on Chinese, in step counts set for
# equal time, 256 scored 0.10 nats/char lower (bigrams 0.10, text of another source 0.04) for
# 26% more time a step; in 150-s runs on a CPU fast enough to read the text three times, 0.01
# (benchmarks/README.md, "Large alphabets at equal time")
EMBEDDING = {"full": 64, "adaptive": 256}
# each tail's projection is this many times narrower than the one before it (Grave et al.: 4)
NARROWING = 4


def default_cutoffs(num_tokens: int) -> list[int]:
    """Cutoffs for ``num_tokens`` tokens: a head of a twentieth of them (256 to 2,000; at most
    half), then two tails, the first up to rank four times the head's (one tail when few tokens
    are left)."""
    head = int(min(HEAD_MAX, max(HEAD_MIN, num_tokens * HEAD_SHARE)))
    head = max(1, min(head, num_tokens // 2))
    second = head * 4
    if second >= num_tokens - 1:
        return [head]
    return [head, second]


def check_cutoffs(cutoffs, num_tokens: int) -> str | None:
    """Why ``cutoffs`` cannot split ``num_tokens`` tokens, or None."""
    if not cutoffs:
        return "no cutoffs"
    if any(int(c) != c for c in cutoffs) or list(cutoffs) != sorted(set(cutoffs)) or cutoffs[0] < 1:
        return f"--softmax-cutoffs must be increasing positive numbers (got {','.join(map(str, cutoffs))})"
    if cutoffs[-1] >= num_tokens:
        return (f"--softmax-cutoffs {','.join(map(str, cutoffs))}: the last cutoff must be below the "
                f"{num_tokens:,} tokens of the vocabulary")
    return None


def projection_sizes(hidden: int, tails: int) -> list[int]:
    return [max(1, hidden // NARROWING ** (k + 1)) for k in range(tails)]


def shapes(kind: str, hidden: int, num_tokens: int, cutoffs) -> dict[str, tuple]:
    """The weight matrices of a layer (biases aside), by variable name, in drawing order."""
    if kind not in SOFTMAXES:
        raise ValueError(f"softmax {kind!r} is not resolved (charlm.nn.softmax.resolve)")
    if kind == "full":
        return {"out_w": (hidden, num_tokens)}
    bounds = [*cutoffs, num_tokens]
    out = {"head_w": (hidden, cutoffs[0] + len(cutoffs))}
    for k, size in enumerate(projection_sizes(hidden, len(cutoffs))):
        out[f"tail{k}_proj"] = (hidden, size)
        out[f"tail{k}_w"] = (size, bounds[k + 1] - bounds[k])
    return out


def rank_from_counts(counts: np.ndarray) -> np.ndarray:
    """Each token's rank by count, most frequent first (ties: lower token id first)."""
    order = np.argsort(-np.asarray(counts, np.int64), kind="stable")
    rank = np.empty(order.size, np.int32)
    rank[order] = np.arange(order.size, dtype=np.int32)
    return rank


def build(kind: str, hidden: int, num_tokens: int, weights: dict, dtype=tf.float32, compute=None,
          cutoffs=(), rank=None):
    """The layer ``kind`` over ``weights`` (numpy, by :func:`shapes`' names; biases start at 0)."""
    if kind not in SOFTMAXES:
        raise ValueError(f"softmax {kind!r} is not resolved (charlm.nn.softmax.resolve)")
    if kind == "full":
        return FullSoftmax(weights, num_tokens, dtype, compute)
    return AdaptiveSoftmax(weights, num_tokens, list(cutoffs), dtype, compute, rank)


class FullSoftmax:
    """``h @ out_w + out_b`` over every token."""

    kind = "full"

    def __init__(self, weights: dict, num_tokens: int, dtype=tf.float32, compute=None):
        self.compute = compute or dtype
        self.out_w = tf.Variable(weights["out_w"], dtype=dtype, name="out_w")
        self.out_b = tf.Variable(tf.zeros([num_tokens], dtype=dtype), name="out_b")
        self.variables = {"out_w": self.out_w, "out_b": self.out_b}

    def logits(self, h):
        return matmul_seq(h, self.out_w, self.compute) + self.out_b

    def log_probs(self, h):
        return tf.nn.log_softmax(self.logits(h))

    def target_log_probs(self, h, targets):
        return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=self.logits(h))

    def loss(self, h, targets):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=self.logits(h)))

    def total(self, h, targets):
        return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=self.logits(h)))

    dense_total = total

    def initial_logits(self):
        return tf.identity(self.out_b)

    def step_weights(self, compute=None):
        out_w = tf.identity(self.out_w)
        return {"out_w": out_w if compute is None else tf.cast(out_w, compute), "out_b": tf.identity(self.out_b)}

    @staticmethod
    def step_logits(weights, h, ranked=False):
        return matmul(h, weights["out_w"]) + weights["out_b"]

    @staticmethod
    def sampling_order(weights):
        return None

    def step_nats(self, weights, h, targets):
        """``-log p(targets)`` ``[N]`` of flat ``h`` ``[N, H]`` with :meth:`step_weights`."""
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=self.step_logits(weights, h))


class AdaptiveSoftmax:
    """A head over the frequent tokens and one entry per tail; each tail behind a projection."""

    kind = "adaptive"

    def __init__(self, weights: dict, num_tokens: int, cutoffs: list, dtype=tf.float32, compute=None, rank=None):
        self.compute = compute or dtype
        self.dtype = dtype
        self.num_tokens = num_tokens
        self.cutoffs = [int(c) for c in cutoffs]
        self.bounds = [0, *self.cutoffs, num_tokens]
        self.tails = len(self.cutoffs)
        rank = np.arange(num_tokens, dtype=np.int32) if rank is None else np.asarray(rank, np.int32)
        self.token_rank = tf.Variable(rank, trainable=False, name="token_rank")
        self.head_w = tf.Variable(weights["head_w"], dtype=dtype, name="head_w")
        self.head_b = tf.Variable(tf.zeros([weights["head_w"].shape[1]], dtype=dtype), name="head_b")
        self.variables = {"token_rank": self.token_rank, "head_w": self.head_w, "head_b": self.head_b}
        self.tail_vars = []
        for k in range(self.tails):
            proj = tf.Variable(weights[f"tail{k}_proj"], dtype=dtype, name=f"tail{k}_proj")
            w = tf.Variable(weights[f"tail{k}_w"], dtype=dtype, name=f"tail{k}_w")
            b = tf.Variable(tf.zeros([w.shape[1]], dtype=dtype), name=f"tail{k}_b")
            self.tail_vars.append((proj, w, b))
            self.variables.update({f"tail{k}_proj": proj, f"tail{k}_w": w, f"tail{k}_b": b})

    # -- where a target lies -------------------------------------------------------------------
    def _place(self, targets):
        """``(rank, cluster)`` of flat targets: cluster 0 is the head, k the k-th tail."""
        rank = tf.gather(self.token_rank, targets)
        cluster = tf.reduce_sum(tf.cast(rank[:, None] >= tf.constant(self.cutoffs, rank.dtype)[None, :], tf.int32), 1)
        return rank, cluster

    def _head_targets(self, rank, cluster):
        return tf.where(cluster == 0, rank, self.cutoffs[0] + cluster - 1)

    def _flat(self, h, targets):
        width = tf.shape(h)[-1]
        return tf.reshape(h, [-1, width]), tf.reshape(targets, [-1])

    def _weights(self, compute):
        """The matmul weights in ``compute`` and the biases: ``(head_w, head_b, [(proj, w, b)])``."""
        cast = (lambda v: tf.cast(v, compute)) if compute is not None and compute != self.dtype else tf.identity
        return cast(self.head_w), tf.identity(self.head_b), [(cast(p), cast(w), tf.identity(b))
                                                               for p, w, b in self.tail_vars]

    # -- training: every tail only where its targets are ----------------------------------------
    def _gathered_nats(self, h, targets, weights=None):
        """``(head nats [N], [(positions, tail nats)] per tail)`` of flat ``h`` ``[N, H]`` (with
        :meth:`step_weights` ``weights``, else the variables in the layer's compute dtype)."""
        if weights is None:
            head_w, head_b, tails = self._weights(self.compute)
        else:
            head_w, head_b, tails = weights["head_w"], weights["head_b"], weights["tails"]
        rank, cluster = self._place(targets)
        head_nats = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=self._head_targets(rank, cluster), logits=matmul(h, head_w) + head_b)
        parts = []
        for k, (proj, w, b) in enumerate(tails):
            where = tf.where(tf.equal(cluster, k + 1))[:, 0]
            rows = tf.gather(h, where)
            logits = matmul(matmul(rows, proj), w) + b
            nats = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.gather(rank, where) - self.bounds[k + 1], logits=logits)
            parts.append((where, nats))
        return head_nats, parts

    def total(self, h, targets):
        h, targets = self._flat(h, targets)
        head_nats, parts = self._gathered_nats(h, targets)
        total = tf.reduce_sum(head_nats)
        for _, nats in parts:
            total += tf.reduce_sum(nats)
        return total

    def loss(self, h, targets):
        return self.total(h, targets) / tf.cast(tf.size(targets), self.dtype)

    def target_log_probs(self, h, targets):
        shape = tf.shape(targets)
        h, targets = self._flat(h, targets)
        return tf.reshape(-self._position_nats(h, targets), shape)

    def _position_nats(self, h, targets, weights=None):
        """``-log p(targets)`` ``[N]``: the head's nats plus, where a target lies in a tail, the tail's."""
        nats, parts = self._gathered_nats(h, targets, weights)
        for where, tail_nats in parts:
            nats = tf.tensor_scatter_nd_add(nats, where[:, None], tail_nats)
        return nats

    def dense_total(self, h, targets):
        """:meth:`total` computed from every cluster at every position (the reference)."""
        lp = self.log_probs(h)
        return -tf.reduce_sum(tf.gather(lp, targets, batch_dims=targets.shape.rank))

    # -- the whole distribution -----------------------------------------------------------------
    def step_weights(self, compute=None):
        head_w, head_b, tails = self._weights(compute)
        return {"head_w": head_w, "head_b": head_b, "tails": tails, "token_rank": tf.identity(self.token_rank)}

    def step_logits(self, weights, h, ranked=False):
        """Exact log-probabilities ``[N, V]`` of flat ``h`` ``[N, H]``, in token order (``ranked``:
        in rank order, most frequent first, as the clusters hold them; reordering 6,000 columns
        is an XLA gather that took most of a sampling step's output layer, 48 of 59 us)."""
        head = tf.nn.log_softmax(matmul(h, weights["head_w"]) + weights["head_b"])
        first = self.cutoffs[0]
        parts = [head[:, :first]]
        for k, (proj, w, b) in enumerate(weights["tails"]):
            tail = tf.nn.log_softmax(matmul(matmul(h, proj), w) + b)
            parts.append(head[:, first + k:first + k + 1] + tail)
        ranks = tf.concat(parts, axis=1)
        return ranks if ranked else tf.gather(ranks, weights["token_rank"], axis=1)

    @staticmethod
    def sampling_order(weights):
        """The token id of each column of ``step_logits(ranked=True)``: ``[V]``."""
        return tf.math.invert_permutation(weights["token_rank"])

    def step_nats(self, weights, h, targets):
        """``-log p(targets)`` ``[N]`` of flat ``h`` ``[N, H]``, without assembling the whole
        distribution: each tail's matmuls only for the rows whose target lies in it, as in
        training (the streamed scorer's loop runs outside XLA, so the gathered rows may vary)."""
        return self._position_nats(h, targets, weights)

    def logits(self, h):
        width = tf.shape(h)[-1]
        flat = self.step_logits(self.step_weights(self.compute), tf.reshape(h, [-1, width]))
        return tf.reshape(flat, tf.concat([tf.shape(h)[:-1], [self.num_tokens]], 0))

    log_probs = logits

    def initial_logits(self):
        return self.logits(tf.zeros([1, self.head_w.shape[0]], self.dtype))[0]


def resolve(config, num_tokens: int, bfloat16: bool = True):
    """``config`` (a ModelConfig) with its softmax decided for ``num_tokens`` tokens: "auto" made
    full or adaptive (adaptive above ``AUTO_TOKENS``), an adaptive layer's empty cutoffs filled in
    (:func:`default_cutoffs`) and given ones checked against the vocabulary; ``hidden`` 0 (the
    ``fast`` preset's) made the width for that softmax (:data:`WIDTH`), no more than
    :data:`FLOAT32_WIDTH` unless the matmuls will run in ``bfloat16``, and an embedding size of
    -1 (also ``fast``'s) its embedding (:data:`EMBEDDING`)."""
    from charlm.errors import CharlmError

    if config.softmax == "auto":
        config.softmax = "adaptive" if num_tokens > AUTO_TOKENS else "full"
        if config.softmax == "full":
            config.softmax_cutoffs = []
    if config.softmax == "adaptive":
        if num_tokens < 2:
            raise CharlmError(f"--softmax adaptive needs at least 2 tokens (the vocabulary has {num_tokens})")
        if not config.softmax_cutoffs:
            config.softmax_cutoffs = default_cutoffs(num_tokens)
        why = check_cutoffs(config.softmax_cutoffs, num_tokens)
        if why:
            raise CharlmError(why)
    if not config.hidden:
        config.hidden = WIDTH[config.softmax] if bfloat16 else min(WIDTH[config.softmax], FLOAT32_WIDTH)
    if config.embedding_size < 0:
        config.embedding_size = EMBEDDING[config.softmax]
    return config
