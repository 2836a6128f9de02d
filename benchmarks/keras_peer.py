#!/usr/bin/env python
"""Peer: stock keras.layers.Embedding + keras.layers.LSTM + Dense, trained in a tf.function step.

The LSTM state is carried between batches as explicit initial_state (truncated BPTT); batches
come from a vectorised numpy BatchGenerator of ids with the notebook's semantics.

    python benchmarks/keras_peer.py --hidden 512 --embedding-size 64 --unrollings 50 --steps 60

Prints one JSON line; train_seconds excludes the first (tracing) step.
"""
import argparse
import json
import os
import sys
import time

START = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import find_corpus, peak_rss_mb, read_corpus  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--corpus")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--embedding-size", type=int, default=0, help="0: one-hot input")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--unrollings", type=int, default=10)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--clip", type=float, default=1.25)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--limit", type=int, default=2_000_000)
    a = p.parse_args()

    text = read_corpus(find_corpus(a.corpus), a.limit)
    chars = sorted(set(text))
    table = np.zeros(max(map(ord, chars)) + 1, np.int32)
    table[[ord(c) for c in chars]] = np.arange(len(chars))
    ids = table[np.frombuffer(text.encode("latin-1"), np.uint8)]
    vocab, b, u = len(chars), a.batch_size, a.unrollings
    cursors = np.arange(b) * (ids.size // b)

    def next_batch():
        nonlocal cursors
        pos = (cursors[None, :] + np.arange(u + 1)[:, None]) % ids.size
        cursors = (cursors + u) % ids.size
        return ids[pos].T                      # [batch, u + 1], batch major for Keras

    inputs = keras.Input((u,), batch_size=b, dtype="int32")
    h0 = keras.Input((a.hidden,), batch_size=b)
    c0 = keras.Input((a.hidden,), batch_size=b)
    x = (keras.layers.Embedding(vocab, a.embedding_size)(inputs) if a.embedding_size
         else keras.ops.one_hot(inputs, vocab))
    seq, h, c = keras.layers.LSTM(a.hidden, return_sequences=True, return_state=True)(x, initial_state=[h0, c0])
    logits = keras.layers.Dense(vocab)(seq)
    model = keras.Model([inputs, h0, c0], [logits, h, c])
    lr = a.learning_rate or (10.0 if a.optimizer == "sgd" else 0.002)
    opt = keras.optimizers.SGD(lr) if a.optimizer == "sgd" else keras.optimizers.Adam(lr)
    state = [tf.Variable(tf.zeros([b, a.hidden]), trainable=False) for _ in range(2)]

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            out, h, c = model([batch[:, :-1], state[0], state[1]], training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(batch[:, 1:], out, from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        grads, _ = tf.clip_by_global_norm(grads, a.clip)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        state[0].assign(h)
        state[1].assign(c)
        return loss

    t0 = time.perf_counter()
    loss = float(step(tf.constant(next_batch())))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(a.steps - 1):
        loss = step(tf.constant(next_batch()))
    loss = float(loss)
    seconds = time.perf_counter() - t0
    n = a.steps - 1
    json.dump({"peer": "keras", "steps": a.steps, "first_step_seconds": first, "train_seconds": seconds,
               "steps_per_sec": n / seconds, "chars_per_sec": n * b * u / seconds, "final_loss": loss,
               "total_seconds": time.perf_counter() - START, "peak_rss_mb": peak_rss_mb()}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
