#!/usr/bin/env python
"""Peer: a character LSTM from stock Keras layers, trained with a tf.function custom step.

    inputs (ids) -> keras.layers.Embedding (--embedding-size N) or one-hot (--embedding-size 0)
                 -> keras.layers.LSTM(hidden, return_sequences=True, return_state=True)
                 -> keras.layers.Dense(vocab)  (logits)

The LSTM's (h, c) is carried from one batch to the next as explicit ``initial_state`` (truncated
backpropagation through time, as the ud730 notebook's saved_output/saved_state).  Batches come
from a vectorised numpy BatchGenerator of ids with the notebook's semantics: batch_size cursors
spaced len(text)//batch_size apart, each batch unrollings+1 ids per row, its first id the
previous batch's last.  The first 1000 characters are held out as the notebook does.
Each step: GradientTape, mean sparse softmax cross-entropy, clip_by_global_norm, SGD or Adam.

    python benchmarks/peers/keras_peer.py --hidden 64 --steps 200                 # the ud730 shape
    python benchmarks/peers/keras_peer.py --hidden 512 --embedding-size 64 --unrollings 50 \\
        --optimizer adam --learning-rate 0.002 --steps 20

Prints progress on stderr and one JSON line on stdout.  train_seconds, steps_per_sec and
chars_per_sec leave out the first step (tracing and graph building: first_step_seconds).
"""
import time

PROCESS_START = time.perf_counter()  # noqa: E402

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/
from common import emit, find_corpus, log, peak_rss_mb, quiet_stderr, read_corpus  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402

tf = keras = None   # main() imports them once the corpus is found (a missing one is said at once)


def import_tensorflow():
    global tf, keras
    with quiet_stderr():
        import tensorflow
        import keras as keras_module

        tensorflow.config.list_physical_devices()        # device probing chatter happens here
    tf, keras = tensorflow, keras_module

VALID_SIZE = 1000


class IdBatches:
    """The notebook's BatchGenerator on integer ids, one numpy gather per batch."""

    def __init__(self, ids, batch_size, unrollings):
        self.ids = ids
        self.unrollings = unrollings
        self.cursor = np.arange(batch_size, dtype=np.int64) * (ids.size // batch_size)
        self.offsets = np.arange(unrollings + 1, dtype=np.int64)

    def next(self):
        """[batch, unrollings + 1] int32 ids; column 0 repeats the previous call's last column."""
        rows = (self.cursor[:, None] + self.offsets[None, :]) % self.ids.size
        self.cursor = (self.cursor + self.unrollings) % self.ids.size
        return self.ids[rows]


def encode(text):
    """Ids in sorted-character order (for text8: space 0, 'a'..'z' 1..26, as the notebook)."""
    chars = sorted(set(text))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.zeros(max(map(ord, chars)) + 1, dtype=np.int32)
    table[[ord(c) for c in chars]] = np.arange(len(chars), dtype=np.int32)
    return table[codes], chars


def build_model(vocab, hidden, embedding_size, batch_size, unrollings):
    ids = keras.Input(shape=(unrollings,), batch_size=batch_size, dtype="int32", name="ids")
    h0 = keras.Input(shape=(hidden,), batch_size=batch_size, name="h0")
    c0 = keras.Input(shape=(hidden,), batch_size=batch_size, name="c0")
    if embedding_size:
        x = keras.layers.Embedding(vocab, embedding_size, name="embedding")(ids)
    else:
        x = keras.ops.one_hot(ids, vocab)
    seq, h, c = keras.layers.LSTM(hidden, return_sequences=True, return_state=True, name="lstm")(
        x, initial_state=[h0, c0])
    logits = keras.layers.Dense(vocab, name="logits")(seq)
    return keras.Model([ids, h0, c0], [logits, h, c])


def make_optimizer(name, learning_rate):
    if name == "sgd":
        # The notebook's schedule when no rate is given: 10.0, x0.1 every 5000 steps, staircase.
        rate = learning_rate if learning_rate is not None else keras.optimizers.schedules.ExponentialDecay(
            10.0, decay_steps=5000, decay_rate=0.1, staircase=True)
        return keras.optimizers.SGD(rate)
    return keras.optimizers.Adam(learning_rate if learning_rate is not None else 0.002)


def main(argv=None):
    p = argparse.ArgumentParser(description="Stock Keras LSTM character model as a benchmark peer.")
    p.add_argument("--corpus", help="text file (plain or .gz); default $CHARLM_BENCH_CORPUS or "
                                    "../shared/data/text8-first10M.txt.gz")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--embedding-size", type=int, default=0, help="0: one-hot input")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--unrollings", type=int, default=10)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="default: sgd 10.0 with the notebook's decay; adam 0.002")
    p.add_argument("--clip", type=float, default=1.25, help="global gradient norm (0: no clipping)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="read only the corpus' first CHARS characters")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra/inter-op threads (0: default)")
    p.add_argument("--log-every", type=int, default=100)
    a = p.parse_args(argv)
    if a.steps < 2:
        p.error("--steps must be at least 2 (the first step is timed separately)")
    corpus = find_corpus(a.corpus)    # before TensorFlow's start-up: a missing corpus is said at once
    import_tensorflow()
    if a.threads:
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(a.threads)

    text = read_corpus(corpus, a.limit)
    ids, chars = encode(text)
    train_ids = ids[VALID_SIZE:]
    vocab, batch_size, unrollings = len(chars), a.batch_size, a.unrollings
    if train_ids.size < batch_size * (unrollings + 1):
        log(f"corpus too short ({ids.size} characters)")
        sys.exit(2)
    log(f"train {train_ids.size:,} characters, vocabulary {vocab}")
    keras.utils.set_random_seed(a.seed)

    model = build_model(vocab, a.hidden, a.embedding_size, batch_size, unrollings)
    optimizer = make_optimizer(a.optimizer, a.learning_rate)
    weights = model.trainable_variables
    carried = [tf.Variable(tf.zeros([batch_size, a.hidden]), trainable=False, name=n) for n in ("h", "c")]
    log(f"{sum(int(np.prod(w.shape)) for w in weights):,} parameters")

    @tf.function
    def train_step(batch):
        inputs, labels = batch[:, :-1], batch[:, 1:]
        with tf.GradientTape() as tape:
            logits, h, c = model([inputs, carried[0], carried[1]], training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        grads = tape.gradient(loss, weights)
        if a.clip:
            grads, _ = tf.clip_by_global_norm(grads, a.clip)
        optimizer.apply_gradients(zip(grads, weights))
        carried[0].assign(h)
        carried[1].assign(c)
        return loss

    batches = IdBatches(train_ids, batch_size, unrollings)
    t0 = time.perf_counter()
    loss = float(train_step(tf.constant(batches.next())))
    first_step_seconds = time.perf_counter() - t0
    log(f"step 0 loss {loss:.4f} (first step, tracing included: {first_step_seconds:.2f} s)")

    t0 = time.perf_counter()
    for step in range(1, a.steps):
        loss_t = train_step(tf.constant(batches.next()))
        if a.log_every and step % a.log_every == 0:
            log(f"step {step} loss {float(loss_t):.4f}")
    loss = float(loss_t)                               # waits for the last step
    train_seconds = time.perf_counter() - t0
    timed = a.steps - 1
    emit({"peer": "keras", "steps": a.steps, "timed_steps": timed,
          "hidden": a.hidden, "embedding_size": a.embedding_size, "batch_size": batch_size,
          "unrollings": unrollings, "optimizer": a.optimizer,
          "first_step_seconds": round(first_step_seconds, 3),
          "train_seconds": round(train_seconds, 4),
          "steps_per_sec": round(timed / train_seconds, 2),
          "chars_per_sec": round(timed * batch_size * unrollings / train_seconds, 1),
          "final_loss": round(loss, 5),
          "total_seconds": round(time.perf_counter() - PROCESS_START, 3),
          "peak_rss_mb": round(peak_rss_mb(), 1)})


if __name__ == "__main__":
    main()
