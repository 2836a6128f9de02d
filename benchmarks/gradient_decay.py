#!/usr/bin/env python
"""Why gates matter, as a picture: how far back the gradient of a trained model's loss reaches.

    python benchmarks/gradient_decay.py --corpus /work/data/text8-first10M.txt          # trains briefly
    python benchmarks/gradient_decay.py --run rnn=RUN1 --run lstm=RUN2 --run gru=RUN3   # trained runs

For each model, on --batch windows of held-out text (the characters from --text-start on): read
--burn-in characters to reach a typical state, then step on with the state's ``h`` of layer 0
watched, and for each of --positions later steps t take the gradient of the loss at t (the
cross-entropy of the character after t) with respect to ``h_{t-k}``.  Plots, log scale, the norm
``|| d loss_t / d h_{t-k} ||`` against k, averaged over the windows and the positions and divided
by its value at k = 0, into --output (a PNG), and prints the figures.  An Elman RNN's gradient is a
product of ``diag(1 - h^2) W_h^T`` factors and dies out within a few dozen steps; the LSTM's cell
state carries it much further (and the GRU's ``z * h`` path likewise).

Without --run, trains each of --cells for --train-seconds with benchmarks/cells.py's settings on
the corpus's first 9M characters.  Needs matplotlib (benchmarks/requirements.txt).
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cells import SETTINGS  # noqa: E402
from common import ROOT, find_corpus, log, read_corpus  # noqa: E402

sys.path.insert(0, str(ROOT))
from charlm.config import CELLS  # noqa: E402

COLOURS = {"rnn": "tab:red", "gru": "tab:green", "lstm": "tab:blue"}


def decay(run, text, max_k, positions, batch, burn_in, seed, untrained=False):
    """Mean ``||d loss_t / d h_{t-k}||`` over windows and positions, for k = 0..max_k (numpy).

    ``untrained``: the run's starting weights instead of its trained ones.
    """
    import numpy as np
    import tensorflow as tf

    from charlm.run.checkpoint import load_model
    from charlm.nn.model import CharLM

    model, tokenizer, info = load_model(run)
    if untrained:
        model = CharLM(info["model_config"], tokenizer.num_tokens, seed=info["train_config"].seed)
    if tokenizer.kind != "char":
        sys.exit(f"{run}: a char model is needed (this one reads {tokenizer.kind} tokens)")
    ids = tokenizer.vocab.encode(text, oov="skip", what="held-out text")
    span = burn_in + max_k + positions + 1
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, ids.size - span, size=batch)
    windows = np.stack([ids[s:s + span] for s in starts], axis=1).astype(np.int32)     # [span, B]
    _, state = model.unroll(tf.constant(windows[:burn_in]), model.zero_state(batch))
    hs, losses = [], []
    with tf.GradientTape(persistent=True) as tape:
        # read inside the tape: the tape records only computations that touch the variables
        weights = model.step_weights()
        for t in range(burn_in, span - 1):
            logits, state = model.step(weights, tf.constant(windows[t]), state)
            hs.append(state[0][0])
            losses.append(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=windows[t + 1], logits=logits)))
    norms = np.zeros((positions, max_k + 1))
    for p in range(positions):
        t = max_k + p                                       # index into hs: max_k steps behind it exist
        grads = tape.gradient(losses[t], hs[t - max_k:t + 1])
        # per window (each window's loss is its own row of the summed loss)
        norms[p] = [float(tf.reduce_mean(tf.norm(g, axis=-1))) for g in reversed(grads)]
    return norms.mean(axis=0), info["model_config"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", help="text8 (or its first 10M characters); see benchmarks/common.py")
    parser.add_argument("--run", action="append", default=[], metavar="CELL=DIR",
                        help="a trained char run to measure (repeatable); without it, train --cells")
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=["rnn", "gru", "lstm"])
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--text-start", type=int, default=9_000_000, help="held-out text starts here")
    parser.add_argument("--max-k", type=int, default=60)
    parser.add_argument("--positions", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--burn-in", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="draws the windows (and seeds the training runs)")
    parser.add_argument("--untrained", action="store_true",
                        help="also draw each model at its starting weights (dashed)")
    parser.add_argument("--output", default=str(HERE / "gradient_decay.png"))
    args = parser.parse_args()
    runs = {}
    for item in args.run:
        cell, sep, path = item.partition("=")
        if not sep or not Path(path, "config.json").is_file():
            parser.error(f"--run {item}: expected CELL=DIR naming a charlm run folder")
        runs[cell] = path
    if min(args.max_k, args.positions, args.batch, args.burn_in) < 1:
        parser.error("--max-k, --positions, --batch and --burn-in must be positive")
    corpus = find_corpus(args.corpus)
    text = read_corpus(corpus, args.text_start + 500_000)[args.text_start:]
    if len(text) < 10_000:
        parser.error(f"the corpus has too little text after --text-start {args.text_start}")
    with tempfile.TemporaryDirectory(prefix="charlm-decay-") as tmp:
        if not runs:
            train_file = Path(tmp) / "train.txt"
            train_file.write_text(read_corpus(corpus, min(args.text_start, 9_000_000)), encoding="utf-8")
            for cell in args.cells:
                runs[cell] = str(Path(tmp) / cell)
                cmd = ["cli.py", "train", "--corpus", train_file, "--checkpoint-dir", runs[cell], "--cell", cell,
                       "--hidden", args.hidden, *SETTINGS, "--seed", args.seed, "--time-limit", args.train_seconds]
                log(f"training: python {' '.join(map(str, cmd))}")
                proc = subprocess.run([sys.executable, *map(str, cmd)], capture_output=True, text=True, cwd=ROOT)
                if proc.returncode:
                    sys.exit(f"training failed:\n{proc.stderr[-2000:]}")
        from charlm.runtime import import_tensorflow_quietly

        import_tensorflow_quietly()
        curves = {}
        for untrained in (False, True) if args.untrained else (False,):
            for cell, run in runs.items():
                mean, cfg = decay(run, text, args.max_k, args.positions, args.batch, args.burn_in, args.seed,
                                  untrained)
                name = f"{cell} untrained" if untrained else cell
                curves[name] = (mean / mean[0], cfg)
                shown = {k: float(f"{curves[name][0][k]:.3g}") for k in (1, 5, 10, 20, 40, 60) if k <= args.max_k}
                print(f"{name:<14} H={cfg.hidden}: ||dL_t/dh_(t-k)|| at k=0 {mean[0]:.3g}; "
                      f"relative to it at k={shown}", flush=True)
    plot(curves, args)
    print(json.dumps({name: [float(v) for v in c] for name, (c, _) in curves.items()}))


def plot(curves, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for name, (curve, cfg) in curves.items():
        cell, _, untrained = name.partition(" ")
        label = f"{cell.upper() if cell != 'rnn' else 'Elman RNN'} ({cfg.hidden} units){', untrained' if untrained else ''}"
        ax.semilogy(range(len(curve)), curve, color=COLOURS.get(cell), lw=1.2 if untrained else 2,
                    ls="--" if untrained else "-", label=label)
    ax.set_xlabel("k (steps back in time)")
    ax.set_ylabel(r"$\|\partial L_t / \partial h_{t-k}\|$ / value at k = 0")
    ax.set_title("How far back the loss gradient reaches (char models, text8)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(args.output)
    log(f"wrote {args.output}")


if __name__ == "__main__":
    main()
