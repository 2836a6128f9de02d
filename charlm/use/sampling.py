"""Generating text from a model.

The prime is read through the model (in pieces of ``LOOP_STEPS`` tokens, so a long prime file
costs no more memory than a short one); then a compiled XLA while-loop picks a token, feeds it
back, and repeats, for all ``num_samples`` sequences at once (they are rows of one batch, so
several cost little more than one).  Picking draws one stateless uniform number per row, seeded by
``(seed, step)``, through the cumulative distribution of what the filters leave: the same seed
gives the same text, however the loop is cut into calls.

The filters, in this order: ``temperature`` divides the logits (0 means greedy, argmax, by
design); ``top_k`` keeps the k likeliest tokens; ``top_p`` (nucleus sampling, Holtzman et al. 2019)
keeps the smallest set of the likeliest tokens whose probability adds up to at least p, measured
on the distribution the first two left.

:meth:`Sampler.stream` yields the text as it comes: the loop runs in calls of about
``CHUNK_SECONDS`` (the size follows the measured speed), so a reader sees text at once while each
call still runs hundreds of steps.  ``stop`` strings end a row after their first occurrence.

Bigram models emit two characters per token (a sparse bigram model's single-character tokens,
one).  An odd prime leaves one character unread (in the sparse layout: a prime whose cut ends in a
single character): the first pick is then restricted to the tokens that start with it, and only
what follows it is emitted.  An odd length keeps only the first character of the last pair.  The
prime followed by exactly ``length`` generated characters (or fewer, up to a stop) is returned.

A model with byte tokens (byte fallback, :mod:`charlm.data.vocab`) can write any character as its
UTF-8 bytes: the UTF-8 automaton (:meth:`Tokenizer.utf8_grammar`) masks each pick so that byte
tokens only make well-formed sequences (a lead byte, then its continuation bytes; no character
token inside one), and a row's unfinished sequence waits for its last byte before it is shown, so
neither a stream's piece nor the text ever holds half a character.  Such a model may need up to
four tokens a character; the loop stops once every row has its characters.
"""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from charlm.errors import CharlmError
from charlm.run.resources import check_sampling
from charlm.data.vocab import Tokenizer

# Tokens per compiled sampling call at most (its output buffer: one compile for every --length).
LOOP_STEPS = 4096
# A streamed call's target length in seconds (the brief: chunks of at most ~0.2 s); the first
# call runs FIRST_CHUNK tokens, as its time includes compiling and tells nothing about the speed.
CHUNK_SECONDS = 0.1
FIRST_CHUNK = 16


class Sampler:
    """Generation from one model.  ``dynamic``: a :class:`charlm.use.dynamic.DynamicScorer` (its
    statistics gathered) that reads each prime and adapts to it; the text is then generated with
    the adapted weights (held in memory only)."""

    def __init__(self, model, tokenizer: Tokenizer, dynamic=None):
        self.model = model
        self.tokenizer = tokenizer
        self.dynamic = dynamic
        self._prime_fn = tf.function(self._read_prime, reduce_retracing=True, autograph=False)
        self._loop_fn = tf.function(functools.partial(sample_loop, model), jit_compile=True,
                                    reduce_retracing=True, autograph=False)
        grammar = tokenizer.utf8_grammar()
        self._grammar = grammar
        self._grammar_tensors = None if grammar is None else tuple(tf.constant(t) for t in grammar)

    def _read_prime(self, tokens, state):
        logits, state = self.model.unroll(tokens, state, loop="inference")
        return logits[-1], state

    def generate(self, prime: str = "", length: int = 100, temperature: float = 1.0, top_k: int = 0,
                 seed: int | None = None, num_samples: int = 1, oov: str | None = None, top_p: float = 1.0,
                 stop: Sequence[str] = ()) -> list[str]:
        """``num_samples`` texts: the prime and ``length`` generated characters (or up to a stop)."""
        texts = None        # made from the first pieces: stream() checks the sizes before it yields
        for pieces in self.stream(prime, length, temperature, top_k, seed, num_samples, oov, top_p, stop,
                                  chunk_seconds=None):
            texts = list(pieces) if texts is None else [t + p for t, p in zip(texts, pieces)]
        return texts

    def stream(self, prime: str = "", length: int = 100, temperature: float = 1.0, top_k: int = 0,
               seed: int | None = None, num_samples: int = 1, oov: str | None = None, top_p: float = 1.0,
               stop: Sequence[str] = (), chunk_seconds: float | None = CHUNK_SECONDS) -> Iterator[list[str]]:
        """The texts of :meth:`generate` as they are made: lists of one new piece per sample, the
        first holding the prime.  ``chunk_seconds`` is how long one call may take (``None``: as
        long as ``LOOP_STEPS`` tokens take, the fastest)."""
        check_options(length, temperature, top_k, top_p, num_samples, stop)
        stop = tuple(stop)
        tok = self.tokenizer
        model = self.model
        check_sampling(tok.num_tokens, model.config.hidden, model.config.layers, num_samples,
                       tok.sample_steps(length, opened=True))
        ids = tok.vocab.encode(prime, oov=oov, what="prime")
        prime_text = tok.vocab.decode(ids)
        yield [prime_text] * num_samples
        if length == 0:
            return
        tokens, leftover = tok.prime_tokens(ids)
        weights = {}
        if self.dynamic is None:
            logits, state = self._read(tokens, num_samples)
        else:
            adapted, state, logits = self.dynamic.adapt(tokens)
            weights = dict(weights=adapted)
            state = [tuple(tf.tile(t, [num_samples, 1]) for t in layer) for layer in state]
            logits = tf.tile(logits, [num_samples, 1])
        first_mask = np.ones(tok.num_tokens, dtype=bool)
        if leftover.size:           # bigram with an odd prime: finish the open pair first
            first_mask = tok.starting_with(int(leftover[0]))
            steps = tok.sample_steps(length, opened=True)
        else:
            steps = tok.sample_steps(length)
        if self._grammar is not None:
            steps *= 4              # a character may take four byte tokens
            at = np.zeros(num_samples, dtype=np.int32)        # each row's automaton state
        if seed is None:
            seed = int.from_bytes(os.urandom(7), "little")
        # The compiled loop writes into a buffer of LOOP_STEPS tokens (a shape XLA must know), so
        # long texts take several calls and one compile serves every --length; the token index,
        # which seeds each pick, runs on across calls, so the text does not depend on the cut.
        temperature = tf.constant(float(temperature), logits.dtype)
        seed = tf.constant(seed, tf.int64)
        mask = tf.constant(first_mask)
        rows = [_Row(prime_text, length, stop, tok.vocab, skip=1 if leftover.size else 0) for _ in range(num_samples)]
        size = FIRST_CHUNK if chunk_seconds else LOOP_STEPS
        done = 0
        while done < steps and not all(r.ended for r in rows):
            size = min(size, LOOP_STEPS, steps - done)
            began = time.perf_counter()
            grammar = {}
            if self._grammar is not None:
                need = max(r.left + r.skip for r in rows if not r.ended)
                grammar = dict(grammar=(*self._grammar_tensors, tf.constant(at)), need=tf.constant(need, tf.int32))
            out, logits, state = self._loop_fn(logits, state, tf.constant(size, tf.int32), temperature,
                                               int(top_k), seed, mask, tf.constant(done, tf.int32),
                                               capacity=LOOP_STEPS, top_p=float(top_p), **grammar, **weights)
            out = out.numpy()[:size]
            if self._grammar is not None:
                follow = self._grammar[0]
                for column in out:
                    at = np.maximum(follow[at, column], 0)
            if chunk_seconds and done:      # the call's speed sets the next call's length
                per_token = (time.perf_counter() - began) / size
                size = max(FIRST_CHUNK, min(4 * size, int(chunk_seconds / max(per_token, 1e-9))))
            elif chunk_seconds:
                size = 4 * FIRST_CHUNK
            done += out.shape[0]
            yield [r.add(tok.chars(column)) for r, column in zip(rows, out.T)]

    def _read(self, tokens: np.ndarray, num_samples: int):
        """The logits after the prime's tokens and the state they leave, ``num_samples`` times."""
        model = self.model
        state = model.zero_state(num_samples)
        if not tokens.size:
            return tf.tile(model.initial_logits()[None, :], [num_samples, 1]), state
        for start in range(0, tokens.size, LOOP_STEPS):
            piece = tokens[start:start + LOOP_STEPS].astype(np.int32)
            logits, state = self._prime_fn(tf.constant(np.repeat(piece[:, None], num_samples, axis=1)), state)
        return logits, state


class _Row:
    """One sample's text as it grows: cut at ``length`` characters and after the first stop; an
    unfinished UTF-8 sequence of byte ids waits for the rest of its bytes."""

    def __init__(self, prime: str, length: int, stop: tuple, vocab, skip: int = 0):
        self.vocab = vocab
        self.pending = np.zeros(0, dtype=np.int64)
        self.left = length
        self.stop = stop
        self.skip = skip                  # an open pair's first character: the prime's last one
        self.longest = max((len(s) for s in stop), default=0)
        self.tail = prime[len(prime) - self.longest + 1:] if self.longest > 1 else ""
        self.ended = length == 0

    def add(self, ids) -> str:
        """The new text of the character (or byte) ids ``ids``."""
        if self.ended:
            return ""
        ids = np.concatenate([self.pending, np.asarray(ids, dtype=np.int64)])
        whole = self.vocab.complete(ids)
        self.pending = ids[whole:]
        text = self.vocab.decode(ids[:whole])
        piece = text[self.skip:self.skip + self.left]
        self.skip = max(0, self.skip - len(text))
        if self.stop:
            # a stop may begin in the text before this piece: search the last len - 1 characters too
            window = self.tail + piece
            ends = [window.find(s) + len(s) for s in self.stop if s in window]
            if ends:
                piece = piece[:min(ends) - len(self.tail)]
                self.ended = True
            self.tail = window[len(window) - self.longest + 1:] if self.longest > 1 else ""
        self.left -= len(piece)
        self.ended = self.ended or self.left <= 0
        return piece


def check_options(length, temperature, top_k, top_p, num_samples, stop):
    """One line for each value sampling cannot take."""
    if length < 0:
        raise CharlmError(f"--length must not be negative (got {length})")
    if not temperature >= 0:
        raise CharlmError(f"--temperature must be positive, or 0 for greedy (got {temperature})")
    if top_k < 0:
        raise CharlmError(f"--top-k must be 0 (off) or positive (got {top_k})")
    if not 0 < top_p <= 1:
        raise CharlmError(f"--top-p must be in (0, 1]; 1 keeps every token (got {top_p})")
    if num_samples < 1:
        raise CharlmError(f"--num-samples must be at least 1 (got {num_samples})")
    if isinstance(stop, str):
        raise CharlmError("stop must be a list of strings, not one string")
    if any(not s for s in stop):
        raise CharlmError("--stop must not be empty (an empty text would stop before the first character)")


def sample_loop(model, logits, state, steps, temperature, top_k, seed, first_mask, start=0, capacity=None,
                top_p=1.0, grammar=None, need=None, weights=None):
    """``steps`` tokens per row, each fed back in: ``([steps or capacity, batch] int32, logits, state)``.

    ``first_mask`` ``[num_tokens]`` limits the pick of token 0 (an odd bigram prime's open pair);
    ``start`` is the index of this call's first token in the whole text.  ``capacity`` (at least
    ``steps``) fixes the output's length for XLA; the rows past ``steps`` are zeros.
    ``grammar``: ``(follow, made, state)``, the UTF-8 automaton (:meth:`Tokenizer.utf8_grammar`) and
    each row's state in it, which then masks every pick; the loop ends early (the rest zeros) once
    every row has completed ``need`` characters.  ``weights``: what :meth:`CharLM.step_weights`
    gives (default: that, from the model's variables).
    """
    weights = model.step_weights() if weights is None else weights
    out = tf.TensorArray(tf.int32, size=capacity or steps)
    minus_inf = tf.constant(-np.inf, logits.dtype)
    # the picks run over the logits in the softmax's own column order (an adaptive softmax's:
    # by rank), the masks reordered once here; a picked column is mapped to its token
    order = model.softmax.sampling_order(weights["softmax"])
    if order is not None:
        logits, first_mask = tf.gather(logits, order, axis=-1), tf.gather(first_mask, order)
        if grammar is not None:
            grammar = (tf.gather(grammar[0], order, axis=-1), tf.gather(grammar[1], order, axis=-1), grammar[2])

    def body(i, logits, state, out, *automaton):
        allowed = tf.logical_or(start + i > 0, first_mask)[None, :]
        if grammar is not None:
            at, count = automaton
            allowed = tf.logical_and(allowed, tf.gather(grammar[0], at) >= 0)
        logits = tf.where(allowed, logits, minus_inf)
        column = pick(logits, temperature, top_k, tf.stack([seed, tf.cast(start + i, tf.int64)]), top_p)
        if grammar is not None:
            index = tf.stack([at, column], axis=1)
            automaton = (tf.gather_nd(grammar[0], index), count + tf.gather_nd(grammar[1], index))
        token = column if order is None else tf.gather(order, column)
        logits, state = model.step(weights, token, state, ranked=order is not None)
        return (i + 1, logits, state, out.write(i, token), *automaton)

    def more(i, *rest):
        if grammar is None:
            return i < steps
        return tf.logical_and(i < steps, tf.reduce_min(rest[-1]) < need)

    start_vars = (0, logits, state, out)
    if grammar is not None:
        start_vars += (tf.cast(grammar[2], tf.int32), tf.zeros_like(grammar[2], tf.int32))
    _, logits, state, out, *_ = tf.while_loop(more, body, start_vars)
    if order is not None:           # back to token order
        logits = tf.gather(logits, weights["softmax"]["token_rank"], axis=-1)
    return out.stack(), logits, state


def _known(value) -> bool:
    """A Python number (known when tracing: the filter it turns off is left out of the loop)."""
    return isinstance(value, (int, float))


def filtered_logits(logits, temperature, top_k, top_p=1.0):
    """``logits / T`` with the tokens outside the top k, then outside the nucleus p, at -inf."""
    minus_inf = tf.constant(-np.inf, logits.dtype)
    logits = logits / tf.maximum(temperature, 1e-30)

    def keep_top_k(logits):
        k = tf.minimum(top_k, tf.shape(logits)[-1])
        kth = tf.gather(tf.sort(logits, direction="DESCENDING"), k - 1, axis=-1)[:, None]
        return tf.where(logits < kth, minus_inf, logits)

    def keep_nucleus(logits):
        # the smallest set of likeliest tokens holding p: those whose likelier ones hold less than p
        probs = tf.nn.softmax(logits, axis=-1)
        ranked = tf.sort(probs, direction="DESCENDING")
        before = tf.cumsum(ranked, axis=-1, exclusive=True)
        count = tf.maximum(tf.reduce_sum(tf.cast(before < top_p, tf.int32), axis=-1), 1)
        least = tf.gather(ranked, count - 1, axis=-1, batch_dims=1)[:, None]
        return tf.where(probs < least, minus_inf, logits)

    if _known(top_k):
        logits = keep_top_k(logits) if top_k > 0 else logits
    else:
        logits = tf.cond(top_k > 0, lambda: keep_top_k(logits), lambda: logits)
    if _known(top_p):
        return keep_nucleus(logits) if top_p < 1 else logits
    return tf.cond(top_p < 1, lambda: keep_nucleus(logits), lambda: logits)


def pick(logits, temperature, top_k, seed, top_p=1.0):
    """One token per row: greedy at temperature 0, else a draw from what :func:`filtered_logits` leaves."""
    def draw():
        # Inverse-CDF draw: one uniform number per row (not one per token, as Gumbel-max needs).
        u = tf.random.stateless_uniform(tf.shape(logits)[:1], seed=seed, dtype=logits.dtype)
        return _inverse_cdf(filtered_logits(logits, temperature, top_k, top_p), u)

    if _known(temperature):
        return draw() if temperature > 0 else first_max(logits)
    return tf.cond(temperature > 0, draw, lambda: first_max(logits))


# The draw's search runs over blocks of this many tokens: the blocks' totals, then the tokens of
# the block drawn.  XLA on a CPU runs a cumulative sum or an argmax along one long row as a scalar
# loop (over 6,000 tokens: 52 and 19 us a step, most of a 512-unit model's sampling step), a sum
# or a max of short blocks side by side as vector code (benchmarks/softmax.py sample).
BLOCK = 64


def first_max(x):
    """The index of the largest entry of each row (the first of equal ones): a max and a
    comparison, which XLA on a CPU vectorises (its argmax it does not)."""
    n = tf.shape(x)[-1]
    top = tf.reduce_max(x, axis=-1, keepdims=True)
    return tf.reduce_min(tf.where(x >= top, tf.range(n)[None, :], n), axis=-1)


def _inverse_cdf(filtered, u):
    """The token of each row where ``u * total`` (``u`` uniform in [0, 1)) falls in the running
    sum of the weights ``exp(filtered - max)``: the block whose running total passes it, then the
    token in that block.  Rounding can only land the search on a weightless block or token (a
    filtered one, or the padding); it then takes the heaviest block, or the block's likeliest
    token, so no filtered token is ever drawn."""
    weights = tf.exp(filtered - tf.reduce_max(filtered, axis=-1, keepdims=True))
    rows, n = tf.shape(weights)[0], tf.shape(weights)[1]
    count = (n + BLOCK - 1) // BLOCK
    blocks = tf.reshape(tf.pad(weights, [[0, 0], [0, count * BLOCK - n]]), [rows, count, BLOCK])
    totals = tf.reduce_sum(blocks, axis=-1)
    ends = tf.cumsum(totals, axis=-1)
    target = u * ends[:, -1]
    block = tf.minimum(tf.reduce_sum(tf.cast(ends <= target[:, None], tf.int32), axis=-1), count - 1)
    block = tf.where(tf.gather(totals, block, batch_dims=1) > 0, block, first_max(totals))
    inside = tf.gather(blocks, block, batch_dims=1)
    left = target - (tf.gather(ends, block, batch_dims=1) - tf.gather(totals, block, batch_dims=1))
    token = tf.minimum(tf.reduce_sum(tf.cast(tf.cumsum(inside, axis=-1) <= left[:, None], tf.int32), axis=-1),
                       BLOCK - 1)
    token = tf.where(tf.gather(inside, token, batch_dims=1) > 0, token, first_max(inside))
    return block * BLOCK + token


def run_sampler(model, tokenizer: Tokenizer, info: dict, dynamic: bool = False, oov: str | None = None) -> Sampler:
    """A :class:`Sampler` for a loaded run (``info`` from :func:`charlm.run.checkpoint.load_model`);
    with ``dynamic``, one that adapts to each prime, its statistics pass on the run's training split."""
    if not dynamic:
        return Sampler(model, tokenizer)
    from charlm.use.dynamic import DynamicScorer
    from charlm.use.scoring import _split_tokens

    training, _ = _split_tokens(info, tokenizer, oov)
    return Sampler(model, tokenizer, dynamic=DynamicScorer(model, tokenizer).gather_statistics(training))


def sample(checkpoint, prime: str = "", length: int = 100, temperature: float | Sequence[float] = 1.0,
           top_k: int = 0, seed: int | None = None, num_samples: int = 1, oov: str | None = None,
           top_p: float = 1.0, stop: Sequence[str] = (), stream: bool = False, best: bool = False,
           dynamic: bool = False):
    """Load the run in ``checkpoint`` (its ``best/`` checkpoint with ``best``) and generate
    ``num_samples`` texts for each temperature (a list of them, temperature by temperature).

    ``stream=True`` returns a generator instead: for one temperature, lists of one new piece per
    sample (the first holds the prime), as :meth:`Sampler.stream` makes them.  ``dynamic``: adapt
    the model to the prime first (:meth:`charlm.use.dynamic.DynamicScorer.adapt`); the run folder
    is not changed.
    """
    from charlm.run.checkpoint import load_model

    temperatures = [temperature] if _known(temperature) else list(temperature)
    if not temperatures:
        raise CharlmError("give at least one temperature")
    if stream and len(temperatures) > 1:
        raise CharlmError("stream one temperature at a time")
    for t in temperatures:       # before the model is loaded: a bad value costs nothing
        check_options(length, t, top_k, top_p, num_samples, stop)
    if dynamic and not prime:
        raise CharlmError("sample --dynamic needs a prime to adapt to (--prime or --prime-file)")
    sampler = run_sampler(*load_model(checkpoint, best=best), dynamic=dynamic, oov=oov)
    options = dict(prime=prime, length=length, top_k=top_k, seed=seed, num_samples=num_samples, oov=oov,
                   top_p=top_p, stop=stop)
    if stream:
        return sampler.stream(temperature=temperatures[0], **options)
    return [text for t in temperatures for text in sampler.generate(temperature=t, **options)]
