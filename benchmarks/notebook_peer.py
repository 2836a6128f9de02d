#!/usr/bin/env python
"""Peer: the ud730 assignment 6 notebook's graph, rebuilt on tf.compat.v1 (written for charlm).

Four matmul pairs per cell (input, forget, update, output gates), state saved in variables
between steps, one-hot batches from a per-character Python BatchGenerator fed with feed_dict,
GradientDescent at 10.0 decayed x0.1 every 5000 steps (staircase), clip by global norm 1.25.
Validation and sampling run one session.run per character, as the notebook does.

    python benchmarks/notebook_peer.py train --steps 3000      # training speed (+ quality)
    python benchmarks/notebook_peer.py score --chars 20000      # per-character eval/sample rate

Prints one JSON line on stdout.
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
import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_v2_behavior()
VOCAB = 27
NODES = 64


def char_id(c):
    return 0 if c == " " else ord(c) - ord("a") + 1


def id_char(i):
    return " " if i == 0 else chr(i + ord("a") - 1)


class NotebookBatches:
    """The notebook's generator: a Python loop over the batch per character, one-hot rows."""

    def __init__(self, text, batch_size, unrollings):
        self.text, self.batch_size, self.unrollings = text, batch_size, unrollings
        segment = len(text) // batch_size
        self.cursor = [b * segment for b in range(batch_size)]
        self.last = self._one()

    def _one(self):
        batch = np.zeros((self.batch_size, VOCAB), dtype=np.float32)
        for b in range(self.batch_size):
            batch[b, char_id(self.text[self.cursor[b]])] = 1.0
            self.cursor[b] = (self.cursor[b] + 1) % len(self.text)
        return batch

    def next(self):
        out = [self.last] + [self._one() for _ in range(self.unrollings)]
        self.last = out[-1]
        return out


def build(batch_size=64, unrollings=10):
    g = tf.Graph()
    with g.as_default():
        def weights(rows):
            return tf.Variable(tf.truncated_normal([rows, NODES], -0.1, 0.1))

        gates = [(weights(VOCAB), weights(NODES), tf.Variable(tf.zeros([1, NODES]))) for _ in range(4)]
        saved_out = tf.Variable(tf.zeros([batch_size, NODES]), trainable=False)
        saved_state = tf.Variable(tf.zeros([batch_size, NODES]), trainable=False)
        w = tf.Variable(tf.truncated_normal([NODES, VOCAB], -0.1, 0.1))
        b = tf.Variable(tf.zeros([VOCAB]))

        def cell(x, out, state):
            (ix, im, ib), (fx, fm, fb), (cx, cm, cb), (ox, om, ob) = gates
            i = tf.sigmoid(tf.matmul(x, ix) + tf.matmul(out, im) + ib)
            f = tf.sigmoid(tf.matmul(x, fx) + tf.matmul(out, fm) + fb)
            u = tf.matmul(x, cx) + tf.matmul(out, cm) + cb
            state = f * state + i * tf.tanh(u)
            o = tf.sigmoid(tf.matmul(x, ox) + tf.matmul(out, om) + ob)
            return o * tf.tanh(state), state

        data = [tf.placeholder(tf.float32, [batch_size, VOCAB]) for _ in range(unrollings + 1)]
        out, state, outputs = saved_out, saved_state, []
        for x in data[:-1]:
            out, state = cell(x, out, state)
            outputs.append(out)
        with tf.control_dependencies([saved_out.assign(out), saved_state.assign(state)]):
            logits = tf.nn.xw_plus_b(tf.concat(outputs, 0), w, b)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits_v2(
                labels=tf.concat(data[1:], 0), logits=logits))
        step = tf.Variable(0)
        lr = tf.train.exponential_decay(10.0, step, 5000, 0.1, staircase=True)
        opt = tf.train.GradientDescentOptimizer(lr)
        grads, params = zip(*opt.compute_gradients(loss))
        grads, _ = tf.clip_by_global_norm(grads, 1.25)
        train_op = opt.apply_gradients(zip(grads, params), global_step=step)
        prediction = tf.nn.softmax(logits)

        sample_in = tf.placeholder(tf.float32, [1, VOCAB])
        s_out = tf.Variable(tf.zeros([1, NODES]))
        s_state = tf.Variable(tf.zeros([1, NODES]))
        reset = tf.group(s_out.assign(tf.zeros([1, NODES])), s_state.assign(tf.zeros([1, NODES])))
        o2, st2 = cell(sample_in, s_out, s_state)
        with tf.control_dependencies([s_out.assign(o2), s_state.assign(st2)]):
            sample_pred = tf.nn.softmax(tf.nn.xw_plus_b(o2, w, b))
        init = tf.global_variables_initializer()
    return g, dict(data=data, loss=loss, train=train_op, lr=lr, pred=prediction, sample_in=sample_in,
                   sample_pred=sample_pred, reset=reset, init=init)


def valid_perplexity(sess, ops, valid):
    """The notebook's validation: reset, then one session.run per character (with wrap-around)."""
    sess.run(ops["reset"])
    gen = NotebookBatches(valid, 1, 1)
    total = 0.0
    for _ in range(len(valid)):
        b = gen.next()
        p = sess.run(ops["sample_pred"], {ops["sample_in"]: b[0]})
        total += float(-np.log(np.maximum(p, 1e-10))[0, b[1][0].argmax()])
    return float(np.exp(total / len(valid)))


def cmd_train(args):
    text = read_corpus(find_corpus(args.corpus), args.limit)
    valid, train = text[:1000], text[1000:]
    tf.set_random_seed(args.seed)
    g, ops = build()
    batches = NotebookBatches(train, 64, 10)
    with tf.Session(graph=g) as sess:
        sess.run(ops["init"])
        t0 = time.perf_counter()
        mean = 0.0
        for step in range(args.steps):
            data = batches.next()
            _, l = sess.run([ops["train"], ops["loss"]], {ph: d for ph, d in zip(ops["data"], data)})
            mean += l
            if step % 100 == 0:
                if args.report:       # the notebook's per-100-step validation
                    valid_perplexity(sess, ops, valid)
                if step and args.verbose:
                    print(f"step {step} loss {mean / 100:.4f}", file=sys.stderr, flush=True)
                mean = 0.0
        seconds = time.perf_counter() - t0
        ppl = valid_perplexity(sess, ops, valid) if args.validate else None
    json.dump({"peer": "notebook", "steps": args.steps, "train_seconds": seconds,
               "steps_per_sec": args.steps / seconds, "chars_per_sec": args.steps * 640 / seconds,
               "valid_perplexity": ppl, "total_seconds": time.perf_counter() - START,
               "peak_rss_mb": peak_rss_mb()}, sys.stdout)
    print()


def cmd_score(args):
    text = read_corpus(find_corpus(args.corpus), args.offset + args.chars + 1)[args.offset:]
    g, ops = build()
    with tf.Session(graph=g) as sess:
        sess.run(ops["init"])
        sess.run(ops["reset"])
        t0 = time.perf_counter()
        total = 0.0
        for i in range(args.chars):
            x = np.zeros((1, VOCAB), np.float32)
            x[0, char_id(text[i])] = 1
            p = sess.run(ops["sample_pred"], {ops["sample_in"]: x})
            total += float(-np.log(max(p[0, char_id(text[i + 1])], 1e-10)))
        seconds = time.perf_counter() - t0
    json.dump({"peer": "notebook", "chars": args.chars, "seconds": seconds,
               "chars_per_sec": args.chars / seconds, "nats_per_char": total / args.chars}, sys.stdout)
    print()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--corpus")
    t.add_argument("--steps", type=int, default=7001)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--limit", type=int, default=None)
    t.add_argument("--validate", action="store_true", help="notebook-style validation perplexity at the end")
    t.add_argument("--verbose", action="store_true")
    t.add_argument("--report", action="store_true",
                   help="validate every 100 steps as the notebook does (1000 session.runs each)")
    s = sub.add_parser("score", help="per-character rate of the notebook's eval/sampling loop")
    s.add_argument("--corpus")
    s.add_argument("--chars", type=int, default=20000)
    s.add_argument("--offset", type=int, default=9_000_000)
    args = p.parse_args()
    (cmd_train if args.cmd == "train" else cmd_score)(args)


if __name__ == "__main__":
    main()
