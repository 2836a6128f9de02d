"""Generating text from a model.

The prime is read through the model in one call; then a compiled XLA while-loop picks a token,
feeds it back, and repeats, for all ``num_samples`` sequences at once (they are rows of one
batch, so several cost little more than one).  Picking draws one stateless uniform number per
row, seeded by ``(seed, step)``, through the softmax's cumulative distribution: the same seed gives
the same text.

Temperature 0 means greedy (argmax) by design; ``top_k`` keeps only the k likeliest tokens.

Bigram models emit two characters per token (a sparse bigram model's single-character tokens,
one).  An odd prime leaves one character unread (in the sparse layout: a prime whose cut ends in a
single character): the first pick is then restricted to the tokens that start with it, and only
what follows it is emitted.  An odd length keeps only the first character of the last pair.  The
prime followed by exactly ``length`` generated characters is returned.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import tensorflow as tf

from charlm.errors import CharlmError
from charlm.run.resources import check_sampling
from charlm.data.vocab import Tokenizer

# Tokens per compiled sampling call at most (its output buffer: one compile for every --length).
LOOP_STEPS = 4096


class Sampler:
    def __init__(self, model, tokenizer: Tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self._prime_fn = tf.function(self._read_prime, reduce_retracing=True, autograph=False)
        self._loop_fn = tf.function(functools.partial(sample_loop, model), jit_compile=True,
                                    reduce_retracing=True, autograph=False)

    def _read_prime(self, tokens, state):
        logits, state = self.model.unroll(tokens, state)
        return logits[-1], state

    def generate(self, prime: str = "", length: int = 100, temperature: float = 1.0, top_k: int = 0,
                 seed: int | None = None, num_samples: int = 1, oov: str = "error") -> list[str]:
        if length < 0:
            raise CharlmError(f"--length must not be negative (got {length})")
        if temperature < 0:
            raise CharlmError(f"--temperature must be positive, or 0 for greedy (got {temperature})")
        if top_k < 0:
            raise CharlmError(f"--top-k must be 0 (off) or positive (got {top_k})")
        if num_samples < 1:
            raise CharlmError(f"--num-samples must be at least 1 (got {num_samples})")
        tok = self.tokenizer
        model = self.model
        check_sampling(tok.num_tokens, model.config.hidden, model.config.layers, num_samples,
                       tok.sample_steps(length, opened=True))
        if length == 0:
            return [prime] * num_samples
        ids = tok.vocab.encode(prime, oov=oov, what="prime")
        prime_text = tok.vocab.decode(ids)
        tokens, leftover = tok.prime_tokens(ids)
        state = model.zero_state(num_samples)
        if tokens.size:
            batch = np.repeat(tokens.astype(np.int32)[:, None], num_samples, axis=1)
            logits, state = self._prime_fn(tf.constant(batch), state)
        else:
            logits = tf.tile(model.out_b[None, :], [num_samples, 1])
        first_mask = np.ones(tok.num_tokens, dtype=bool)
        if leftover.size:           # bigram with an odd prime: finish the open pair first
            first_mask = tok.starting_with(int(leftover[0]))
            steps = tok.sample_steps(length, opened=True)
        else:
            steps = tok.sample_steps(length)
        if seed is None:
            seed = int.from_bytes(os.urandom(7), "little")
        # The compiled loop writes into a buffer of LOOP_STEPS tokens (a shape XLA must know), so
        # long texts take several calls and one compile serves every --length; the token index,
        # which seeds each pick, runs on across calls, so the text does not depend on the cut.
        temperature = tf.constant(float(temperature), logits.dtype)
        seed = tf.constant(seed, tf.int64)
        mask = tf.constant(first_mask)
        pieces, done = [], 0
        while done < steps:
            size = min(LOOP_STEPS, steps - done)
            out, logits, state = self._loop_fn(logits, state, tf.constant(size, tf.int32), temperature,
                                               int(top_k), seed, mask, tf.constant(done, tf.int32),
                                               capacity=LOOP_STEPS)
            pieces.append(out.numpy()[:size])
            done += size
        out = np.concatenate(pieces)
        texts = []
        for row in out.T:
            chars = tok.chars(row)
            if leftover.size:
                chars = chars[1:]    # the open pair's first character is the prime's last
            texts.append(prime_text + tok.vocab.decode(chars[:length]))
        return texts


def sample_loop(model, logits, state, steps, temperature, top_k, seed, first_mask, start=0, capacity=None):
    """``steps`` tokens per row, each fed back in: ``([steps or capacity, batch] int32, logits, state)``.

    ``first_mask`` ``[num_tokens]`` limits the pick of token 0 (an odd bigram prime's open pair);
    ``start`` is the index of this call's first token in the whole text.  ``capacity`` (at least
    ``steps``) fixes the output's length for XLA; the rows past ``steps`` are zeros.
    """
    weights = model.step_weights()
    out = tf.TensorArray(tf.int32, size=capacity or steps)

    def body(i, logits, state, out):
        allowed = tf.logical_or(start + i > 0, first_mask)[None, :]
        logits = tf.where(allowed, logits, tf.constant(-np.inf, logits.dtype))
        token = pick(logits, temperature, top_k, tf.stack([seed, tf.cast(start + i, tf.int64)]))
        logits, state = model.step(weights, token, state)
        return i + 1, logits, state, out.write(i, token)

    _, logits, state, out = tf.while_loop(lambda i, *_: i < steps, body, (0, logits, state, out))
    return out.stack(), logits, state


def pick(logits, temperature, top_k, seed):
    """One token per row: greedy at temperature 0, else a draw from the softmax at ``1/T``."""
    def keep_top_k():
        k = tf.minimum(top_k, tf.shape(logits)[-1])
        kth = tf.gather(tf.sort(logits, direction="DESCENDING"), k - 1, axis=-1)[:, None]
        return tf.where(logits < kth, tf.constant(-np.inf, logits.dtype), logits)

    if isinstance(top_k, int):          # known when tracing: no conditional inside the loop
        logits = keep_top_k() if top_k > 0 else logits
    else:
        logits = tf.cond(top_k > 0, keep_top_k, lambda: logits)
    # Inverse-CDF draw: one uniform number per row (not one per token, as Gumbel-max needs).
    probs = tf.nn.softmax(logits / tf.maximum(temperature, 1e-30), axis=-1)
    cdf = tf.cumsum(probs, axis=-1)
    u = tf.random.stateless_uniform(tf.shape(logits)[:1], seed=seed, dtype=logits.dtype) * cdf[:, -1]
    drawn = tf.minimum(tf.reduce_sum(tf.cast(cdf <= u[:, None], tf.int32), axis=-1), tf.shape(logits)[-1] - 1)
    # an index past the last allowed token can only come from rounding: step back to an allowed one
    drawn = tf.where(tf.gather(probs, drawn, batch_dims=1) > 0, drawn,
                     tf.argmax(logits, axis=-1, output_type=tf.int32))
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.where(temperature > 0, drawn, greedy)


def sample(checkpoint, prime: str = "", length: int = 100, temperature: float = 1.0, top_k: int = 0,
           seed: int | None = None, num_samples: int = 1, oov: str = "error") -> list[str]:
    """Load the run in ``checkpoint`` and generate ``num_samples`` texts."""
    from charlm.run.checkpoint import load_model

    model, tokenizer, _ = load_model(checkpoint)
    return Sampler(model, tokenizer).generate(prime, length, temperature, top_k, seed, num_samples, oov)
