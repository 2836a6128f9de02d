"""Training the mirror model (``mirror train``): teacher forcing, the masked loss and the run.

Each training step is one compiled call (``tf.function`` with XLA, one program per padded width,
widths rounded up to :data:`~charlm.mirror.data.WIDTH_STEP`).  The defaults (96 decoder units,
batch 64, Adam 0.003) learned fastest of those tried in a 600-second run on a 2-core CPU
(README, "Mirroring words").

The run stands on the language model's machinery, so the two commands behave alike:

* ``--time-limit`` is a :class:`~charlm.training.budget.Budget`: it counts the whole run, from the
  moment the command started and across ``--resume`` (the seconds trained are kept in the
  checkpoint), keeps a reserve for the final save, and a run that used its limit refuses to resume;
* the run folder is held by :func:`charlm.run.folder.writing` (one writer, a used folder refused,
  nothing left behind by a new run that wrote nothing);
* SIGINT/SIGTERM are recorded by :class:`~charlm.run.signals.StopSignals`: the run saves and stops;
* ``metrics.jsonl``, TensorBoard and the log lines are the :class:`~charlm.run.reporting.Reporter`'s.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from charlm.data.vocab import Vocabulary
from charlm.errors import CharlmError
from charlm.mirror.config import MirrorConfig
from charlm.mirror.data import LETTERS, LineSource, mirror_targets
from charlm.mirror.folder import read_mirror_config, restore, write_mirror_config
from charlm.mirror.model import MirrorNet
from charlm.run import checkpoint as ckpt
from charlm.run import folder as run_folder
from charlm.run.reporting import Reporter, log_to_stderr as _log
from charlm.run.signals import StopSignals
from charlm.training.budget import Budget, stop_reason
from charlm.training.optim import Adam

SCALARS = ("loss", "token_accuracy", "grad_norm", "steps_per_sec")     # TensorBoard's train/<name>


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
        self._resumed = False
        self._setup_data(text, resume)
        self._setup_model()
        self._setup_checkpointing(resume)
        # autograph=False: the loops are explicit tf.while_loops; XLA unless CHARLM_XLA=off
        from charlm.runtime import xla_allowed

        self._step_fn = tf.function(self._train_step, jit_compile=xla_allowed(), reduce_retracing=True, autograph=False)
        self._widths = set()                  # padded widths compiled so far (one XLA program each)
        self._signals = StopSignals()         # entered by run(): SIGINT/SIGTERM end it after a save
        self.report = Reporter(self.run_dir, log)
        self.budget = None

    def _setup_data(self, text: str, resume: bool):
        """The training lines: the corpus's words but the held-out ones, in the run's vocabulary."""
        words, _ = _words_split(text, self.cfg.heldout)
        line = " ".join(words)
        if resume:
            vocab = read_mirror_config(self.run_dir)["vocabulary"]
        else:
            # the corpus's characters, and every lowercase letter: random-letter lines teach the
            # ones a small corpus lacks
            vocab = Vocabulary.from_text(line + " " + LETTERS)
        self.vocab = vocab
        self.source = LineSource(line, vocab, self.cfg)

    def _setup_model(self):
        tf.random.set_seed(self.cfg.seed)
        self.net = MirrorNet(self.cfg, self.vocab.size, seed=self.cfg.seed)
        self.variables = list(self.net.trainable_variables)
        self.optimizer = Adam(self.variables)

    def _setup_checkpointing(self, resume: bool):
        """Weights, Adam slots and step, and the seconds trained (for a time limit that counts
        resumed sessions too); restored when resumed, else the new run's ``config.json`` written."""
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")
        self.checkpoint = tf.train.Checkpoint(model=self.net, optimizer=self.optimizer, seconds=self.seconds)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.run_dir / ckpt.CKPT_DIR), max_to_keep=3)
        if resume:
            self._restore()
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_mirror_config(self.run_dir, self.cfg, self.vocab)

    def _restore(self):
        path = self.manager.latest_checkpoint
        if path is None:
            raise CharlmError(f"--resume: {self.run_dir} has no checkpoint to resume from")
        checkpoint = self.checkpoint
        try:
            saved = [name for name, _ in tf.train.list_variables(path)]
        except Exception:  # noqa: BLE001 - restore names the damage
            saved = None
        if saved is not None and not any(name.startswith("seconds/") for name in saved):
            # a run saved before the time it trained was kept: count from zero
            checkpoint = tf.train.Checkpoint(model=self.net, optimizer=self.optimizer)
        restore(checkpoint, path, "--resume: cannot restore", consumed=True)
        self._resumed = True                  # said by run(), once it knows the run has time left

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

    def save(self):
        if self.budget is not None:
            self.seconds.assign(self.budget.used())
        ckpt.save(self.manager, self.run_dir, self.step)

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self, steps: int | None = None, time_limit: float | None = None,
            started: float | None = None) -> MirrorResult:
        """Train to ``steps`` or until the run has used ``time_limit`` seconds (earlier sessions
        included), counting this session from ``started`` (a ``time.perf_counter()``; default: now)."""
        cfg = self.cfg
        total = cfg.steps if steps is None else steps
        time_limit = cfg.time_limit if time_limit is None else time_limit
        budget = self.budget = Budget(total, time_limit, used=float(self.seconds.numpy()), started=started)
        budget.record("validation", 0.0)       # a mirror run does not validate: its end is the save
        budget.refuse_if_spent(self.run_dir)
        if self._resumed:
            self.log(f"resumed {self.run_dir} at step {self.step}")
        result = MirrorResult(self.run_dir, self.step, 0.0)
        self.report.open()
        start = time.perf_counter()
        self.log(f"training {self.net.num_parameters():,} parameters on {self.source.starts.size:,} words, "
                 f"steps {self.step}..{total}, run {self.run_dir}")
        try:
            with self._signals:                # SIGINT/SIGTERM: the loop saves and stops
                self._loop(total, budget, result)
        finally:
            self.report.close()
        result.step, result.seconds = self.step, time.perf_counter() - start
        return result

    def _loop(self, total: int, budget: Budget, result: MirrorResult):
        """One step at a time until ``total``, the budget's end or a signal; reports and saves."""
        cfg = self.cfg
        window, window_start = [], time.perf_counter()
        while self.step < total:
            loss, accuracy, norm = self._one_step(budget)
            window.append((loss, accuracy, norm))
            step = self.step
            stop = stop_reason(budget, step, self._signals.received)
            ending = step >= total or stop is not None
            if step % cfg.log_every == 0 or ending:
                record = self._record(step, window, time.perf_counter() - window_start, budget)
                result.history.append(record)
                result.loss, result.token_accuracy = record["loss"], record["token_accuracy"]
                window, window_start = [], time.perf_counter()
            if ending or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                began = time.perf_counter()
                self.save()
                budget.record("save", time.perf_counter() - began)
            if stop is not None:
                result.stopped, message = stop
                self.log(message)
                break

    def _one_step(self, budget: Budget):
        """One compiled training step on the next batch: ``(loss, token accuracy, gradient norm)``."""
        began = time.perf_counter()
        src, lengths = self.source.batch(self.step)
        tgt_in, tgt_out = teacher_arrays(src, lengths, self.source.space, self.net.go, self.net.eos)
        loss, accuracy, norm = (float(x) for x in self._step_fn(src, lengths, tgt_in, tgt_out))
        if src.shape[1] not in self._widths:    # a new width compiled a new program: not a measure
            self._widths.add(src.shape[1])
            budget.recompiled()
        budget.record_block(1, time.perf_counter() - began)
        if not math.isfinite(loss):
            raise CharlmError(f"the loss became non-finite at step {self.step}; stopped without saving, "
                              f"the last good checkpoint in {self.run_dir} is kept (try a lower --learning-rate)")
        return loss, accuracy, norm

    def _record(self, step: int, window: list, seconds: float, budget: Budget) -> dict:
        """The periodic record of the steps in ``window`` (taking ``seconds``), reported and returned."""
        mean = np.mean(window, axis=0)
        record = {"step": step, "loss": float(mean[0]), "token_accuracy": float(mean[1]),
                  "grad_norm": float(mean[2]), "steps_per_sec": len(window) / max(seconds, 1e-9),
                  "time": round(budget.used(), 3)}      # the run's seconds, start-up and earlier sessions included
        self.report.report(record, {f"train/{name}": record[name] for name in SCALARS},
                           f"step {step:>6}  loss {record['loss']:.4f}  token accuracy "
                           f"{record['token_accuracy']:.4f}  {record['steps_per_sec']:.1f} steps/s")
        return record


def train(corpus: str | None = None, checkpoint_dir=None, resume: bool = False, text: str | None = None,
          log=_log, threads: int | None = 1, started: float | None = None, **overrides) -> MirrorResult:
    """Train a mirror model (``mirror train``); ``overrides`` are :class:`MirrorConfig` fields.

    A time limit counts the whole run from ``started`` (a ``time.perf_counter()``; default: this
    call), earlier sessions of a resumed run included.
    """
    from charlm.data.corpora import load_corpus
    from charlm.runtime import set_threads

    started = time.perf_counter() if started is None else started
    config = _config(corpus, resume, checkpoint_dir, overrides)
    if resume:
        run_dir = Path(checkpoint_dir)
    else:
        run_dir = Path(checkpoint_dir) if checkpoint_dir else ckpt.default_run_dir("mirror", "lstm")
        run_folder.check_new_folder(run_dir)
    set_threads(threads or 0)
    if text is None:
        text = load_corpus(config.corpus)
        if not resume and Path(config.corpus).is_file():
            config.corpus = str(Path(config.corpus).resolve())
    with run_folder.writing(run_dir, new=not resume):       # one writer per run folder
        trainer = MirrorTrainer(config, text, run_dir, resume=resume, log=log)
        return trainer.run(started=started)


def _config(corpus, resume: bool, checkpoint_dir, overrides: dict) -> MirrorConfig:
    """A new run's settings from the flags; a resumed run's from its ``config.json``, where only the
    steps and the time limit may change."""
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
    else:
        config = MirrorConfig(**overrides)
        if corpus is not None:
            config.corpus = str(corpus)
    if steps is not None:
        config.steps = steps
    if time_limit is not None:
        config.time_limit = time_limit
    return config.validate()


# the Python API's name (``charlm.train_mirror``)
train_mirror = train
