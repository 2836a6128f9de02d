"""Scoring a text: nats, bits per character and perplexity, with the LSTM state carried through.

Every character is scored.  The first token is predicted from the zero state (whose top output
is 0, so its logits are the output bias); each later token from the state after all the text
before it.  A bigram model scores pairs; with all V**2 pairs as tokens a final odd character is
scored by its marginal, ``log sum_b p(c, b)`` (the sparse layout cuts it as a single-character
token).  Per-character figures divide the total by the number of characters (with byte
fallback, the characters of the text, not the byte ids it is read as), so char and bigram models,
and models with and without byte tokens, compare directly.

A short text (or ``streams=1``) runs as one state through the whole text: one compiled XLA
while-loop per chunk.  A long one is scored as side-by-side streams (:mod:`charlm.fast.streams`,
for cells that run feature-major), each after a warm-up on the text before it.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from charlm.fast import streams as side_by_side
from charlm.data.prepared import release
from charlm.data.vocab import Tokenizer

TEXT_TO_SCORE = "text file to score"     # how errors name eval's --text-file

CHUNK_TOKENS = 16384
LOGITS_BUDGET = 1 << 25   # numbers in one chunk's logits at most (128 MB of float32)


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


@dataclass
class DynamicScore(Score):
    """Dynamic evaluation's figure (:mod:`charlm.use.dynamic`), the static one of the same model
    and text beside it, and every token's nats in text order."""

    static: Score | None = None
    positions: np.ndarray | None = None
    settings: dict = field(default_factory=dict)

    def as_dict(self, tokenizer: Tokenizer | None = None) -> dict:
        d = super().as_dict(tokenizer)
        d.update({f"static_{k}": v for k, v in self.static.as_dict(tokenizer).items() if k != "characters"})
        d["gain_nats_per_char"] = self.static.nats_per_char - self.nats_per_char
        d["dynamic"] = dict(self.settings)
        return d


class Scorer:
    """Compiled scoring for one model (built once, reused, e.g. for validation while training).

    ``streams``: ``None`` picks :func:`charlm.fast.streams.default_streams`, 1 keeps one state through the text.
    ``compute``: the streamed loop's matmul dtype (default: the model's ``compute_dtype``).
    """

    def __init__(self, model, tokenizer: Tokenizer, chunk_tokens: int = CHUNK_TOKENS,
                 streams: int | None = None, compute=None):
        self.model = model
        self.tokenizer = tokenizer
        self.chunk = chunk_tokens
        self.streams = streams
        self.compute = compute or model.compute_dtype
        self._chunk_fn = tf.function(self._score_chunk, jit_compile=True, reduce_retracing=True,
                                     autograph=False)
        self._streams_fn = tf.function(functools.partial(side_by_side.score, model.cells, model.dtype, model.softmax),
                                       reduce_retracing=True, autograph=False)

    def _score_chunk(self, tokens, n, state, prev_logits):
        """Nats of ``tokens[:n]`` (padded to a fixed length) given the logits before them."""
        model = self.model
        logits, new_state = model.unroll(tokens[:, None], state, loop="inference")
        logits = logits[:, 0, :]
        # predictions for token t come from the logits after token t - 1
        before = tf.concat([prev_logits[None, :], logits[:-1]], axis=0)
        nats = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens, logits=before)
        mask = tf.range(tf.shape(tokens)[0]) < n
        total = tf.reduce_sum(tf.where(mask, tf.cast(nats, tf.float64), 0.0))
        return total, new_state, logits[n - 1]

    def score_ids(self, ids: np.ndarray) -> Score:
        """Score character ids (already encoded with the model's vocabulary)."""
        return self.score_tokens(self.tokenizer.tokens(ids), self.tokenizer.leftover(ids),
                                 self.tokenizer.vocab.characters(ids))

    def score_tokens(self, tokens: np.ndarray, leftover: np.ndarray, characters: int) -> Score:
        """Score a text's tokens (and the character ids they left over) of ``characters``
        characters.  ``tokens`` may be memory-mapped: it is read a chunk at a time."""
        streams = self.streams or side_by_side.default_streams(tokens.size)
        if streams > 1 and tokens.size > 1 and all(cell.streams for cell in self.model.cells):
            total, logits = self._streamed(tokens, streams)
        else:
            total, logits = self._one_state(tokens)
        token_nats = total
        if leftover.size:
            log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float64))
            total += float(open_pair_nats(log_probs, int(leftover[0]), self.tokenizer.vocab.size))
        return Score(characters=int(characters), tokens=int(tokens.size), nats=total, token_nats=token_nats)

    def _one_state(self, tokens):
        """``(nats, logits after the last token)`` with one state through all of ``tokens``."""
        model = self.model
        state = model.zero_state(1)
        logits = model.initial_logits()   # the zero state's prediction
        total = 0.0
        # a chunk's logits are [chunk, num_tokens]: keep them to LOGITS_BUDGET numbers (a
        # large sparse-bigram vocabulary would otherwise need gigabytes)
        room = 1 << max(0, (LOGITS_BUDGET // max(1, self.tokenizer.num_tokens)).bit_length() - 1)
        chunk = min(self.chunk, max(1, _next_pow2(tokens.size)), room)
        for start in range(0, tokens.size, chunk):
            piece = np.asarray(tokens[start:start + chunk], dtype=np.int32)
            release(tokens)
            n = piece.size
            if n < chunk:
                piece = np.pad(piece, (0, chunk - n))
            nats, state, logits = self._chunk_fn(tf.constant(piece), tf.constant(n, tf.int32),
                                                 state, logits)
            total += float(nats)
        return total, logits

    def _streamed(self, tokens, streams: int):
        """``(nats, logits after the last token)`` with ``streams`` pieces side by side."""
        model = self.model
        weights = side_by_side.stream_weights(model, self.compute)
        state = side_by_side.zero_state(model, streams)
        total = tf.constant(0.0, tf.float64)
        step = side_by_side.STREAM_STEPS
        for start in range(0, side_by_side.grid_steps(tokens.size, streams), step):
            ids, valid, scored = side_by_side.grid(tokens, streams, start, start + step)
            if start % (step * 256) == 0:
                release(tokens)                 # a memory-mapped text: bounded resident pages
            nats, state = self._streams_fn(weights, tf.constant(ids), tf.constant(valid),
                                           tf.constant(scored), state)
            total += nats
        return float(total), side_by_side.last_logits(model, state)

    def score_text(self, text: str, oov: str | None = None, what: str = "evaluation text") -> Score:
        return self.score_ids(self.tokenizer.vocab.encode(text, oov=oov, what=what))


def open_pair_nats(log_probs, char, vocab_size: int):
    """Nats of a text's final single character under a model of all ``V**2`` pairs ``a * V + b``:
    its marginal ``-log sum_b p(char, b)`` from the log-probabilities after the text."""
    return -tf.reduce_logsumexp(tf.reshape(log_probs, [vocab_size, vocab_size])[char])


def _exp(x: float) -> float:
    """exp that says inf (or nan) instead of raising for a diverged model."""
    return math.exp(x) if x < 700 else float("inf") if x == x else x


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def score_dynamically(model, tokenizer: Tokenizer, ids: np.ndarray, stats_tokens: np.ndarray, compute=None,
                      streams: int | None = None, **settings) -> DynamicScore:
    """Dynamic evaluation of ``ids`` (:mod:`charlm.use.dynamic`) after its statistics pass on
    ``stats_tokens`` (training text), with the static figure beside it; ``settings``:
    ``learning_rate``, ``decay``, ``segment``, ``stats_count`` (tokens of the statistics pass)."""
    from charlm.use.dynamic import DynamicScorer

    count = settings.pop("stats_count", None)
    began = time.perf_counter()
    scorer = DynamicScorer(model, tokenizer, streams=streams, compute=compute, **settings)
    scorer.gather_statistics(stats_tokens, **({"count": count} if count else {}))
    leftover = tokenizer.leftover(ids)
    positions, done, *last = scorer.score_tokens(tokenizer.tokens(ids), last_logits=bool(leftover.size))
    token_nats = total = float(positions.sum())
    if leftover.size:
        total += float(open_pair_nats(tf.nn.log_softmax(tf.cast(last[0], tf.float64)), int(leftover[0]),
                                      tokenizer.vocab.size))
    done["seconds"] = round(time.perf_counter() - began, 3)
    began = time.perf_counter()
    static = Scorer(model, tokenizer, compute=compute).score_ids(ids)
    done["static_seconds"] = round(time.perf_counter() - began, 3)
    return DynamicScore(characters=tokenizer.vocab.characters(ids), tokens=int(positions.size), nats=total,
                        token_nats=token_nats,
                        static=static, positions=positions, settings=done)


def evaluate(checkpoint, text: str | None = None, split: str | None = None, oov: str | None = None,
             streams: int | None = None, precision: str = "auto", best: bool = False,
             text_file=None, dynamic: bool = False, **dynamic_settings) -> tuple[Score, Tokenizer]:
    """Score ``text``, the file ``text_file`` (streamed from disk: any size) or the run's
    ``valid``/``train`` split with the run in ``checkpoint`` (``best``: its ``best/`` checkpoint).

    ``streams`` (default: by length) and ``precision`` as for :class:`Scorer` and ``train``.
    ``dynamic``: dynamic evaluation (:func:`score_dynamically`, a :class:`DynamicScore`), its
    statistics pass on the run's training split; ``dynamic_settings`` as there (``None``: the default).
    """
    from charlm.run.checkpoint import load_model
    from charlm.errors import CharlmError
    from charlm.fast.precision import compute_dtype

    if streams is not None and streams < 1:
        raise CharlmError(f"--streams must be at least 1 (got {streams})")
    if text_file is not None:
        from charlm.data.corpora import text_file_path

        text_file = text_file_path(text_file, TEXT_TO_SCORE)
    model, tokenizer, info = load_model(checkpoint, best=best)
    compute = compute_dtype(precision, model.config.hidden)[0]
    scorer = Scorer(model, tokenizer, streams=streams, compute=compute)
    if dynamic:        # the adapted text is held in memory: its per-position scores are kept
        if text_file is not None:
            from charlm.data.corpora import read_text_file

            text = read_text_file(text_file, TEXT_TO_SCORE)
        ids = _text_ids(tokenizer, text, oov) if text is not None else _split_ids(info, tokenizer, split, oov)
        settings = {k: v for k, v in dynamic_settings.items() if v is not None}
        training, _ = _split_tokens(info, tokenizer, oov)
        return score_dynamically(model, tokenizer, ids, training, compute, streams, **settings), tokenizer
    if text_file is not None:
        from charlm.data import prepared

        with prepared.streamed_text(text_file, tokenizer, oov) as (text_ids, tokens, leftover):
            return scorer.score_tokens(tokens, leftover, tokenizer.vocab.characters(text_ids.ids)), tokenizer
    if text is not None:
        return scorer.score_ids(_text_ids(tokenizer, text, oov)), tokenizer
    if split == "valid":
        return scorer.score_ids(_split_ids(info, tokenizer, split, oov)), tokenizer
    tokens, leftover, characters = _split_tokens(info, tokenizer, oov, with_characters=True)
    return scorer.score_tokens(tokens, leftover, characters), tokenizer


def _text_ids(tokenizer: Tokenizer, text: str, oov: str) -> np.ndarray:
    from charlm.errors import CharlmError

    if not text:
        raise CharlmError("the evaluation text is empty")
    ids = tokenizer.vocab.encode(text, oov=oov, what="evaluation text")
    if ids.size == 0:
        raise CharlmError("no characters left to score after skipping unknown ones")
    return ids


def _prepared_split(info, tokenizer: Tokenizer, oov: str):
    """The run's corpus (prepared, memory-mapped), its validation ids and training ranges."""
    from charlm.data import prepared

    train_cfg = info["train_config"]
    corpus = prepared.prepare_for(train_cfg.corpus, tokenizer.vocab, train_cfg.separator,
                                  train_cfg.skip_bad_files, oov=oov)
    valid_ids, train_ranges = prepared.split(corpus, train_cfg.valid_size, train_cfg.valid_split)
    return corpus, valid_ids, train_ranges


def _split_ids(info, tokenizer: Tokenizer, split: str, oov: str) -> np.ndarray:
    """The ids of the run's ``split`` ("valid" or "train"), in memory."""
    from charlm.data.splits import join

    corpus, valid_ids, train_ranges = _prepared_split(info, tokenizer, oov)
    ids = valid_ids if split == "valid" else join(corpus.ids, train_ranges)
    _refuse_empty(ids.size, split, info)
    return ids


def _split_tokens(info, tokenizer: Tokenizer, oov: str, with_characters: bool = False):
    """The run's training split as tokens read through the memory map, and its leftover."""
    from charlm.data import prepared

    corpus, _, train_ranges = _prepared_split(info, tokenizer, oov)
    tokens, leftover = prepared.token_file(corpus, tokenizer, train_ranges)
    _refuse_empty(tokens.size, "train", info)
    if with_characters:
        return tokens, leftover, sum(tokenizer.vocab.characters(corpus.ids[a:b]) for a, b in train_ranges)
    return tokens, leftover


def _refuse_empty(size: int, split: str, info):
    from charlm.errors import CharlmError

    if size == 0:
        raise CharlmError(f"the run's {split} split is empty (valid size {info['train_config'].valid_size})")
