#!/usr/bin/env python
"""The GRU/RNN training step with charlm's hand-derived backward pass against TensorFlow's autodiff.

    python benchmarks/cell_backward.py [--threads 1] [--repeat 30]

For each cell and shape (one-hot char input, 27 tokens, batch 64, Adam): milliseconds per compiled
training step (forward, gradients, update) with charlm.cells' custom-gradient loops, and with the
same forward pass left to autodiff (a Python-unrolled loop for the short window, which XLA
compiles as training does, and a tf.while_loop for the long ones).  Best of two timings each.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = ((128, 10, True), (128, 50, False), (256, 50, False))     # hidden, unrollings, XLA


def autodiff_static(cell):
    import tensorflow as tf

    def run(xw, h, w_h, *params):
        hs = [h]
        for t in range(xw.shape[0]):
            hs.append(cell.forward(xw[t], hs[-1], tf.matmul(hs[-1], w_h), *params)[0])
        return tf.stack(hs[1:]), hs[-1]
    return run


def autodiff_loop(cell):
    from charlm.fast import bptt

    # the inference loop (a plain tf.while_loop), differentiated by TensorFlow
    return lambda xw, h, w_h, *params: bptt.recur(cell, xw, h, w_h, loop="inference")


def step_ms(cell, hidden, unrollings, xla, repeat, batch=64):
    import numpy as np
    import tensorflow as tf

    from charlm.config import ModelConfig, TrainConfig
    from charlm.nn.model import CharLM
    from charlm.training.optim import make_optimizer

    model = CharLM(ModelConfig(hidden=hidden, cell=cell, init="orthogonal"), 27)
    variables = model.trainable_variables
    optimizer = make_optimizer(TrainConfig(optimizer="adam", learning_rate=0.002), variables)
    tokens = tf.constant(np.random.default_rng(0).integers(0, 27, size=(unrollings + 1, batch)), tf.int32)

    @tf.function(jit_compile=xla, autograph=False)
    def step(tokens):
        with tf.GradientTape() as tape:
            logits, _ = model.unroll(tokens[:-1], model.zero_state(batch))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens[1:], logits=logits))
        optimizer.apply(tape.gradient(loss, variables), variables, 0.002)
        return loss

    step(tokens).numpy()
    start = time.perf_counter()
    for _ in range(repeat):
        step(tokens)
    step(tokens).numpy()
    return (time.perf_counter() - start) / (repeat + 1) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (0: all)")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    from charlm.runtime import import_tensorflow_quietly

    tf = import_tensorflow_quietly()
    from charlm.fast import bptt

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    hand = bptt._bptt_static, bptt._bptt_loop
    print("| cell | hidden × unrollings | path | hand backward ms/step | autodiff ms/step |")
    print("|---|---|---|---:|---:|")
    for cell in ("gru", "rnn"):
        for hidden, unrollings, xla in SHAPES:
            times = {}
            for name, (static, loop) in (("hand", hand), ("autodiff", (autodiff_static, autodiff_loop))):
                bptt._bptt_static, bptt._bptt_loop = static, loop
                times[name] = min(step_ms(cell, hidden, unrollings, xla, args.repeat) for _ in range(2))
            bptt._bptt_static, bptt._bptt_loop = hand
            path = "Python-unrolled, XLA" if xla else "while-loops"
            print(f"| {cell} | {hidden} × {unrollings} | {path} | {times['hand']:.2f} | {times['autodiff']:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
