#!/usr/bin/env python
"""ud730 assignment 6 with charlm's Python API, step by step (what the notebook did, in a script).

    python examples/ud730_walkthrough.py                                   # text8, the notebook's 7001 steps
    python examples/ud730_walkthrough.py --corpus tinyshakespeare --steps 500
    python examples/ud730_walkthrough.py --corpus FILE --out checkpoints/walk   # any text file; keep the runs

A dataset name (text8, tinyshakespeare, enwik8) is downloaded on first use.

1. Problem 1: the character LSTM whose gates come from one matmul, trained as the notebook does.
2. Problem 2: bigram tokens through an embedding, with dropout on the non-recurrent connections.
3. Text sampled from both, and their validation perplexity (and bits per character).
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import charlm  # noqa: E402
from charlm.runtime import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="text8", help="a text file or dataset name: text8 (default), tinyshakespeare, enwik8")
    p.add_argument("--steps", type=int, default=7001)
    p.add_argument("--out", default=None, help="folder for the two runs (default: a temporary one)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="ud730-"))
    quiet = dict(log=lambda line: None, sample_every=0)

    # Problem 1: the notebook's model and schedule (64 nodes, SGD 10.0, clip 1.25, batch 64 x 10),
    # started from Glorot/orthogonal weights (init="notebook" for the notebook's own draw).
    char = charlm.train(corpus=args.corpus, checkpoint_dir=out / "char", preset="ud730",
                        steps=args.steps, **quiet)
    # Problem 2: bigrams (27**2 = 729 tokens for text8), an embedding lookup and dropout.
    bigram = charlm.train(corpus=args.corpus, checkpoint_dir=out / "bigram", preset="ud730-bigram",
                          steps=args.steps, **quiet)

    for name, run in (("char", char), ("bigram", bigram)):
        score, _ = charlm.evaluate(run.run_dir, split="valid")
        print(f"{name:>6}: {run.step} steps, validation perplexity {score.perplexity:.2f} "
              f"({score.bits_per_char:.3f} bits/char over {score.characters} characters)")
        for text in charlm.sample(run.run_dir, prime="the ", length=76, num_samples=3, seed=1):
            print(f"        {text!r}")


if __name__ == "__main__":
    main()
