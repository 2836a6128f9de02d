"""ud730 problem 3: a sequence-to-sequence LSTM that mirrors every word of a line.

``the quick brown fox`` -> ``eht kciuq nworb xof``.  The network reads the whole line and writes
the whole line, one character at a time; nothing reverses words by rule and nothing splits the
line into words before the network (except :func:`pieces`, which cuts a line longer than the model
was trained for at spaces: mirroring is per word, so that is exact).

The model (Sutskever et al. 2014, with Luong et al. 2015's attention):

* an embedding and a bidirectional encoder of two charlm :class:`~charlm.nn.cells.LSTMCell`\\ s (the
  single-matmul cell), ``hidden // 2`` units each way; padded positions never update the state
  and are masked out of the attention, so padding changes neither the loss nor the output;
* a decoder ``LSTMCell`` started from the encoder's final states, reading the previous character
  and the previous attentional vector ("input feeding": the decoder knows where it looked last,
  which is what lets it walk backwards through a word), then "general" attention
  ``score(h, m) = h . W m`` over the encoder states and ``tanh(W_c [context; h])``;
* a softmax over the vocabulary plus an end-of-line token.

Training pairs are lines of 1 to ``max_words`` consecutive words of the corpus (at most
``max_chars`` characters), mixed with lines of random letter strings so the model learns to copy
letters by position rather than remember words.  The corpus's last ``heldout`` fraction is never
trained on.  Batch ``k`` is drawn from ``numpy.random.default_rng([seed, k])``, so the data stream
needs no state of its own: a resumed run (weights, Adam slots, step from the checkpoint) continues
exactly.  Batches are drawn BLOCK at a time and a block's lines sorted by length before they are
cut into batches, so a batch's rows have similar lengths and its padded width stays small.

Training steps and greedy decoding are compiled (``tf.function``; training with XLA, one program
per padded width, widths rounded up to :data:`WIDTH_STEP`).  The defaults (96 decoder units,
batch 64, Adam 0.003) learned fastest of those tried in a 600-second run on a 2-core CPU
(README, "Mirroring words").
"""
from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from charlm.run import checkpoint as ckpt
from charlm.errors import CharlmError
from charlm.nn.cells import LSTMCell
from charlm.nn.init import initial_matrix
from charlm.training.optim import Adam
from charlm.run.reporting import log_to_stderr as _log
from charlm.training.trainer import Trainer, refuse_a_used_folder
from charlm.data.vocab import Vocabulary

TASK = "mirror"
FORMAT_VERSION = 1
WIDTH_STEP = 16          # padded widths are multiples of this (one compiled program each)
BLOCK = 32               # training batches drawn, sorted by length and shuffled together
DECODE_BATCH = 256       # lines per greedy-decoding call
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class MirrorConfig:
    # the model
    embedding_size: int = 32
    hidden: int = 96               # decoder units; the encoder has hidden // 2 each way
    attention: str = "general"     # "general" (h . W m) or "dot" (h . m)
    # the data
    max_chars: int = 80            # longest training line (``run`` cuts longer ones at spaces)
    max_words: int = 10
    random_fraction: float = 0.25  # lines of random letter strings among the training lines
    heldout: float = 0.05          # the corpus's last fraction of words, never trained on
    # the training
    corpus: str = "text8"
    batch_size: int = 64
    steps: int = 200_000
    learning_rate: float = 0.003
    clip: float = 5.0
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 1000
    time_limit: float = 0.0

    def validate(self):
        checks = [(self.embedding_size >= 1, "--embedding-size must be at least 1"),
                  (self.hidden >= 2 and self.hidden % 2 == 0, "--hidden must be even and at least 2"),
                  (self.attention in ("general", "dot"), "--attention must be general or dot"),
                  (self.max_chars >= 2, "--max-chars must be at least 2"),
                  (self.max_words >= 1, "--max-words must be at least 1"),
                  (0.0 <= self.random_fraction <= 1.0, "--random-fraction must be in [0, 1]"),
                  (0.0 <= self.heldout < 1.0, "--heldout must be in [0, 1)"),
                  (self.batch_size >= 1, "--batch-size must be at least 1"),
                  (self.steps >= 1, "--steps must be at least 1"),
                  (self.learning_rate > 0, "--learning-rate must be positive"),
                  (self.clip >= 0, "--clip must not be negative"),
                  (self.log_every >= 1, "--log-every must be at least 1"),
                  (self.checkpoint_every >= 0, "--checkpoint-every must not be negative"),
                  (self.time_limit >= 0, "--time-limit must not be negative")]
        for ok, message in checks:
            if not ok:
                raise CharlmError(message)
        return self


def mirror_words(line: str) -> str:
    """The expected output, by rule: used to make training targets and to score, never to answer."""
    return " ".join(word[::-1] for word in line.split(" "))


# -- the data -----------------------------------------------------------------------------------------
class LineSource:
    """Training lines cut from a text's words, and random-letter lines, as padded id arrays."""

    def __init__(self, text: str, vocab: Vocabulary, config: MirrorConfig):
        words = text.split()
        if not words:
            raise CharlmError("the corpus has no words to make training lines from")
        self.vocab, self.cfg = vocab, config
        self.space = vocab.chars.index(" ")
        self.ids = vocab.encode(" ".join(words), what="corpus").astype(np.int32)
        lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
        self.ends = np.cumsum(lengths + 1) - 1          # one past each word's last character
        self.starts = self.ends - lengths
        fits = lengths <= config.max_chars
        if not fits.any():
            raise CharlmError(f"every word of the corpus is longer than {config.max_chars} characters")
        self.fitting = np.nonzero(fits)[0]               # words a line may start with
        self._block = None
        self.letters = np.array([i for i, c in enumerate(vocab.chars) if not c.isspace()], dtype=np.int32)

    def batch(self, step: int):
        """Batch ``step``: ``(source ids [B, W], lengths [B])``, W a multiple of WIDTH_STEP.

        Batches come in blocks of BLOCK drawn from ``default_rng([seed, block])``; a block's lines
        are sorted by length and cut into its batches (taken in a shuffled order), so a batch's
        rows have similar lengths and the compiled loops run few padded steps.
        """
        block, k = divmod(step, BLOCK)
        if self._block is None or self._block[0] != block:
            self._block = (block, self._make_block(block))
        return self._block[1][k]

    def _make_block(self, block: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, block])
        n = cfg.batch_size * BLOCK
        words = rng.integers(1, cfg.max_words + 1, size=n)
        first = self.fitting[rng.integers(self.fitting.size, size=n)]
        count = np.minimum(words, len(self.starts) - first)
        while True:      # drop words from the end until the line fits (a fitting first word does)
            long = self.ends[first + count - 1] - self.starts[first] > cfg.max_chars
            if not long.any():
                break
            count[long] -= 1
        random_rows = rng.random(n) < cfg.random_fraction
        rows = [self._random_line(rng, words[k]) if random_rows[k]
                else self.ids[self.starts[first[k]]:self.ends[first[k] + count[k] - 1]] for k in range(n)]
        rows.sort(key=len)
        batches = [pad_rows(rows[i:i + cfg.batch_size]) for i in range(0, n, cfg.batch_size)]
        return [batches[i] for i in rng.permutation(BLOCK)]

    def _random_line(self, rng, n_words: int):
        sizes = rng.integers(1, min(12, self.cfg.max_chars) + 1, size=n_words)
        while sizes.sum() + sizes.size - 1 > self.cfg.max_chars:
            sizes = sizes[:-1]
        parts = []
        for size in sizes:
            parts += [self.letters[rng.integers(self.letters.size, size=size)], [self.space]]
        return np.concatenate(parts[:-1]).astype(np.int32)


def pad_rows(rows, width: int | None = None):
    """Rows of ids -> ``(ids [B, W], lengths [B])``, W rounded up to a multiple of WIDTH_STEP."""
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    longest = int(lengths.max(initial=0))
    width = width or max(WIDTH_STEP, -(-longest // WIDTH_STEP) * WIDTH_STEP)
    ids = np.zeros((len(rows), width), dtype=np.int32)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = r
    return ids, lengths


def mirror_targets(src: np.ndarray, lengths: np.ndarray, space: int) -> np.ndarray:
    """The mirrored lines of a padded batch (for training targets), vectorised over the batch."""
    b, w = src.shape
    pos = np.broadcast_to(np.arange(w), (b, w))
    inside = pos < lengths[:, None]
    gap = (src == space) | ~inside
    # a word runs from the position after the last gap before it to the position before the next
    last_gap = np.maximum.accumulate(np.where(gap, pos, -1), axis=1)
    next_gap = np.minimum.accumulate(np.where(gap, pos, w)[:, ::-1], axis=1)[:, ::-1]
    source = np.where(gap, pos, last_gap + next_gap - pos)
    return np.where(inside, np.take_along_axis(src, source, axis=1), 0).astype(np.int32)


# -- the model -----------------------------------------------------------------------------------------
class MirrorNet(tf.Module):
    """Bidirectional LSTM encoder, attentional LSTM decoder (tokens: the vocabulary, then GO/EOS)."""

    def __init__(self, config: MirrorConfig, vocab_size: int, seed: int = 0):
        super().__init__(name="mirror")
        rng = np.random.default_rng(seed)
        e, d = config.embedding_size, config.hidden
        half = d // 2
        self.cfg, self.vocab_size = config, vocab_size
        self.go = self.eos = vocab_size              # GO is read, EOS is written: one id each way
        self.embedding = tf.Variable(rng.uniform(-1, 1, (vocab_size + 1, e)), dtype=tf.float32, name="embedding")
        self.forward = _cell(rng, e, half, "encoder_forward")
        self.backward = _cell(rng, e, half, "encoder_backward")
        self.decoder = _cell(rng, e + d, d, "decoder")      # input: [character, attentional vector]
        self.attention_w = (tf.Variable(initial_matrix(rng, (d, d), "orthogonal"), dtype=tf.float32, name="attention_w")
                            if config.attention == "general" else None)
        self.combine_w = tf.Variable(initial_matrix(rng, (2 * d, d), "orthogonal"), dtype=tf.float32, name="combine_w")
        self.out_w = tf.Variable(initial_matrix(rng, (d, vocab_size + 1), "orthogonal"), dtype=tf.float32, name="out_w")
        self.out_b = tf.Variable(tf.zeros([vocab_size + 1]), name="out_b")

    def num_parameters(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.trainable_variables))

    # -- encoder ------------------------------------------------------------------------------------
    def encode(self, src, lengths):
        """``src`` [B, W] ids, ``lengths`` [B] -> memory [B, W, D], keys [B, W, D], score bias [B, W], state."""
        width = _size(src, 1)
        backwards_src = tf.reverse_sequence(src, lengths, seq_axis=1, batch_axis=0)
        xf = self._inputs(self.forward, src)
        xb = self._inputs(self.backward, backwards_src)
        batch = tf.shape(src)[0]
        zero = tf.zeros([batch, self.forward.hidden])
        wf, wb = self.forward.recurrent_kernel, self.backward.recurrent_kernel

        def body(t, hf, cf, hb, cb, outf, outb):
            valid = (t < lengths)[:, None]
            hf2, (_, cf2) = self.forward.step(xf[t], tf.matmul(hf, wf), (hf, cf))
            hb2, (_, cb2) = self.backward.step(xb[t], tf.matmul(hb, wb), (hb, cb))
            # a padded position leaves the state as it was: the final state is the last real one's
            hf, cf = tf.where(valid, hf2, hf), tf.where(valid, cf2, cf)
            hb, cb = tf.where(valid, hb2, hb), tf.where(valid, cb2, cb)
            return t + 1, hf, cf, hb, cb, outf.write(t, hf), outb.write(t, hb)

        arrays = [tf.TensorArray(tf.float32, size=width) for _ in range(2)]
        _, hf, cf, hb, cb, outf, outb = tf.while_loop(
            lambda t, *_: t < width, body, (0, zero, zero, zero, zero, *arrays), maximum_iterations=width)
        outf = tf.transpose(outf.stack(), [1, 0, 2])
        outb = tf.reverse_sequence(tf.transpose(outb.stack(), [1, 0, 2]), lengths, seq_axis=1, batch_axis=0)
        memory = tf.concat([outf, outb], axis=-1)
        keys = memory if self.attention_w is None else tf.einsum("bwd,ed->bwe", memory, self.attention_w)
        bias = tf.where(tf.sequence_mask(lengths, width), 0.0, -1e9)
        return memory, keys, bias, (tf.concat([hf, hb], -1), tf.concat([cf, cb], -1))

    def _inputs(self, cell, tokens):
        """``x @ kernel[:in] + bias`` for every position, time-major: one row lookup."""
        table = tf.matmul(self.embedding, cell.input_kernel) + cell.bias
        return tf.gather(table, tf.transpose(tokens))

    # -- decoder ------------------------------------------------------------------------------------
    def _decoder_step(self, xw, att, h, c, memory, keys, bias):
        """One decoder step from its input projection ``xw``: new ``(attentional vector, h, c)``."""
        # the decoder kernel's rows after the character's: [attentional vector, h]
        h, (_, c) = self.decoder.step(xw, tf.matmul(tf.concat([att, h], -1), self.decoder.kernel[self.cfg.embedding_size:]),
                                      (h, c))
        scores = tf.squeeze(tf.matmul(keys, h[:, :, None]), -1) + bias          # [B, W]
        weights = tf.nn.softmax(scores)
        context = tf.squeeze(tf.matmul(weights[:, None, :], memory), 1)          # [B, D]
        return tf.tanh(tf.matmul(tf.concat([context, h], -1), self.combine_w)), h, c

    def logits(self, src, lengths, tgt_in):
        """Teacher-forced logits ``[B, T, V + 1]`` for decoder inputs ``tgt_in`` [B, T]."""
        memory, keys, bias, (h, c) = self.encode(src, lengths)
        steps = _size(tgt_in, 1)
        xw = self._decoder_inputs(tf.transpose(tgt_in))

        def body(t, att, h, c, out):
            att, h, c = self._decoder_step(xw[t], att, h, c, memory, keys, bias)
            return t + 1, att, h, c, out.write(t, att)

        att = tf.zeros_like(h)
        _, _, _, _, out = tf.while_loop(lambda t, *_: t < steps, body,
                                        (0, att, h, c, tf.TensorArray(tf.float32, size=steps)),
                                        maximum_iterations=steps)
        return tf.einsum("tbd,dv->btv", out.stack(), self.out_w) + self.out_b

    def _decoder_inputs(self, tokens):
        cell = self.decoder
        table = tf.matmul(self.embedding, cell.kernel[:self.cfg.embedding_size]) + cell.bias
        return tf.gather(table, tokens)

    def greedy(self, src, lengths, max_steps):
        """Greedy decoding: output ids ``[B, max_steps]`` (EOS where a line ended)."""
        memory, keys, bias, (h, c) = self.encode(src, lengths)
        batch = tf.shape(src)[0]
        table = tf.matmul(self.embedding, self.decoder.kernel[:self.cfg.embedding_size]) + self.decoder.bias

        def body(t, token, done, att, h, c, out):
            att, h, c = self._decoder_step(tf.gather(table, token), att, h, c, memory, keys, bias)
            token = tf.argmax(tf.matmul(att, self.out_w) + self.out_b, axis=-1, output_type=tf.int32)
            token = tf.where(done, self.eos, token)
            return t + 1, token, done | (token == self.eos), att, h, c, out.write(t, token)

        start = (0, tf.fill([batch], self.go), tf.zeros([batch], tf.bool), tf.zeros_like(h), h, c,
                 tf.TensorArray(tf.int32, size=max_steps))
        *_, out = tf.while_loop(lambda t, _, done, *__: (t < max_steps) & ~tf.reduce_all(done), body, start)
        return tf.transpose(out.stack())


def _size(x, axis: int):
    """A dimension, static when known (XLA wants loop bounds it can see)."""
    return x.shape[axis] if x.shape[axis] is not None else tf.shape(x)[axis]


def _cell(rng, input_size: int, hidden: int, name: str) -> LSTMCell:
    cell = LSTMCell(input_size, hidden, initial_matrix(rng, (input_size + hidden, 4 * hidden), "orthogonal",
                                                 recurrent_rows=hidden), name=name)
    cell.bias.assign(np.concatenate([np.zeros(hidden), np.ones(hidden), np.zeros(2 * hidden)]))  # forget gate 1
    return cell



# -- training ------------------------------------------------------------------------------------------
def teacher_arrays(src: np.ndarray, lengths: np.ndarray, space: int, go: int, eos: int):
    """Decoder inputs and targets ``[B, W + 1]``: GO + mirrored line, and mirrored line + EOS."""
    target = mirror_targets(src, lengths, space)
    rows = np.arange(len(src))
    tgt_in = np.concatenate([np.full((len(src), 1), go, np.int32), target], axis=1)
    tgt_out = np.concatenate([target, np.zeros((len(src), 1), np.int32)], axis=1)
    tgt_out[rows, lengths] = eos
    return tgt_in, tgt_out


def masked_loss(net: MirrorNet, src, lengths, tgt_in, tgt_out):
    """Mean cross-entropy over the real target positions (the line and its EOS), and their accuracy."""
    logits = net.logits(src, lengths, tgt_in)
    mask = tf.sequence_mask(lengths + 1, tf.shape(tgt_out)[1], dtype=tf.float32)
    nats = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tgt_out, logits=logits)
    hits = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == tgt_out, tf.float32)
    count = tf.reduce_sum(mask)
    return tf.reduce_sum(nats * mask) / count, tf.reduce_sum(hits * mask) / count


@dataclass
class MirrorResult:
    run_dir: Path
    step: int
    seconds: float
    loss: float = float("nan")
    token_accuracy: float = float("nan")
    stopped: str = "finished"          # finished | time-limit | interrupted
    history: list = field(default_factory=list)


def _words_split(text: str, heldout: float):
    """The corpus's words: ``(training words, held-out words)``, the held-out ones from its end."""
    words = text.split()
    if not words:
        raise CharlmError("the corpus has no words to make training lines from")
    keep = len(words) - int(round(len(words) * heldout))
    if keep < 1:
        raise CharlmError(f"the corpus has {len(words)} word(s), all taken by --heldout {heldout}")
    return words[:keep], words[keep:]


class MirrorTrainer:
    """One training run in one run folder (new, or resumed exactly from its newest checkpoint)."""

    def __init__(self, config: MirrorConfig, text: str, run_dir, resume: bool = False, log=_log):
        self.cfg, self.run_dir, self.log = config, Path(run_dir), log
        words, _ = _words_split(text, config.heldout)
        line = " ".join(words)
        if resume:
            vocab = read_mirror_config(self.run_dir)["vocabulary"]
        else:
            # the corpus's characters, and every lowercase letter: random-letter lines teach the
            # ones a small corpus lacks
            vocab = Vocabulary.from_text(line + " " + LETTERS)
        self.vocab = vocab
        self.source = LineSource(line, vocab, config)
        tf.random.set_seed(config.seed)
        self.net = MirrorNet(config, vocab.size, seed=config.seed)
        self.variables = list(self.net.trainable_variables)
        self.optimizer = Adam(self.variables)
        self.checkpoint = tf.train.Checkpoint(model=self.net, optimizer=self.optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.run_dir / ckpt.CKPT_DIR), max_to_keep=3)
        if resume:
            path = self.manager.latest_checkpoint
            if path is None:
                raise CharlmError(f"--resume: {self.run_dir} has no checkpoint to resume from")
            _restore(self.checkpoint, path, "--resume: cannot restore", consumed=True)
            log(f"resumed {self.run_dir} at step {self.step}")
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_mirror_config(self.run_dir, config, vocab)
        # autograph=False: the loops are explicit tf.while_loops
        self._step_fn = tf.function(self._train_step, jit_compile=True, reduce_retracing=True, autograph=False)
        self._stop_signal = None

    @property
    def step(self) -> int:
        return int(self.optimizer.step.numpy())

    def _train_step(self, src, lengths, tgt_in, tgt_out):
        with tf.GradientTape() as tape:
            loss, accuracy = masked_loss(self.net, src, lengths, tgt_in, tgt_out)
        grads = tape.gradient(loss, self.variables)
        norm = tf.linalg.global_norm(grads)
        if self.cfg.clip > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.cfg.clip, use_norm=norm)
        self.optimizer.apply(grads, self.variables, self.cfg.learning_rate)
        return loss, accuracy, norm

    def run(self, steps: int | None = None, time_limit: float | None = None) -> MirrorResult:
        cfg = self.cfg
        total = cfg.steps if steps is None else steps
        time_limit = cfg.time_limit if time_limit is None else time_limit
        result = MirrorResult(self.run_dir, self.step, 0.0)
        writer = tf.summary.create_file_writer(str(self.run_dir / ckpt.LOG_DIR))
        # the language-model trainer's handlers: they set self._stop_signal, the loop saves and stops
        previous = Trainer._install_signals(self)
        start = time.perf_counter()
        window, window_start = [], time.perf_counter()
        self.log(f"training {self.net.num_parameters():,} parameters on {self.source.starts.size:,} words, "
                 f"steps {self.step}..{total}, run {self.run_dir}")
        try:
            while self.step < total:
                src, lengths = self.source.batch(self.step)
                tgt_in, tgt_out = teacher_arrays(src, lengths, self.source.space, self.net.go, self.net.eos)
                loss, accuracy, norm = (float(x) for x in self._step_fn(src, lengths, tgt_in, tgt_out))
                if not math.isfinite(loss):
                    raise CharlmError(f"the loss became non-finite at step {self.step}; stopped without saving, "
                                      f"the last good checkpoint in {self.run_dir} is kept (try a lower --learning-rate)")
                window.append((loss, accuracy, norm))
                step = self.step
                out_of_time = bool(time_limit) and time.perf_counter() - start >= time_limit
                ending = step >= total or out_of_time or self._stop_signal is not None
                if step % cfg.log_every == 0 or ending:
                    elapsed = time.perf_counter() - window_start
                    mean = np.mean(window, axis=0)
                    record = {"step": step, "loss": float(mean[0]), "token_accuracy": float(mean[1]),
                              "grad_norm": float(mean[2]), "steps_per_sec": len(window) / max(elapsed, 1e-9),
                              "time": round(time.perf_counter() - start, 3)}
                    ckpt.append_metrics(self.run_dir, record)
                    with writer.as_default(step=step):
                        for name in ("loss", "token_accuracy", "grad_norm", "steps_per_sec"):
                            tf.summary.scalar(f"train/{name}", record[name])
                    self.log(f"step {step:>6}  loss {record['loss']:.4f}  token accuracy "
                             f"{record['token_accuracy']:.4f}  {record['steps_per_sec']:.1f} steps/s")
                    result.history.append(record)
                    result.loss, result.token_accuracy = record["loss"], record["token_accuracy"]
                    window, window_start = [], time.perf_counter()
                if ending or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                    self.manager.save(checkpoint_number=step)
                if out_of_time or self._stop_signal is not None:
                    result.stopped = "time-limit" if out_of_time else "interrupted"
                    self.log(f"time limit of {time_limit:g} s reached at step {step}; saved" if out_of_time else
                             f"interrupted (signal {self._stop_signal}) at step {step}; saved, continue with --resume")
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            writer.close()
        result.step, result.seconds = self.step, time.perf_counter() - start
        return result


def _restore(checkpoint, path: str, what: str, consumed: bool = False):
    try:
        status = checkpoint.restore(path)
        if consumed:
            status.assert_consumed()
        else:
            status.expect_partial()
            status.assert_existing_objects_matched()
    except Exception as e:  # noqa: BLE001 - a damaged file surfaces as many error types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CharlmError(f"{what} {path}: corrupt or incomplete checkpoint ({first[:200]})")


# -- the run folder ------------------------------------------------------------------------------------
def write_mirror_config(run_dir: Path, config: MirrorConfig, vocab: Vocabulary):
    data = {"format": FORMAT_VERSION, "task": TASK, "mirror": dataclasses.asdict(config), "vocab": vocab.to_dict()}
    ckpt.atomic_write_text(Path(run_dir) / ckpt.CONFIG_FILE, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_mirror_config(run_dir) -> dict:
    """``config.json`` of a mirror run: ``{"config": MirrorConfig, "vocabulary": Vocabulary, ...}``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CharlmError(f"checkpoint directory not found: {run_dir}" if not run_dir.exists()
                          else f"checkpoint path is not a directory: {run_dir}")
    path = run_dir / ckpt.CONFIG_FILE
    if not path.exists():
        raise CharlmError(f"{run_dir} is not a charlm run (no {ckpt.CONFIG_FILE}); train one with "
                          f"`python cli.py mirror train`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("task") != TASK:
            raise CharlmError(f"{run_dir} is a language-model run, not a mirror run; train one with "
                              f"`python cli.py mirror train`")
        data["config"] = MirrorConfig(**data["mirror"]).validate()
        data["vocabulary"] = Vocabulary.from_dict(data["vocab"])
    except CharlmError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise CharlmError(f"{path} is corrupt or from an incompatible version ({type(e).__name__}: {e})")
    return data


def train(corpus: str | None = None, checkpoint_dir=None, resume: bool = False, text: str | None = None,
          log=_log, threads: int | None = 1, **overrides) -> MirrorResult:
    """Train a mirror model (``mirror train``); ``overrides`` are :class:`MirrorConfig` fields."""
    from charlm.run.checkpoint import default_run_dir
    from charlm.data.corpora import load_corpus
    from charlm.runtime import set_threads

    steps, time_limit = overrides.pop("steps", None), overrides.pop("time_limit", None)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if resume:
        if checkpoint_dir is None:
            raise CharlmError("--resume needs --checkpoint-dir")
        config = read_mirror_config(checkpoint_dir)["config"]
        changed = [f"{k} {getattr(config, k)!r} -> {v!r}" for k, v in overrides.items() if getattr(config, k) != v]
        if changed:
            raise CharlmError(f"--resume: the run in {checkpoint_dir} was trained with a different setup "
                              f"({'; '.join(changed)}); drop those flags or train a new run")
        run_dir = Path(checkpoint_dir)
    else:
        config = MirrorConfig(**overrides)
        if corpus is not None:
            config.corpus = str(corpus)
        run_dir = Path(checkpoint_dir) if checkpoint_dir else default_run_dir("mirror", "lstm")
        if run_dir.exists() and not run_dir.is_dir():
            raise CharlmError(f"--checkpoint-dir {run_dir} is a file, not a directory")
        refuse_a_used_folder(run_dir, chief=True)
    if steps is not None:
        config.steps = steps
    if time_limit is not None:
        config.time_limit = time_limit
    config.validate()
    set_threads(threads or 0)
    if text is None:
        text = load_corpus(config.corpus)
        if not resume and Path(config.corpus).is_file():
            config.corpus = str(Path(config.corpus).resolve())
    trainer = MirrorTrainer(config, text, run_dir, resume=resume, log=log)
    return trainer.run()


# -- using a trained model -----------------------------------------------------------------------------
def pieces(line: str, max_chars: int) -> list[str]:
    """``line`` cut at spaces into pieces of at most ``max_chars`` characters (a longer word stays whole).

    Mirroring is per word, so mirroring the pieces and joining them with spaces mirrors the line.
    """
    if len(line) <= max_chars:
        return [line]
    out, current = [], None
    for word in line.split(" "):
        if current is not None and len(current) + 1 + len(word) <= max_chars:
            current += " " + word
        else:
            if current is not None:
                out.append(current)
            current = word
    out.append(current)
    return out


class Mirror:
    """A trained mirror model: :meth:`lines` mirrors lines with greedy decoding (compiled)."""

    def __init__(self, checkpoint):
        info = read_mirror_config(checkpoint)
        self.cfg, self.vocab = info["config"], info["vocabulary"]
        self.net = MirrorNet(self.cfg, self.vocab.size)
        path = ckpt.latest_checkpoint(checkpoint)
        _restore(tf.train.Checkpoint(model=self.net), path, "cannot load the weights in")
        self.checkpoint_path = path
        self._greedy = tf.function(self.net.greedy, reduce_retracing=True, autograph=False)

    def lines(self, lines: list[str], oov: str = "error") -> list[str]:
        """Each line mirrored (an empty line gives an empty line); long lines are cut at spaces."""
        jobs = []                       # (line number, piece ids)
        for n, line in enumerate(lines):
            if oov == "error":
                self.vocab.encode(line, what=f"line {n + 1}")     # names every unknown character
            for piece in pieces(line, self.cfg.max_chars):
                ids = self.vocab.encode(piece, oov=oov)
                jobs.append((n, ids.astype(np.int32)))
        outputs = [[] for _ in lines]
        order = sorted(range(len(jobs)), key=lambda j: len(jobs[j][1]))
        texts = [""] * len(jobs)
        for i in range(0, len(order), DECODE_BATCH):
            chunk = [j for j in order[i:i + DECODE_BATCH] if len(jobs[j][1])]
            if not chunk:
                continue
            src, lengths = pad_rows([jobs[j][1] for j in chunk])
            max_steps = int(lengths.max()) + 1 + max(8, int(lengths.max()) // 4)
            out = self._greedy(tf.constant(src), tf.constant(lengths), tf.constant(max_steps)).numpy()
            for j, row in zip(chunk, out):
                end = np.flatnonzero(row == self.net.eos)
                texts[j] = self.vocab.decode(row[:end[0] if end.size else len(row)])
        for (n, _), text in zip(jobs, texts):
            outputs[n].append(text)
        return [" ".join(parts) for parts in outputs]

    def evaluate(self, sources: list[str]) -> dict:
        return accuracy(sources, self.lines(sources))


def accuracy(sources: list[str], outputs: list[str]) -> dict:
    """Per-character, per-word and exact-line accuracy of ``outputs`` against the mirrored ``sources``."""
    chars = chars_ok = words = words_ok = lines_ok = 0
    for source, output in zip(sources, outputs):
        expected = mirror_words(source)
        chars += len(expected)
        chars_ok += sum(a == b for a, b in zip(expected, output))
        want, got = expected.split(" "), output.split(" ")
        words += len(want)
        words_ok += sum(a == b for a, b in zip(want, got))
        lines_ok += expected == output
    n = len(sources)
    return {"lines": n, "words": words, "characters": chars,
            "char_accuracy": chars_ok / max(chars, 1), "word_accuracy": words_ok / max(words, 1),
            "line_accuracy": lines_ok / max(n, 1)}


def cut_lines(text: str, count: int | None = None, seed: int = 0, max_words: int = 10, max_chars: int = 80) -> list[str]:
    """Consecutive lines of 1..max_words words (at most max_chars characters) from ``text``'s words."""
    words = text.split()
    rng = np.random.default_rng(seed)
    lines, i = [], 0
    while i < len(words) and (count is None or len(lines) < count):
        n = int(rng.integers(1, max_words + 1))
        line = " ".join(words[i:i + n])
        while len(line) > max_chars and n > 1:
            n -= 1
            line = " ".join(words[i:i + n])
        if len(line) <= max_chars:
            lines.append(line)
        i += n
    return lines


def random_letter_lines(count: int, seed: int = 0, max_words: int = 6, max_letters: int = 9,
                        letters: str = LETTERS) -> list[str]:
    """Lines of 1..max_words random strings of 1..max_letters letters (words nobody wrote)."""
    rng = np.random.default_rng(seed)
    pick = np.array(list(letters))
    return [" ".join("".join(rng.choice(pick, size=rng.integers(1, max_letters + 1)))
                     for _ in range(rng.integers(1, max_words + 1))) for _ in range(count)]


def mirror_text(text, checkpoint, oov: str = "error"):
    """Mirror every word of ``text`` (one string, or a list of lines) with the model in ``checkpoint``.

    ``charlm.mirror_text("the quick brown fox", "checkpoints/mirror")`` -> ``"eht kciuq nworb xof"``.
    A string is mirrored line by line (newlines kept).
    """
    model = Mirror(checkpoint)
    if isinstance(text, str):
        return "\n".join(model.lines(text.split("\n"), oov=oov))
    return model.lines(list(text), oov=oov)


def evaluate(checkpoint, text: str, lines: int | None = 2000, seed: int = 0, oov: str = "error") -> dict:
    """``mirror eval``: accuracy on lines cut from ``text`` (1..max_words words each)."""
    model = Mirror(checkpoint)
    text = " ".join(text.split())          # lines are made of words: other whitespace is not text
    text = model.vocab.decode(model.vocab.encode(text, oov=oov, what="evaluation text"))
    sources = cut_lines(text, lines, seed, model.cfg.max_words, model.cfg.max_chars)
    if not sources:
        raise CharlmError("the evaluation text has no words")
    return model.evaluate(sources)


# the Python API's names (``charlm.train_mirror`` etc.; ``charlm.mirror`` is this module)
train_mirror, evaluate_mirror = train, evaluate
