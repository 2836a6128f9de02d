#!/usr/bin/env python
"""Peer: Udacity ud730 assignment 6's character LSTM, its graph rebuilt on tf.compat.v1.

What the notebook does, and so what this does:
  * 27 symbols: space is id 0, 'a'..'z' are 1..26; inputs and labels are one-hot float rows.
  * A Python BatchGenerator: batch_size cursors spaced len(text)//batch_size apart; every next()
    returns num_unrollings+1 one-hot [batch, 27] arrays whose first is the previous call's last,
    built one character at a time in a Python loop.
  * An LSTM cell of 64 nodes with four separate matmul pairs (input, forget, update, output),
    weights truncated_normal(mean -0.1, stddev 0.1) as the notebook's positional arguments give,
    zero biases; output and state carried between steps in non-trainable variables.
  * Loss: mean softmax cross-entropy over the 10 concatenated unrollings; plain gradient descent
    at 10.0 decayed x0.1 every 5000 steps (staircase); gradients clipped to global norm 1.25;
    every step feeds 11 one-hot arrays through feed_dict and fetches the predictions.
  * The first 1000 characters validate, the rest train.  Validation and sampling use a separate
    batch-1 graph, one session.run per character.
  * Variables are TF1 reference variables, as in the notebook's day.  That has a side effect on
    the gradient: the first cell of each window reads the carried output and state straight from
    their variables, and the backward pass reads them again *after* the assigns that carry the
    new state over, so the recurrent and forget-gate gradients of the first time step use the
    window's last output and state instead of its first.  ``--resource-variables`` gives exact
    gradients (they then match finite differences and charlm's to float precision).

``--feed ids`` is the same graph in its strongest form, the one the benchmarks race: the
placeholders take token ids, which the graph one-hot encodes (``tf.one_hot``), a numpy gather
cuts each batch from the text's ids at once, and a training step fetches only the update and the
loss (the predictions only on the every-100-steps summary).  The arithmetic is unchanged: from the
same start the ids feed ends on the notebook feed's loss.  With ``--resource-variables`` (TF2's
variables) it is the graph a TensorFlow 2 user gets when they port the notebook.

Subcommands (each prints progress on stderr and ONE JSON line on stdout):
    python benchmarks/peers/notebook_peer.py train --steps 7001          # the notebook's full run
    python benchmarks/peers/notebook_peer.py train --steps 300 --valid-every 100
    python benchmarks/peers/notebook_peer.py sample --chars 20000        # the notebook's sampling loop
    python benchmarks/peers/notebook_peer.py eval --chars 20000          # per-character scoring loop
    python benchmarks/peers/notebook_peer.py train --feed ids --resource-variables --steps 7001 \
        --valid-every 0 --sample-every 0                         # the strongest form (peers.py ud730)
"""
import time

PROCESS_START = time.perf_counter()  # noqa: E402  (total_seconds counts from here)

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import string  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/
from common import ROOT, emit, find_corpus, log, peak_rss_mb, quiet_stderr, read_corpus  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402

tf = None   # tensorflow.compat.v1: main() imports it once the corpus is found (a missing one is said at once)


def import_tensorflow():
    global tf
    with quiet_stderr():
        import tensorflow.compat.v1 as tf1

        tf1.disable_v2_behavior()        # graphs, placeholders and sessions, as the notebook ran
        tf1.logging.set_verbosity(tf1.logging.ERROR)
    tf = tf1

VOCABULARY_SIZE = len(string.ascii_lowercase) + 1   # 27
FIRST_LETTER = ord("a")
NUM_NODES = 64
BATCH_SIZE = 64
NUM_UNROLLINGS = 10
VALID_SIZE = 1000
SUMMARY_FREQUENCY = 100
_unexpected = set()


# ----------------------------------------------------------------------------- vocabulary, batches
def char2id(char):
    if char in string.ascii_lowercase:
        return ord(char) - FIRST_LETTER + 1
    if char != " " and char not in _unexpected:          # the notebook prints and maps it to 0
        _unexpected.add(char)
        log(f"unexpected character {char!r} (read as a space)")
    return 0


def id2char(dictid):
    return chr(dictid + FIRST_LETTER - 1) if dictid > 0 else " "


class BatchGenerator:
    """The notebook's generator: one cursor per batch row, one Python loop per character."""

    def __init__(self, text, batch_size, num_unrollings):
        self._text = text
        self._text_size = len(text)
        self._batch_size = batch_size
        self._num_unrollings = num_unrollings
        segment = self._text_size // batch_size
        self._cursor = [offset * segment for offset in range(batch_size)]
        self._last_batch = self._next_batch()

    def _next_batch(self):
        """One one-hot array for the characters under the cursors; every cursor moves on by one."""
        batch = np.zeros((self._batch_size, VOCABULARY_SIZE), dtype=np.float32)
        for row in range(self._batch_size):
            batch[row, char2id(self._text[self._cursor[row]])] = 1.0
            self._cursor[row] = (self._cursor[row] + 1) % self._text_size
        return batch

    def next(self):
        """num_unrollings + 1 arrays: the previous call's last array, then num_unrollings new ones."""
        batches = [self._last_batch]
        for _ in range(self._num_unrollings):
            batches.append(self._next_batch())
        self._last_batch = batches[-1]
        return batches


class IdBatches:
    """BatchGenerator's batches as ids, cut from the text's ids by one numpy gather per call."""

    def __init__(self, ids, batch_size, num_unrollings):
        self._ids = ids
        self._num_unrollings = num_unrollings
        self._cursor = np.arange(batch_size, dtype=np.int64) * (ids.size // batch_size)
        self._window = np.arange(num_unrollings + 1, dtype=np.int64)

    def next(self):
        """num_unrollings + 1 id vectors [batch]: the previous call's last, then num_unrollings new."""
        block = self._ids[(self._window[:, None] + self._cursor) % self._ids.size]   # [unrollings + 1, batch]
        self._cursor = (self._cursor + self._num_unrollings) % self._ids.size
        return list(block)


def text_ids(text):
    """char2id over a whole text at once: 'a'..'z' are 1..26, anything else 0 (as char2id reads it)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64) - (FIRST_LETTER - 1)
    letters = (codes >= 1) & (codes <= 26)
    others = codes[~letters]
    for code in np.unique(others[others != ord(" ") - (FIRST_LETTER - 1)]):
        char2id(chr(code + FIRST_LETTER - 1))           # the notebook's notice for unexpected ones
    return np.where(letters, codes, 0)


def one_hot_rows(ids):
    return np.eye(VOCABULARY_SIZE, dtype=np.float32)[np.asarray(ids)]


def characters(probabilities):
    return [id2char(c) for c in np.argmax(probabilities, 1)]


def logprob(predictions, labels):
    """Mean negative log-probability of the labels' rows (probabilities floored at 1e-10)."""
    predictions = np.maximum(predictions, 1e-10)
    return np.sum(labels * -np.log(predictions)) / labels.shape[0]


def sample_distribution(distribution):
    """Draw an index from a normalised probability vector, walking its cumulative sum in Python."""
    r = random.uniform(0, 1)
    total = 0.0
    for i, p in enumerate(distribution):
        total += p
        if total >= r:
            return i
    return len(distribution) - 1


def sample(prediction):
    """A one-hot [1, 27] row sampled from a [1, 27] prediction."""
    p = np.zeros((1, VOCABULARY_SIZE), dtype=np.float32)
    p[0, sample_distribution(prediction[0])] = 1.0
    return p


def random_distribution():
    b = np.random.uniform(0.0, 1.0, size=(1, VOCABULARY_SIZE))
    return b / np.sum(b, 1)[:, None]


# ----------------------------------------------------------------------------- the graph
class NotebookGraph:
    """Training graph (batch 64, 10 unrollings) and batch-1 sampling graph sharing the weights."""

    def __init__(self, seed=None, batch_size=BATCH_SIZE, num_unrollings=NUM_UNROLLINGS, nodes=NUM_NODES,
                 initial=None, feed="onehot"):
        self.feed = feed
        self.graph = tf.Graph()
        with self.graph.as_default():
            if seed is not None:
                tf.set_random_seed(seed)
            self._build(batch_size, num_unrollings, nodes, initial)

    def _build(self, batch_size, num_unrollings, nodes, initial=None):
        V = VOCABULARY_SIZE

        def weights(shape, name):
            if initial is not None:         # given starting weights (--init-from-charlm)
                return tf.Variable(initial[name].astype(np.float32))
            # truncated_normal(shape, -0.1, 0.1): the notebook passes mean=-0.1, stddev=0.1.
            return tf.Variable(tf.truncated_normal(shape, -0.1, 0.1))

        def gate_params(gate):
            return (weights([V, nodes], gate + "x"), weights([nodes, nodes], gate + "m"),
                    tf.Variable(tf.zeros([1, nodes])))

        ix, im, ib = gate_params("i")   # input gate
        fx, fm, fb = gate_params("f")   # forget gate
        cx, cm, cb = gate_params("c")   # memory cell (update)
        ox, om, ob = gate_params("o")   # output gate
        saved_output = tf.Variable(tf.zeros([batch_size, nodes]), trainable=False)
        saved_state = tf.Variable(tf.zeros([batch_size, nodes]), trainable=False)
        w = weights([nodes, V], "w")
        b = tf.Variable(tf.zeros([V]))

        def lstm_cell(x, prev_output, prev_state):
            input_gate = tf.sigmoid(tf.matmul(x, ix) + tf.matmul(prev_output, im) + ib)
            forget_gate = tf.sigmoid(tf.matmul(x, fx) + tf.matmul(prev_output, fm) + fb)
            update = tf.matmul(x, cx) + tf.matmul(prev_output, cm) + cb
            new_state = forget_gate * prev_state + input_gate * tf.tanh(update)
            output_gate = tf.sigmoid(tf.matmul(x, ox) + tf.matmul(prev_output, om) + ob)
            return output_gate * tf.tanh(new_state), new_state

        def placeholder(rows):
            """A one-hot [rows, V] input: fed as it is, or fed ids that the graph one-hot encodes."""
            if self.feed == "ids":
                ids = tf.placeholder(tf.int64, shape=[rows])
                return ids, tf.one_hot(ids, V)
            rows_in = tf.placeholder(tf.float32, shape=[rows, V])
            return rows_in, rows_in

        # Training: num_unrollings + 1 placeholders, inputs are the first n, labels the last n.
        self.train_data, one_hot = zip(*[placeholder(batch_size) for _ in range(num_unrollings + 1)])
        outputs = []
        output, state = saved_output, saved_state
        for x in one_hot[:-1]:
            output, state = lstm_cell(x, output, state)
            outputs.append(output)
        with tf.control_dependencies([saved_output.assign(output), saved_state.assign(state)]):
            logits = tf.nn.xw_plus_b(tf.concat(outputs, 0), w, b)
            self.loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits_v2(
                labels=tf.concat(one_hot[1:], 0), logits=logits))

        global_step = tf.Variable(0, trainable=False)
        self.learning_rate = tf.train.exponential_decay(10.0, global_step, 5000, 0.1, staircase=True)
        optimizer = tf.train.GradientDescentOptimizer(self.learning_rate)
        gradients, variables = zip(*optimizer.compute_gradients(self.loss))
        gradients, _ = tf.clip_by_global_norm(gradients, 1.25)
        self.optimize = optimizer.apply_gradients(zip(gradients, variables), global_step=global_step)
        self.train_prediction = tf.nn.softmax(logits)

        # Sampling / validation: batch 1, one step per session.run, state kept in variables.
        self.sample_input, sample_one_hot = placeholder(1)
        saved_sample_output = tf.Variable(tf.zeros([1, nodes]))
        saved_sample_state = tf.Variable(tf.zeros([1, nodes]))
        self.reset_sample_state = tf.group(saved_sample_output.assign(tf.zeros([1, nodes])),
                                           saved_sample_state.assign(tf.zeros([1, nodes])))
        sample_output, sample_state = lstm_cell(sample_one_hot, saved_sample_output, saved_sample_state)
        with tf.control_dependencies([saved_sample_output.assign(sample_output),
                                      saved_sample_state.assign(sample_state)]):
            self.sample_prediction = tf.nn.softmax(tf.nn.xw_plus_b(sample_output, w, b))

        self.init = tf.global_variables_initializer()
        self.graph.finalize()

    def session(self, threads=0):
        """A session with the variables initialised (threads 0: TensorFlow's default pools)."""
        config = tf.ConfigProto(intra_op_parallelism_threads=threads,
                                inter_op_parallelism_threads=threads)
        with quiet_stderr():                          # CUDA probing chatter on first session
            sess = tf.Session(graph=self.graph, config=config)
            sess.run(self.init)
        return sess

    # -- the notebook's loops, on an open session ------------------------------------------------
    def train_step(self, sess, batches):
        feed_dict = {self.train_data[i]: batches[i] for i in range(len(batches))}
        _, l, predictions, lr = sess.run(
            [self.optimize, self.loss, self.train_prediction, self.learning_rate], feed_dict=feed_dict)
        return l, predictions, lr

    def train_step_ids(self, sess, batches, summary):
        """The ids feed's step: the update and the loss; predictions and rate only if ``summary``."""
        if summary:
            return self.train_step(sess, batches)
        _, l = sess.run([self.optimize, self.loss], feed_dict=dict(zip(self.train_data, batches)))
        return l, None, None

    def batches(self, text, batch_size, num_unrollings):
        if self.feed == "ids":
            return IdBatches(text_ids(text), batch_size, num_unrollings)
        return BatchGenerator(text, batch_size, num_unrollings)

    def labels(self, batches):
        """The one-hot label rows of a training batch (for the minibatch perplexity)."""
        rows = np.concatenate(batches[1:])
        return one_hot_rows(rows) if self.feed == "ids" else rows

    def score(self, sess, generator, n):
        """Sum of -log p over n (input, label) pairs from a batch-1, 1-unrolling generator."""
        sess.run(self.reset_sample_state)
        total = 0.0
        for _ in range(n):
            b = generator.next()
            predictions = sess.run(self.sample_prediction, {self.sample_input: b[0]})
            if self.feed == "ids":
                total += -float(np.log(max(predictions[0, b[1][0]], 1e-10)))
            else:
                total += float(logprob(predictions, b[1]))
        return total

    def valid_perplexity(self, sess, valid_text):
        return float(np.exp(self.score(sess, self.batches(valid_text, 1, 1), len(valid_text))
                            / len(valid_text)))

    def sample_text(self, sess, length):
        """The notebook's sampler: a random first character, then one session.run per character."""
        if self.feed == "ids":
            return self._sample_ids(sess, length)
        feed = sample(random_distribution())
        sentence = characters(feed)[0]
        sess.run(self.reset_sample_state)
        for _ in range(length - 1):
            prediction = sess.run(self.sample_prediction, {self.sample_input: feed})
            feed = sample(prediction)
            sentence += characters(feed)[0]
        return sentence

    def _sample_ids(self, sess, length):
        """The sampler fed ids: each draw is a search of the prediction's cumulative sum."""
        ids = np.empty(length, dtype=np.int64)
        ids[0] = sample_distribution(random_distribution()[0])
        sess.run(self.reset_sample_state)
        for k in range(1, length):
            prediction = sess.run(self.sample_prediction, {self.sample_input: ids[k - 1:k]})
            ids[k] = min(int(np.searchsorted(np.cumsum(prediction[0]), random.uniform(0, 1))),
                         VOCABULARY_SIZE - 1)
        return "".join(id2char(i) for i in ids)


def charlm_initial(seed, nodes=NUM_NODES):
    """charlm's starting weights for ``--preset ud730 --seed SEED``, cut into the notebook's gates.

    charlm's single kernel is ``[27 + nodes, 4 * nodes]``: columns input, forget, update, output
    gate; rows the one-hot input, then the previous output.  text8's vocabulary is in the
    notebook's order (space, a-z).
    """
    sys.path.insert(0, str(ROOT))
    from charlm.config import build_configs
    from charlm.nn.init import initial_weights

    config, _ = build_configs("ud730", hidden=nodes)
    start = initial_weights(config, VOCABULARY_SIZE, seed)
    kernel = start["kernels"][0]
    weights = {"w": start["out_w"]}
    for k, gate in enumerate("ifco"):
        block = kernel[:, k * nodes:(k + 1) * nodes]
        weights[gate + "x"], weights[gate + "m"] = block[:VOCABULARY_SIZE], block[VOCABULARY_SIZE:]
    return weights


# ----------------------------------------------------------------------------- subcommands
def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)


def cmd_train(args):
    text = read_corpus(find_corpus(args.corpus), args.limit)
    if len(text) <= VALID_SIZE + BATCH_SIZE * (NUM_UNROLLINGS + 1):
        log(f"corpus too short ({len(text)} characters)")
        sys.exit(2)
    valid_text, train_text = text[:VALID_SIZE], text[VALID_SIZE:]
    log(f"train {len(train_text):,} characters, validate {len(valid_text):,}")
    seed_everything(args.seed)
    if args.resource_variables:
        tf.enable_resource_variables()
    initial = None if args.init_from_charlm is None else charlm_initial(args.init_from_charlm)
    model = NotebookGraph(seed=args.seed, initial=initial, feed=args.feed)
    train_batches = model.batches(train_text, BATCH_SIZE, NUM_UNROLLINGS)

    step_seconds = report_seconds = 0.0
    valid_ppl = None
    last_loss = None
    with model.session(args.threads) as sess:
        loop_start = time.perf_counter()
        mean_loss = 0.0
        for step in range(args.steps):
            t = time.perf_counter()
            batches = train_batches.next()
            if args.feed == "ids":
                l, predictions, lr = model.train_step_ids(sess, batches, step % SUMMARY_FREQUENCY == 0)
            else:
                l, predictions, lr = model.train_step(sess, batches)
            mean_loss += l
            last_loss = float(l)
            step_seconds += time.perf_counter() - t
            if step % SUMMARY_FREQUENCY == 0:
                t = time.perf_counter()
                if step > 0:
                    mean_loss /= SUMMARY_FREQUENCY
                labels = model.labels(batches)
                log(f"Average loss at step {step}: {mean_loss:f} learning rate: {lr:f}")
                log(f"Minibatch perplexity: {float(np.exp(logprob(predictions, labels))):.2f}")
                mean_loss = 0.0
                if args.sample_every and step % args.sample_every == 0:
                    for _ in range(5):
                        log(model.sample_text(sess, 80))
                if args.valid_every and step % args.valid_every == 0:
                    valid_ppl = model.valid_perplexity(sess, valid_text)
                    log(f"Validation set perplexity: {valid_ppl:.2f}")
                report_seconds += time.perf_counter() - t
        train_seconds = time.perf_counter() - loop_start
        last_step = args.steps - 1
        already = args.valid_every and args.steps and last_step % SUMMARY_FREQUENCY == 0 \
            and last_step % args.valid_every == 0
        if args.final_valid and args.steps and not already:
            valid_ppl = model.valid_perplexity(sess, valid_text)
            log(f"Validation set perplexity after step {last_step}: {valid_ppl:.2f}")

    emit({"peer": "notebook", "feed": args.feed, "steps": args.steps, "resource_variables": args.resource_variables,
          "init_from_charlm": args.init_from_charlm,
          "train_seconds": round(train_seconds, 4),
          "steps_per_sec": round(args.steps / train_seconds, 2),
          "chars_per_sec": round(args.steps * BATCH_SIZE * NUM_UNROLLINGS / train_seconds, 1),
          "report_seconds": round(report_seconds, 4),
          "steps_per_sec_excluding_reports": round(args.steps / step_seconds, 2) if step_seconds else None,
          "final_loss": last_loss,
          "valid_perplexity": valid_ppl,
          "valid_every": args.valid_every, "sample_every": args.sample_every,
          "total_seconds": round(time.perf_counter() - PROCESS_START, 3),
          "peak_rss_mb": round(peak_rss_mb(), 1)})


def _warm_up(model, sess, args):
    """Optionally train a few steps first, so the sampled/scored model is not the untrained one."""
    if not args.train_steps:
        return
    text = read_corpus(find_corpus(args.corpus), args.limit)
    gen = model.batches(text[VALID_SIZE:], BATCH_SIZE, NUM_UNROLLINGS)
    for _ in range(args.train_steps):
        model.train_step(sess, gen.next())
    log(f"trained {args.train_steps} steps first")


def cmd_sample(args):
    seed_everything(args.seed)
    model = NotebookGraph(seed=args.seed, feed=args.feed)
    with model.session(args.threads) as sess:
        _warm_up(model, sess, args)
        model.sample_text(sess, 10)                      # first-run overheads out of the timing
        t0 = time.perf_counter()
        text = model.sample_text(sess, args.chars)
        seconds = time.perf_counter() - t0
    log(text[:200])
    emit({"peer": "notebook", "feed": args.feed, "what": "sample", "chars": args.chars, "train_steps": args.train_steps,
          "seconds": round(seconds, 4), "chars_per_sec": round(args.chars / seconds, 1),
          "total_seconds": round(time.perf_counter() - PROCESS_START, 3),
          "peak_rss_mb": round(peak_rss_mb(), 1)})


def cmd_eval(args):
    text = read_corpus(find_corpus(args.corpus), args.offset + args.chars + 1)[args.offset:]
    if len(text) < args.chars + 1:
        log(f"corpus too short: {len(text)} characters from offset {args.offset}, need {args.chars + 1}")
        sys.exit(2)
    seed_everything(args.seed)
    model = NotebookGraph(seed=args.seed, feed=args.feed)
    with model.session(args.threads) as sess:
        _warm_up(model, sess, args)
        model.score(sess, model.batches(text[:11], 1, 1), 10)   # first-run overheads
        # Batch 1, one unrolling, over exactly chars+1 characters: pairs (t[0],t[1])..(t[n-1],t[n]).
        t0 = time.perf_counter()
        nats = model.score(sess, model.batches(text, 1, 1), args.chars)
        seconds = time.perf_counter() - t0
    emit({"peer": "notebook", "feed": args.feed, "what": "eval", "chars": args.chars, "offset": args.offset,
          "train_steps": args.train_steps, "seconds": round(seconds, 4),
          "chars_per_sec": round(args.chars / seconds, 1),
          "nats_per_char": round(nats / args.chars, 5),
          "bits_per_char": round(nats / args.chars / float(np.log(2)), 5),
          "total_seconds": round(time.perf_counter() - PROCESS_START, 3),
          "peak_rss_mb": round(peak_rss_mb(), 1)})


FEED_HELP = ("onehot: the notebook's Python one-hot feeder (default); ids: token ids, one-hot encoded "
             "in the graph (the strongest form)")


def main(argv=None):
    p = argparse.ArgumentParser(description="The ud730 assignment 6 LSTM notebook as a benchmark peer.")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train as the notebook does; time the training loop")
    t.add_argument("--corpus", help="text8-like file (plain or .gz); default $CHARLM_BENCH_CORPUS "
                                    "or ../shared/data/text8-first10M.txt.gz")
    t.add_argument("--steps", type=int, default=7001)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--valid-every", type=int, default=1000,
                   help="validation perplexity every N steps (a multiple of 100; the notebook: 100; "
                        "0: never during training)")
    t.add_argument("--sample-every", type=int, default=1000,
                   help="five 80-character samples every N steps (notebook: 1000; 0: never)")
    t.add_argument("--final-valid", action=argparse.BooleanOptionalAction, default=True,
                   help="validate after the last step if it was not a validation step (not timed)")
    t.add_argument("--limit", type=int, default=None, help="read only the corpus' first CHARS characters")
    t.add_argument("--feed", choices=["onehot", "ids"], default="onehot", help=FEED_HELP)
    t.add_argument("--resource-variables", action="store_true",
                   help="resource variables: exact gradients, without the notebook's stale first-step reads")
    t.add_argument("--init-from-charlm", type=int, default=None, metavar="SEED",
                   help="start from the weights `charlm train --preset ud730 --seed SEED` starts from")
    t.add_argument("--threads", type=int, default=0, help="TensorFlow intra/inter-op threads (0: default)")

    def warm_up_flags(s):
        s.add_argument("--corpus")
        s.add_argument("--seed", type=int, default=1)
        s.add_argument("--train-steps", type=int, default=0, help="train this many steps first")
        s.add_argument("--limit", type=int, default=2_000_000,
                       help="characters read for --train-steps")
        s.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: default)")
        s.add_argument("--feed", choices=["onehot", "ids"], default="onehot", help=FEED_HELP)

    s = sub.add_parser("sample", help="the notebook's sampling loop (one session.run per character)")
    s.add_argument("--chars", type=int, default=20000)
    warm_up_flags(s)

    e = sub.add_parser("eval", aliases=["score"],
                       help="score corpus characters one session.run each (the validation loop)")
    e.add_argument("--chars", type=int, default=20000)
    e.add_argument("--offset", type=int, default=9_000_000)
    warm_up_flags(e)

    args = p.parse_args(argv)
    for name in ("valid_every", "sample_every"):
        value = getattr(args, name, 0)
        if value and value % SUMMARY_FREQUENCY:
            p.error(f"--{name.replace('_', '-')} must be a multiple of {SUMMARY_FREQUENCY}")
    find_corpus(args.corpus)          # before TensorFlow's start-up: a missing corpus is said at once
    import_tensorflow()
    {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "score": cmd_eval}[args.cmd](args)


if __name__ == "__main__":
    main()
