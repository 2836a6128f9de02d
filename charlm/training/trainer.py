"""Training: the ud730 loop, compiled.

Each compiled call runs several SGD/Adam steps (an XLA while-loop over a block of batches the
numpy BatchGenerator made in one go), so Python and the TensorFlow runtime are visited once per
block, not once per step.  Calls end on the logging, sampling and checkpoint boundaries, so what
a user sees is step-exact: every ``log_every`` steps the average loss, the learning rate, the
minibatch perplexity and the validation perplexity; every ``sample_every`` steps five samples.

Everything a run needs to continue exactly lives in one ``tf.train.Checkpoint``: weights, optimizer
slots and step, the BatchGenerator's cursors, the carried LSTM state and the dropout random
generator.  ``SIGINT``/``SIGTERM`` end the current block, save, and return.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from charlm.run import checkpoint as ckpt
from charlm.data.batches import BatchGenerator
from charlm.training.budget import Budget, dropout_for_passes, stop_reason
from charlm.training.distribute import ReplicaSteps
from charlm.config import ModelConfig, TrainConfig, build_configs
from charlm.errors import CharlmError
from charlm.use.scoring import Scorer
from charlm.nn.cells import CELL_TYPES
from charlm.nn.model import CharLM
from charlm.nn import softmax
from charlm.training.optim import learning_rate, make_optimizer
from charlm.fast.precision import compute_dtype
from charlm.run.reporting import Reporter, log_to_stderr
from charlm.run import folder as run_folder
from charlm.run.folder import check_new_folder
from charlm.run.resources import MAX_STEPS_PER_CALL, check_training
from charlm.run.signals import StopSignals
from charlm.use.sampling import Sampler
from charlm.training import finetune
from charlm.data import prepared
from charlm.data.splits import join, split_ids
from charlm.data.vocab import Tokenizer, Vocabulary


def use_xla(model_cfg: ModelConfig, train_cfg: TrainConfig) -> bool:
    """Compile training blocks with XLA for short windows of small models.

    Measured here (2-core CPU): XLA doubles the ud730 model's speed (307 vs 151 steps/s), but
    compiling a long unrolled window takes close to a minute (50 steps at 512 units) and runs no
    faster than TensorFlow's own kernels once the matmuls dominate.  ``CHARLM_XLA=off``: never
    (``charlm.runtime.xla_allowed``).
    """
    from charlm.runtime import xla_allowed

    return train_cfg.unrollings * model_cfg.layers <= 20 and model_cfg.hidden <= 256 and xla_allowed()


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    seconds: float
    last_loss: float = float("nan")
    valid_perplexity: float | None = None
    stopped: str = "finished"          # finished | time-limit | interrupted
    history: list = field(default_factory=list)


_log = log_to_stderr
# a checkpoint's write speed until one is timed (a save writes the weights and optimizer slots)
SAVE_BYTES_PER_SEC = 100e6
VALIDATION_SHARE = 0.2      # of a time limit: a validation that takes more is left out of the run


class Trainer(ReplicaSteps):
    """One training run in one run folder (new, or resumed from its checkpoint).

    Its parts, in the order data flows: the corpus's ids split (``charlm.data.splits``) and cut
    into batches (``charlm.data.batches``); the model (``charlm.nn.model``) and its optimizer
    (``charlm.training.optim``); one compiled block of steps (here; the data-parallel one in
    ``charlm.training.distribute``); the loop that runs blocks inside the budget
    (``charlm.training.budget``), validates (``charlm.use.scoring``), reports
    (``charlm.run.reporting``) and saves (``charlm.run.checkpoint``).
    """

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, text: str, run_dir,
                 resume: bool = False, log=_log, extra_info: dict | None = None, distribution=None,
                 origin: finetune.Origin | None = None):
        self.model_cfg, self.cfg = model_cfg, train_cfg
        self.run_dir = Path(run_dir)
        self.log = log
        self.origin = origin            # --init-from: the run whose weights this one starts from
        self._setup_distribution(distribution)
        self._setup_data(text, resume)
        self._setup_model()
        self._setup_checkpointing(resume, extra_info)
        self._setup_outputs()

    def _setup_distribution(self, distribution):
        """tf.distribute: None trains on one device; see charlm.training.distribute."""
        self.distribution = distribution
        self.strategy = distribution.strategy if distribution else None
        self.is_chief = distribution.is_chief if distribution else True
        if distribution and self.cfg.batch_size % distribution.replicas:
            raise CharlmError(f"--batch-size {self.cfg.batch_size} is the global batch and must divide "
                              f"evenly among {distribution.replicas} replicas")

    def _setup_data(self, text, resume: bool):
        """The corpus's ids (in the run's own vocabulary when resumed), split, and cut into batches.
        ``text``: a string, or a prepared (memory-mapped) corpus, of which only the validation
        ids are read into memory."""
        model_cfg, train_cfg, distribution = self.model_cfg, self.cfg, self.distribution
        info = ckpt.read_run_config(self.run_dir) if resume else None
        if isinstance(text, str):
            vocab = info["vocabulary"] if resume else Vocabulary.from_text(text, train_cfg.min_char_count,
                                                                           train_cfg.byte_fallback)
            if self.origin is not None:
                vocab = finetune.joined_vocabulary(self.origin, vocab)
            ids = vocab.encode(text, what="corpus")
            characters = ids.size
            valid_ids, train_ids = split_ids(ids, train_cfg.valid_size, train_cfg.valid_split)
            tokenizer = info["tokenizer"] if resume else new_tokenizer(model_cfg, train_cfg, vocab, train_ids)
            train_chars = train_ids.size
        else:
            vocab, characters = text.vocab, text.characters
            valid_ids, train_ranges = prepared.split(text, train_cfg.valid_size, train_cfg.valid_split)
            train_chars = sum(b - a for a, b in train_ranges)
            tokenizer = info["tokenizer"] if resume else new_tokenizer(
                model_cfg, train_cfg, vocab, join(text.ids, train_ranges) if train_chars else text.ids[:0])
        self.vocab, self.tokenizer = vocab, tokenizer
        if train_chars == 0:
            raise CharlmError(f"the corpus has {characters} characters, all taken by --valid-size "
                              f"{train_cfg.valid_size}; nothing is left to train on")
        self.valid_ids = valid_ids
        unit = "characters" if model_cfg.kind == "char" else "character pairs"
        train_tokens = self.tokenizer.tokens(train_ids) if isinstance(text, str) else \
            prepared.token_file(text, tokenizer, train_ranges)[0]
        self.generator = BatchGenerator(train_tokens, train_cfg.batch_size, train_cfg.unrollings, unit=unit)
        self._setup_softmax(train_tokens, resume)
        # before anything large is built: does it fit?
        check_training(model_cfg, train_cfg, self.tokenizer.num_tokens, self.tokenizer.tokens(valid_ids).size,
                       distribution.replicas if distribution else 1)
        # characters per token, for the chars/s and bits/char figures (1 or 2; about 2 when sparse)
        self.chars_per_token = train_chars / max(train_tokens.size, 1) if self.tokenizer.sparse \
            else self.tokenizer.chars_per_token

    def _setup_softmax(self, train_tokens, resume: bool):
        """The output layer for the vocabulary (``--softmax auto`` decided, kept in ``config.json``)
        and, for an adaptive one, the tokens' ranking by their counts in the training text (a
        resumed run's comes from its checkpoint)."""
        num_tokens = self.tokenizer.num_tokens
        # hidden 0 takes a narrower width where the matmuls would run in float32
        bfloat16 = self._matmul_dtype(softmax.FLOAT32_WIDTH, False)[0] == tf.bfloat16
        softmax.resolve(self.model_cfg, num_tokens, bfloat16)
        self.token_rank = None
        if self.model_cfg.softmax == "adaptive" and not resume:
            counts = np.bincount(np.asarray(train_tokens), minlength=num_tokens)[:num_tokens]
            self.token_rank = softmax.rank_from_counts(counts)

    def _setup_model(self):
        """The model, its optimizer and the carried LSTM state, in the precision chosen."""
        model_cfg, train_cfg = self.model_cfg, self.cfg
        tf.random.set_seed(train_cfg.seed)
        self.xla = xla = use_xla(model_cfg, train_cfg)
        self._pad_to = 0                # the length XLA blocks are padded to (_loop sets it)
        self.compute_dtype, self._precision_why = self._matmul_dtype(model_cfg.hidden, xla)
        # under a strategy, weights, optimizer slots and the (global) carried state are mirrored
        with self.strategy.scope() if self.strategy else contextlib.nullcontext():
            self.model = CharLM(model_cfg, self.tokenizer.num_tokens, seed=train_cfg.seed,
                                compute_dtype=self.compute_dtype, token_rank=self.token_rank)
            if self.origin is not None:
                self._take_origin_weights()
            self.variables = list(self.model.trainable_variables)
            self.optimizer = make_optimizer(train_cfg, self.variables)
            b, h = train_cfg.batch_size, model_cfg.hidden
            self.carried = [(tf.Variable(tf.zeros([b, h]), trainable=False, name=f"h{i}"),
                             tf.Variable(tf.zeros([b, h]), trainable=False, name=f"c{i}"))
                            for i in range(model_cfg.layers)]

    def _matmul_dtype(self, hidden: int, xla: bool):
        """``(dtype, why)`` of the matmuls for a model of ``hidden`` units (:func:`compute_dtype`;
        the GRU and RNN paths multiply in float32)."""
        if not CELL_TYPES[self.model_cfg.cell].bfloat16:
            return tf.float32, f"{self.model_cfg.cell} cell"
        return compute_dtype(self.cfg.precision, hidden, xla)

    def _take_origin_weights(self):
        """``--init-from``: RUN's weights, token rows matched by :func:`finetune.row_sources`."""
        from charlm.run.checkpoint import load_model

        old_model, old_tokenizer, info = load_model(self.origin.run_dir)
        sources = finetune.row_sources(old_tokenizer, self.tokenizer)
        kept = finetune.take_weights(self.model, old_model, sources)
        self.origin_checkpoint = info["checkpoint_path"]
        self.log(f"--init-from {self.origin.run_dir}: weights of {Path(self.origin_checkpoint).name}; "
                 f"{kept:,} of {sources.size:,} tokens keep their rows, {sources.size - kept:,} new")

    def _setup_checkpointing(self, resume: bool, extra_info: dict | None):
        """What a checkpoint keeps beyond the model (cursors, dropout generator, seconds trained);
        restored from the newest checkpoint when resumed, else the new run's ``config.json`` written."""
        train_cfg = self.cfg
        self.cursors = tf.Variable(self.generator.cursors, dtype=tf.int64, trainable=False, name="cursors")
        self.rng = tf.random.Generator.from_seed(train_cfg.seed)
        # seconds the run has trained, for a time limit that counts resumed sessions too
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")
        self._parts = dict(model=self.model, optimizer=self.optimizer, cursors=self.cursors, rng=self.rng,
                           carried=[list(pair) for pair in self.carried])
        self.checkpoint = tf.train.Checkpoint(**self._parts, seconds=self.seconds)
        # Only the chief writes the run folder; other workers save into a scratch folder of their
        # own (all workers take part in a save, as tf.distribute asks) that is removed at the end.
        self._scratch = None if self.is_chief else tempfile.mkdtemp(prefix="charlm-worker-")
        save_dir = self.run_dir / ckpt.CKPT_DIR if self.is_chief else Path(self._scratch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(save_dir), max_to_keep=3)
        # --keep-best: the lowest validation loss's checkpoint, apart from the newest three
        self.best_manager = self.best_loss = None
        if train_cfg.keep_best and self.is_chief:
            self.best_manager = tf.train.CheckpointManager(self.checkpoint, str(self.run_dir / ckpt.BEST_DIR),
                                                           max_to_keep=1)
            self.best_loss = (ckpt.read_best(self.run_dir) or {}).get("valid_loss", math.inf) if resume else math.inf
        if resume:
            self._restore()
        elif self.is_chief:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.origin is not None:
                extra_info = {**(extra_info or {}), "init_from": self.origin.record(self.origin_checkpoint)}
            ckpt.write_run_config(self.run_dir, self.model_cfg, train_cfg, self.vocab, extra_info, self.tokenizer)

    def _setup_outputs(self):
        """Validation, samples, the compiled block of steps, signals and the reports."""
        # validation in streams of ~1000 tokens: a small, fixed share of the run's time
        self.scorer = Scorer(self.model, self.tokenizer, chunk_tokens=4096,
                             streams=max(1, min(64, self.tokenizer.tokens(self.valid_ids).size // 1000)))
        self.sampler = Sampler(self.model, self.tokenizer)
        self._train_fn = self._compile()
        if self.strategy is not None:
            self._agree_fn = tf.function(self._any_replica)
        self._signals = StopSignals()          # entered by run(): SIGINT/SIGTERM end it after a save
        self.report = Reporter(self.run_dir, self.log, self.is_chief, self.chars_per_token)

    @property
    def _stop_signal(self):
        """The SIGINT or SIGTERM that arrived while the run trained (None: none did)."""
        return self._signals.received

    def _compile(self):
        """The compiled block of steps (traced anew by each function this returns)."""
        # autograph=False: every loop in these functions is an explicit tf.while_loop or a Python
        # loop over known sizes, and converting the source cost ~1 s of each run's first call
        if self.strategy is None:
            return tf.function(self._train_block, jit_compile=self.xla, reduce_retracing=True, autograph=False)
        return tf.function(self._train_block_distributed, reduce_retracing=True, autograph=False)

    def _choose_dropout(self, budget: Budget):
        """``--auto-dropout``: once the speed is measured, the dropout for the passes over the
        training text the budget will make (kept in ``config.json``; a resumed run keeps it)."""
        ahead = budget.steps_ahead(self.step)
        if ahead is None:
            return
        passes = ahead * self.cfg.batch_size * self.cfg.unrollings / max(self.generator.tokens.size, 1)
        rate = dropout_for_passes(passes)
        self.log(f"--auto-dropout: the run will read its training text about {passes:.1f} times; dropout {rate:g}")
        self.cfg.auto_dropout = False
        if rate > 0:
            self.model_cfg.dropout = rate
            self._train_fn = self._compile()
            budget.recompiled()
        if self.is_chief:
            ckpt.update_run_config(self.run_dir, self.model_cfg, self.cfg)

    # -- the compiled block of steps ---------------------------------------------------------------
    def _one_step(self, batch, progress):
        state = [(h.read_value(), c.read_value()) for h, c in self.carried]
        seed = self.rng.make_seeds(1)[:, 0] if self.model_cfg.drops else None
        with tf.GradientTape() as tape:
            top, new_state = self.model.features(batch[:-1], state, seed)
            loss = self.model.softmax.loss(top, batch[1:])
        # embedding lookups give sparse gradients; the optimizers and clipping want dense ones
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, self.variables)]
        return (loss, *self._update(grads, new_state, progress))

    def _update(self, grads, new_state, progress):
        """Clip, step the optimizer and carry the state over: ``(gradient norm, learning rate)``."""
        cfg = self.cfg
        gnorm = tf.linalg.global_norm(grads)
        if cfg.clip > 0:
            grads, _ = tf.clip_by_global_norm(grads, cfg.clip, use_norm=gnorm)
        lr = learning_rate(cfg, self.optimizer.step, progress)
        self.optimizer.apply(grads, self.variables, lr)
        for (hv, cv), (h, c) in zip(self.carried, new_state):
            hv.assign(h)
            cv.assign(c)
        return gnorm, lr

    def _steps(self, batches, progress, step_fn, count=None):
        """``step_fn`` over a block of batches: per-step losses, gradient norms, learning rates.

        ``progress`` is ``[fraction of the budget used at the block's start, per step]``.
        ``count``: only the first ``count`` batches (the rest is padding; their entries stay 0).
        """
        n = tf.shape(batches)[0]
        arrays = tuple(tf.TensorArray(tf.float32, size=n, element_shape=[]) for _ in range(3))
        last = n if count is None else tf.minimum(count, n)

        def body(k, arrays):
            p = progress[0] + tf.cast(k, tf.float32) * progress[1]
            return k + 1, tuple(a.write(k, x) for a, x in zip(arrays, step_fn(batches[k], p)))

        k, arrays = tf.while_loop(lambda k, _: k < last, body, (0, arrays))
        # (a TensorArray of XLA has its full size: the entries of the padding are written as 0)
        _, arrays = tf.while_loop(lambda k, _: k < n, lambda k, arrays: (k + 1, tuple(a.write(k, 0.0) for a in arrays)),
                                  (k, arrays))
        return tuple(a.stack() for a in arrays)

    def _train_block(self, batches, progress, count):
        return self._steps(batches, progress, self._one_step, count)

    # -- checkpoints ---------------------------------------------------------------------------------
    def _restore(self):
        path = tf.train.latest_checkpoint(str(self.run_dir / ckpt.CKPT_DIR))
        if path is None:
            raise CharlmError(f"--resume: {self.run_dir} has no checkpoint to resume from")
        try:
            checkpoint = self.checkpoint
            if not any(name.startswith("seconds/") for name, _ in tf.train.list_variables(path)):
                # a run saved before the time it trained was kept: count from zero
                checkpoint = tf.train.Checkpoint(**self._parts)
            checkpoint.restore(path).assert_consumed()
        except Exception as e:  # noqa: BLE001 - a damaged file surfaces as many error types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CharlmError(f"--resume: cannot restore {path}: corrupt or incomplete checkpoint ({first[:200]})")
        self.generator.cursors = self.cursors.numpy().copy()
        self.log(f"resumed {self.run_dir} at step {self.step}")

    def save(self, manager=None):
        self.cursors.assign(self.generator.cursors)
        if getattr(self, "budget", None) is not None:
            self.seconds.assign(self.budget.used())
        if self.is_chief:
            ckpt.save(manager or self.manager, self.run_dir, self.step)
        else:                   # a worker's scratch copy: its failure is the collective's
            self.manager.save(checkpoint_number=self.step)

    def _keep_if_best(self, loss: float):
        """``--keep-best``: a validation loss lower than any before saves ``best/``."""
        if self.best_manager is None or not loss < self.best_loss:
            return
        self.save(self.best_manager)
        ckpt.write_best(self.run_dir, self.step, loss)
        self.best_loss = loss

    @property
    def step(self) -> int:
        return int(self.optimizer.step.numpy())

    # -- the loop ----------------------------------------------------------------------------------------
    def _validate(self):
        if self.valid_ids.size == 0:
            return None
        return self.scorer.score_ids(self.valid_ids)

    def _samples(self, count=5, length=80):
        rng = np.random.default_rng(self.cfg.seed + self.step)
        texts = []
        for _ in range(count):
            first = self.vocab.chars[rng.integers(self.vocab.num_chars)] if self.vocab.num_chars else ""
            texts += self.sampler.generate(prime=first, length=length - 1,
                                           seed=int(rng.integers(2**31)))
        return texts

    def run(self, steps: int | None = None, time_limit: float | None = None,
            started: float | None = None) -> TrainResult:
        """Train to ``steps`` or until the run has used ``time_limit`` seconds (earlier sessions
        included), counting this session from ``started`` (a ``time.perf_counter()``; default: now)."""
        cfg = self.cfg
        total = cfg.steps if steps is None else steps
        time_limit = cfg.time_limit if time_limit is None else time_limit
        budget = self.budget = Budget(total, time_limit, used=float(self.seconds.numpy()), started=started)
        budget.refuse_if_spent(self.run_dir)
        result = TrainResult(self.run_dir, self.step, 0.0)
        self.report.open()
        start = time.perf_counter()
        where = f" ({self.distribution.describe()})" if self.distribution else ""
        self.log(f"training {self.model.num_parameters():,} parameters on "
                 f"{self.generator.tokens.size:,} tokens, steps {self.step}..{total}, matmuls in "
                 f"{self.compute_dtype.name} ({self._precision_why}), run {self.run_dir}{where}")
        try:
            with self._signals:             # SIGINT/SIGTERM: the loop saves and stops
                self._loop(total, budget, result)
        finally:
            self.report.close()
            if self._scratch:
                shutil.rmtree(self._scratch, ignore_errors=True)
        result.step = self.step
        result.seconds = time.perf_counter() - start
        return result

    def _loop(self, total: int, budget: Budget, result: TrainResult):
        """Blocks of steps until ``total``, the budget's end or a signal; reports and saves."""
        cfg = self.cfg
        window = _Window(cfg.batch_size * cfg.unrollings * self.chars_per_token)
        self._pad_to = self._padded_length(total) if self.xla and self.strategy is None else 0
        first = True
        while self.step < total:
            losses, norms, lrs = self._block(self._block_length(total, budget), budget)
            if first and budget.time_limit:
                self._time_the_end(budget)
            first = False
            if cfg.auto_dropout:
                self._choose_dropout(budget)
            window.add(losses)
            step = self.step
            result.last_loss = float(losses[-1])
            self.report.progress(step, total, result.last_loss, window.chars_per_sec())
            stop = self._why_stop(step, total, budget)
            ending = step >= total or stop is not None
            if self.is_chief and cfg.log_every and (step % cfg.log_every == 0 or ending):
                record = self._record(step, window, losses, norms, lrs, budget)
                result.valid_perplexity = record.get("valid_perplexity", result.valid_perplexity)
                result.history.append(record)
                window = _Window(window.chars_per_step)
            if self.is_chief and cfg.sample_every and step % cfg.sample_every == 0:
                self.report.samples(step, self._samples())
            if ending or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                began = time.perf_counter()
                self.save()
                budget.record("save", time.perf_counter() - began)
            if stop is not None:
                result.stopped, message = stop
                self.log(message)
                break

    def _time_the_end(self, budget: Budget):
        """A time limit keeps back what the run's end takes: its last save, estimated from the
        bytes it writes until one is timed, and its last validation, timed here on an eighth of
        the validation text (twice: the first call compiles).  A model of a large vocabulary can
        take tens of seconds for each, which would otherwise run past the limit; a validation
        that would take more than VALIDATION_SHARE of the limit is left out of the run (``eval``
        scores the run afterwards)."""
        nbytes = sum(v.shape.num_elements() * v.dtype.size
                     for v in (*self.model.variables, *self.optimizer.variables))
        budget.record("save", max(budget.ending["save"], nbytes / SAVE_BYTES_PER_SEC))
        if not (self.is_chief and self.cfg.log_every and self.valid_ids.size):
            return
        part = self.valid_ids[:max(1, self.valid_ids.size // 8)]
        self.scorer.score_ids(part)
        began = time.perf_counter()
        self.scorer.score_ids(part)
        seconds = (time.perf_counter() - began) * self.valid_ids.size / part.size
        if seconds > VALIDATION_SHARE * budget.time_limit:
            self.log(f"validation would take about {seconds:.0f} s of the {budget.time_limit:g}-s --time-limit: "
                     f"the run leaves it out (score the run with `charlm eval`)")
            self.valid_ids = self.valid_ids[:0]
            seconds = 0.0
        budget.record("validation", seconds)

    def _intervals(self) -> list[int]:
        """The step intervals a block never crosses: logging, sampling and checkpoints (those set)."""
        cfg = self.cfg
        return [every for every in (cfg.log_every, cfg.sample_every, cfg.checkpoint_every) if every]

    def _block_length(self, total: int, budget: Budget) -> int:
        """Steps of the next block: up to the next logging, sampling or checkpoint boundary, and
        no further than the time left (:meth:`Budget.block`)."""
        step = self.step
        stops = [total, step + (self.cfg.steps_per_call or MAX_STEPS_PER_CALL)]
        stops += [(step // every + 1) * every for every in self._intervals()]
        return budget.block(min(stops) - step)

    def _padded_length(self, total: int) -> int:
        """The length every XLA block is padded to: XLA compiles a program for each length of the
        batches it is given, ~5 s each, so a block shorter than this one (a time limit's first
        step and last steps, a log interval that does not divide the checkpoint interval, the
        run's last block) runs the same program, its loop stopping at its own count.  No block
        is longer (:meth:`_block_length`: each of its stops is at most this far ahead)."""
        return min([total - self.step, self.cfg.steps_per_call or MAX_STEPS_PER_CALL, *self._intervals()])

    def _block(self, count: int, budget: Budget):
        """Run ``count`` steps in one compiled call: per-step losses, gradient norms, learning rates."""
        step = self.step
        began = time.perf_counter()
        batches = self.generator.next_many(count).astype(np.int32)
        progress = tf.constant(budget.progress(step), tf.float32)
        if self._pad_to > count:
            batches = np.concatenate([batches, np.zeros((self._pad_to - count, *batches.shape[1:]), np.int32)])
        out = self._train_fn(tf.constant(batches), progress, tf.constant(count, tf.int32))
        losses, norms, lrs = (x.numpy()[:count] for x in out)
        budget.record_block(count, time.perf_counter() - began)
        if not np.all(np.isfinite(losses)):
            bad = step + int(np.argmin(np.isfinite(losses)))
            raise CharlmError(
                f"the loss became non-finite at step {bad}; stopped without saving, the last "
                f"good checkpoint in {self.run_dir} is kept (try a lower --learning-rate or --clip)")
        return losses, norms, lrs

    def _why_stop(self, step: int, total: int, budget: Budget):
        """``None``, or ``(how the run stopped, the line that says so)`` before ``total`` steps."""
        out_of_time = budget.out_of_time()
        peer_stopped = False
        if self.distribution and self.distribution.mode == "multi-worker" and step < total:
            # workers stop together, or the ones left would wait for the others forever
            local = out_of_time or self._stop_signal is not None
            peer_stopped = bool(self._agree_fn(tf.constant(local)).numpy()) and not local
        reason = stop_reason(budget, step, self._stop_signal)
        if reason is not None:
            return reason
        if peer_stopped:
            return "interrupted", f"another worker stopped at step {step}; saved, continue with --resume"
        return None

    def _record(self, step: int, window: "_Window", losses, norms, lrs, budget: Budget) -> dict:
        """The periodic record (validation included), reported and returned."""
        record = {"step": step, "loss": float(np.mean(window.losses)), "learning_rate": float(lrs[-1]),
                  "minibatch_perplexity": math.exp(min(float(losses[-1]), 700.0)),
                  "grad_norm": float(norms[-1]), "chars_per_sec": window.chars_per_sec()}
        began = time.perf_counter()
        score = self._validate()
        budget.record("validation", time.perf_counter() - began)
        if score is not None:
            record.update(valid_perplexity=score.perplexity, valid_bpc=score.bits_per_char)
            self._keep_if_best(score.nats_per_char)
        record["time"] = round(budget.used(), 3)     # the run's seconds, start-up included
        self.report.record(record)
        return record


class _Window:
    """The steps since the last report: their losses and how fast they went."""

    def __init__(self, chars_per_step: float):
        self.chars_per_step = chars_per_step
        self.losses = []
        self.start = time.perf_counter()

    def add(self, losses):
        self.losses.extend(np.asarray(losses).tolist())

    def chars_per_sec(self) -> float:
        return len(self.losses) * self.chars_per_step / max(time.perf_counter() - self.start, 1e-9)


def _compare_configs(old: dict, new: dict, names) -> list[str]:
    return [f"{n} {old[n]!r} -> {new[n]!r}" for n in names if n in old and old[n] != new[n]]


def new_tokenizer(model_cfg: ModelConfig, train_cfg: TrainConfig, vocab: Vocabulary, train_ids) -> Tokenizer:
    """A new run's tokenizer, its bigram pairs chosen on the training ids by the run's settings."""
    return Tokenizer.for_ids(model_cfg.kind, vocab, train_ids, train_cfg.min_pair_count, train_cfg.max_tokens)


def _open_corpus(train_cfg: TrainConfig, log, vocab=None):
    """The run's corpus, prepared (streamed once into a memory-mapped cache; see
    charlm.data.prepared); a resumed run's in its own vocabulary ``vocab``, a new run's in the
    vocabulary its settings choose from the corpus's character counts."""
    options = dict(separator=train_cfg.separator, skip_bad_files=train_cfg.skip_bad_files, log=log)
    if vocab is None:
        corpus = prepared.prepare(train_cfg.corpus, **options)
        vocab = Vocabulary.from_counts(corpus.char_counts(), train_cfg.min_char_count, train_cfg.byte_fallback)
        if vocab != corpus.vocab:      # byte fallback: the rare characters re-read as bytes
            corpus = prepared.prepare(train_cfg.corpus, vocabulary=vocab, what="corpus", **options)
    else:
        corpus = prepared.prepare_for(train_cfg.corpus, vocab, **options)
    if corpus.fresh:
        size = sum(f["size"] for f in corpus.meta["files"])
        log(f"prepared {corpus.describe()} in {corpus.seconds:.1f} s "
            f"({size / 1e6 / max(corpus.seconds, 1e-9):,.0f} MB/s of files)")
    else:
        log(f"corpus: {corpus.describe()}, prepared in {corpus.folder}")
    for skipped in corpus.meta["skipped"]:
        log(f"skipped: {skipped['why']}")
    return corpus


def _absolute(corpus):
    """Corpus specs that name files or folders (or globs), made absolute: --resume and
    ``eval --split`` find them from anywhere."""
    from charlm.data.corpora import corpus_specs
    import glob
    import os

    specs = []
    for spec in corpus_specs(corpus):
        path = Path(spec).expanduser()
        if path.exists():
            spec = str(path.resolve())
        elif glob.has_magic(spec):
            spec = os.path.abspath(path)
        specs.append(spec)
    return specs[0] if len(specs) == 1 else specs


def train(corpus: str | None = None, checkpoint_dir=None, resume: bool = False, preset: str = "ud730",
          text: str | None = None, log=_log, threads: int | None = None, distribute: str | None = None,
          replicas: int | None = None, started: float | None = None, init_from=None,
          **overrides) -> TrainResult:
    """Train a model (the ``train`` command).  ``overrides`` are ModelConfig/TrainConfig fields.

    A time limit counts from ``started`` (a ``time.perf_counter()``; default: this call).

    ``text`` trains on a string directly; otherwise ``corpus`` is a file path or dataset name.
    ``distribute`` is ``"mirrored"`` (``replicas`` devices) or ``"multi-worker"`` (``TF_CONFIG``);
    see :mod:`charlm.training.distribute`.  ``init_from`` (a run folder) starts a new run from
    that run's weights (:mod:`charlm.training.finetune`).
    """
    from charlm.training.distribute import setup as setup_distribution
    from charlm.runtime import auto_threads, set_threads, threads_kept_note

    started = time.perf_counter() if started is None else started
    origin = None
    if init_from is not None:
        if resume:
            raise CharlmError("--init-from starts a new run; --resume continues one: give one of them")
        origin = finetune.open_origin(init_from)
        overrides = finetune.shape_from(origin, overrides)
    model_cfg, train_cfg = _configs(preset, corpus, resume, checkpoint_dir, overrides)
    if train_cfg.keep_best and train_cfg.valid_size == 0:
        raise CharlmError("--keep-best keeps the checkpoint of the lowest validation loss: it needs "
                          "--valid-size > 0")
    # threads and devices are fixed before TensorFlow runs its first op
    # (too late in a process that already ran TensorFlow: the automatic count quietly stays as it
    # is there, an explicit --threads says so)
    if not set_threads(auto_threads(model_cfg.hidden or 512) if threads is None else threads, replicas or 1) \
            and threads is not None:
        log(threads_kept_note(threads))
    distribution = setup_distribution(distribute, replicas)
    chief = distribution is None or distribution.is_chief
    if train_cfg.keep_best and distribution and distribution.mode == "multi-worker":
        raise CharlmError("--keep-best is not available with --distribute multi-worker "
                          "(a best checkpoint is saved by the chief alone)")
    if resume:
        run_dir = Path(checkpoint_dir)
        corpus_text = text if text is not None else \
            _open_corpus(train_cfg, log, ckpt.read_run_config(run_dir)["vocabulary"])
    else:
        if distribution and distribution.mode == "multi-worker" and checkpoint_dir is None:
            raise CharlmError("--distribute multi-worker needs --checkpoint-dir (the same folder for "
                              "every worker; the chief writes it)")
        run_dir = Path(checkpoint_dir) if checkpoint_dir else ckpt.default_run_dir(preset, model_cfg.kind)
        check_new_folder(run_dir, chief)
        if text is None:
            corpus_text = _open_corpus(train_cfg, log)
            if origin is not None:        # ids in RUN's characters and the new text's together
                corpus_text = _open_corpus(train_cfg, log, finetune.joined_vocabulary(origin, corpus_text.vocab))
            train_cfg.corpus = _absolute(train_cfg.corpus)    # for --resume and eval --split
        else:
            corpus_text = text
    info = {"preset": preset}
    if not isinstance(corpus_text, str):
        info.update(corpus_text.config_entry())
    if distribution:
        info.update(distribute=distribution.mode, replicas=distribution.replicas)
    # one writer per run folder: the chief holds its lock from here to the end of the run
    with run_folder.writing(run_dir, new=not resume, chief=chief):
        try:
            trainer = Trainer(model_cfg, train_cfg, corpus_text, run_dir, resume=resume, log=log,
                              extra_info=info, distribution=distribution, origin=origin)
            return trainer.run(started=started)
        except tf.errors.OpError as e:
            if distribution is None:
                raise
            raise CharlmError(f"--distribute {distribution.mode}: training stopped in a collective step "
                              f"({type(e).__name__}): a worker died or cannot be reached; the last "
                              f"checkpoint is kept, start every worker again with --resume")


def _configs(preset: str, corpus, resume: bool, checkpoint_dir, overrides: dict):
    """The run's ``(ModelConfig, TrainConfig)``: a new run's from the preset and flags; a resumed
    run's from its ``config.json``, where only the steps, the time limit and the precision may change."""
    steps, time_limit = overrides.pop("steps", None), overrides.pop("time_limit", None)
    precision = overrides.pop("precision", None)
    keep_best = overrides.pop("keep_best", None)
    if not resume:
        return build_configs(preset, steps=steps, time_limit=time_limit, precision=precision,
                             corpus=corpus, keep_best=keep_best, **overrides)
    if checkpoint_dir is None:
        raise CharlmError("--resume needs --checkpoint-dir")
    info = ckpt.read_run_config(checkpoint_dir)
    model_cfg, train_cfg = info["model_config"], info["train_config"]
    if overrides:
        asked_model, asked_train = build_configs(preset, **overrides)
        given = set(k for k, v in overrides.items() if v is not None)
        diffs = _compare_configs(dataclasses.asdict(model_cfg), dataclasses.asdict(asked_model),
                                 given & set(dataclasses.asdict(model_cfg)))
        diffs += _compare_configs(dataclasses.asdict(train_cfg), dataclasses.asdict(asked_train),
                                  given & {"batch_size", "unrollings", "optimizer", "seed",
                                           "valid_size", "valid_split", "corpus", "separator",
                                           "skip_bad_files"})
        if diffs:
            raise CharlmError(f"--resume: the run in {checkpoint_dir} was trained with a different "
                              f"setup ({'; '.join(diffs)}); drop those flags or train a new run")
    if steps is not None:
        train_cfg.steps = steps
    if time_limit is not None:
        train_cfg.time_limit = time_limit
    if precision is not None:
        train_cfg.precision = precision
    if keep_best is not None:
        train_cfg.keep_best = keep_best
    train_cfg.validate()
    return model_cfg, train_cfg
