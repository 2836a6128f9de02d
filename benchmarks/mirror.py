#!/usr/bin/env python
"""ud730 problem 3: how well `mirror train` learns to mirror every word of a line.

    python benchmarks/mirror.py --corpus /work/data/text8-first10M.txt            # trains 600 s, then measures
    python benchmarks/mirror.py --corpus /work/data/text8-first10M.txt --checkpoint checkpoints/mirror

Without --checkpoint it runs `cli.py mirror train --corpus C --time-limit S --seed N` into a
fresh folder (the command's defaults are the ones under test).  Then greedy decoding is scored on

* held-out text8 lines: lines of 1-10 consecutive words (at most 80 characters) cut from the
  corpus's last words, the fraction `mirror train` never trains on (`heldout` in the run's
  config.json);
* random-letter lines: 1-6 strings of 1-9 random lowercase letters each (words nobody wrote).

Prints per-character, per-word and exact-line accuracy for both, and one JSON line on stdout.
The corpus: --corpus, $CHARLM_BENCH_CORPUS, or ../shared/data/text8-first10M.txt.gz.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT, find_corpus, read_corpus  # noqa: E402

sys.path.insert(0, str(ROOT))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="text8 (first 10M characters); see the module docstring")
    parser.add_argument("--checkpoint", help="a trained `mirror train` run (default: train one)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds of training")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--lines", type=int, default=3000, help="held-out and random lines to score, each")
    args = parser.parse_args()
    if args.lines < 1 or args.time_limit <= 0:
        parser.error("--lines and --time-limit must be positive")
    corpus = find_corpus(args.corpus)
    run = args.checkpoint
    trained = None
    if run is None:
        run = tempfile.mkdtemp(prefix="mirror-bench-") + "/run"
        cmd = [sys.executable, "cli.py", "mirror", "train", "--corpus", str(corpus), "--checkpoint-dir", run,
               "--time-limit", str(args.time_limit), "--seed", str(args.seed)]
        print("$ " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if proc.returncode:
            sys.exit(f"training failed (exit {proc.returncode})")
        trained = json.loads(proc.stdout.splitlines()[-1])

    from charlm.runtime import import_tensorflow_quietly
    import_tensorflow_quietly()
    from charlm.mirror.data import cut_lines, random_letter_lines
    from charlm.mirror.use import Mirror

    model = Mirror(run)
    words = read_corpus(corpus).split()
    heldout = " ".join(words[len(words) - int(round(len(words) * model.cfg.heldout)):])
    sets = {"text8 held-out": cut_lines(heldout, args.lines, seed=0),
            "random letters": random_letter_lines(args.lines, seed=1)}
    results = {}
    for name, lines in sets.items():
        start = time.perf_counter()
        results[name] = model.evaluate(lines)
        results[name]["lines_per_sec"] = len(lines) / (time.perf_counter() - start)
    print(f"run {run}" + (f" (step {trained['step']}, {trained['seconds']:.0f} s)" if trained else ""),
          file=sys.stderr)
    print(f"{'lines':<16}{'count':>7}{'chars':>9}{'words':>9}{'exact lines':>13}", file=sys.stderr)
    for name, r in results.items():
        print(f"{name:<16}{r['lines']:>7}{r['char_accuracy']:>9.4f}{r['word_accuracy']:>9.4f}"
              f"{r['line_accuracy']:>13.4f}", file=sys.stderr)
    example = "the quick brown fox jumps over the lazy dog"
    print(f"{example} -> {model.lines([example])[0]}", file=sys.stderr)
    print(json.dumps({"run": str(run), "training": trained, "config": model.cfg.__dict__, **results}))


if __name__ == "__main__":
    main()
