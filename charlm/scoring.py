"""Scoring a text: nats, bits per character and perplexity, with the LSTM state carried through.

Every character is scored.  The first token is predicted from the zero state (whose top output
is 0, so its logits are the output bias); each later token from the state after all the text
before it.  A bigram model scores pairs; with all V**2 pairs as tokens a final odd character is
scored by its marginal, ``log sum_b p(c, b)`` (the sparse layout cuts it as a single-character
token).  Per-character figures divide the total by the number of characters, so
char and bigram models compare directly.

The loop over the text is one compiled XLA while-loop per chunk, not a Python loop per character.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .vocab import Tokenizer

CHUNK_TOKENS = 16384


@dataclass
class Score:
    characters: int
    tokens: int
    nats: float                # total over every character
    token_nats: float          # total over whole tokens (bigram pairs), without a leftover char

    @property
    def nats_per_char(self) -> float:
        return self.nats / self.characters if self.characters else float("nan")

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)

    @property
    def perplexity(self) -> float:
        return _exp(self.nats_per_char)

    def as_dict(self, tokenizer: Tokenizer | None = None) -> dict:
        d = {"characters": self.characters, "nats_per_char": self.nats_per_char,
             "bits_per_char": self.bits_per_char, "perplexity": self.perplexity}
        if tokenizer is not None and tokenizer.kind != "char":
            d.update(tokens=self.tokens,
                     nats_per_token=self.token_nats / self.tokens if self.tokens else float("nan"),
                     perplexity_per_token=_exp(self.token_nats / self.tokens) if self.tokens else float("nan"))
        return d


class Scorer:
    """Compiled scoring for one model (built once, reused, e.g. for validation while training)."""

    def __init__(self, model, tokenizer: Tokenizer, chunk_tokens: int = CHUNK_TOKENS):
        self.model = model
        self.tokenizer = tokenizer
        self.chunk = chunk_tokens
        self._chunk_fn = tf.function(self._score_chunk, jit_compile=True, reduce_retracing=True,
                                     autograph=False)

    def _score_chunk(self, tokens, n, state, prev_logits):
        """Nats of ``tokens[:n]`` (padded to a fixed length) given the logits before them."""
        model = self.model
        logits, new_state = model.unroll(tokens[:, None], state, static=False)
        logits = logits[:, 0, :]
        # predictions for token t come from the logits after token t - 1
        before = tf.concat([prev_logits[None, :], logits[:-1]], axis=0)
        nats = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens, logits=before)
        mask = tf.range(tf.shape(tokens)[0]) < n
        total = tf.reduce_sum(tf.where(mask, tf.cast(nats, tf.float64), 0.0))
        return total, new_state, logits[n - 1]

    def score_ids(self, ids: np.ndarray) -> Score:
        """Score character ids (already encoded with the model's vocabulary)."""
        tokens = self.tokenizer.tokens(ids).astype(np.int32)
        leftover = self.tokenizer.leftover(ids)
        model = self.model
        state = model.zero_state(1)
        logits = tf.identity(model.out_b)   # the zero state's prediction
        total = 0.0
        chunk = min(self.chunk, max(1, _next_pow2(tokens.size)))
        for start in range(0, tokens.size, chunk):
            piece = tokens[start:start + chunk]
            n = piece.size
            if n < chunk:
                piece = np.pad(piece, (0, chunk - n))
            nats, state, logits = self._chunk_fn(tf.constant(piece), tf.constant(n, tf.int32),
                                                 state, logits)
            total += float(nats)
        token_nats = total
        if leftover.size:
            v = self.tokenizer.vocab.size
            c = int(leftover[0])
            lp = tf.nn.log_softmax(tf.cast(logits, tf.float64)).numpy()
            total += -float(np.logaddexp.reduce(lp[c * v:(c + 1) * v]))
        return Score(characters=int(ids.size), tokens=int(tokens.size), nats=total, token_nats=token_nats)

    def score_text(self, text: str, oov: str = "error", what: str = "evaluation text") -> Score:
        return self.score_ids(self.tokenizer.vocab.encode(text, oov=oov, what=what))


def _exp(x: float) -> float:
    """exp that says inf (or nan) instead of raising for a diverged model."""
    return math.exp(x) if x < 700 else float("inf") if x == x else x


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def evaluate(checkpoint, text: str | None = None, split: str | None = None,
             oov: str = "error") -> tuple[Score, Tokenizer]:
    """Score ``text`` (or the run's ``valid``/``train`` split) with the run in ``checkpoint``."""
    from .checkpoint import load_model
    from .errors import CharlmError

    model, tokenizer, info = load_model(checkpoint)
    scorer = Scorer(model, tokenizer)
    if text is None:
        from .corpora import load_corpus
        from .training import split_ids

        train_cfg = info["train_config"]
        corpus = load_corpus(train_cfg.corpus)
        valid_ids, train_ids = split_ids(tokenizer.vocab.encode(corpus, oov=oov, what="corpus"),
                                         train_cfg.valid_size)
        ids = valid_ids if split == "valid" else train_ids
        if ids.size == 0:
            raise CharlmError(f"the run's {split} split is empty (valid size {train_cfg.valid_size})")
        return scorer.score_ids(ids), tokenizer
    if not text:
        raise CharlmError("the evaluation text is empty")
    ids = tokenizer.vocab.encode(text, oov=oov, what="evaluation text")
    if ids.size == 0:
        raise CharlmError("no characters left to score after skipping unknown ones")
    return scorer.score_ids(ids), tokenizer
