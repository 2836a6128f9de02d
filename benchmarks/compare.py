#!/usr/bin/env python
"""charlm against its peers, side by side in one run on this machine; prints the ratios.

    python benchmarks/compare.py train      # ud730 preset, 3000 steps: charlm vs the notebook graph
    python benchmarks/compare.py large      # 512 units x 50 unrollings, Adam, 60 steps: vs stock Keras
    python benchmarks/compare.py large --repeat 5   # five back-to-back pairs and their median ratio
    python benchmarks/compare.py rates      # sampling / evaluation chars/s vs the notebook's loop
    python benchmarks/compare.py all

Whole processes are timed (start-up included) for training; sampling and evaluation rates
exclude start-up and compilation.  The corpus: --corpus, $CHARLM_BENCH_CORPUS, or
../shared/data/text8-first10M.txt.gz.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT, find_corpus  # noqa: E402

PY = sys.executable


CPU_SECONDS = {}     # command kind -> CPU seconds (user + system) of its last run


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd):
    t0 = time.perf_counter()
    cpu0 = _children_cpu()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    CPU_SECONDS["last"] = _children_cpu() - cpu0
    if proc.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stderr[-2000:]}")
    last = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    return seconds, (json.loads(last[-1]) if last else {})


def line(name, ours, peer, unit="s", higher_better=False):
    ratio = (ours / peer) if higher_better else (peer / ours)
    print(f"{name:<58} charlm {ours:>12,.1f} {unit:<8} peer {peer:>12,.1f} {unit:<8} ratio {ratio:5.2f}x",
          flush=True)
    return ratio


def bench_train(corpus, steps=3000):
    with tempfile.TemporaryDirectory() as d:
        ours, info = run([PY, "cli.py", "train", "--corpus", corpus, "--preset", "ud730", "--steps", steps,
                          "--seed", 1, "--checkpoint-dir", Path(d) / "run"])
    peer, _ = run([PY, str(HERE / "peers" / "notebook_peer.py"), "train", "--corpus", corpus, "--steps", steps,
                   "--valid-every", 100, "--sample-every", 1000])
    line(f"train ud730 {steps} steps (whole process, validating every 100)", ours, peer)
    with tempfile.TemporaryDirectory() as d:
        ours, info = run([PY, "cli.py", "train", "--corpus", corpus, "--preset", "ud730", "--steps", steps,
                          "--seed", 1, "--checkpoint-dir", Path(d) / "run", "--valid-size", 0,
                          "--sample-every", 0])
    peer, _ = run([PY, str(HERE / "peers" / "notebook_peer.py"), "train", "--corpus", corpus, "--steps", steps,
                   "--valid-every", 0, "--sample-every", 0, "--no-final-valid"])
    line(f"train ud730 {steps} steps (whole process, no validation)", ours, peer)


def bench_large(corpus, steps=60, repeat=1):
    """``repeat`` back-to-back pairs (charlm, then Keras), each pair's ratio, then the median."""
    flags = ["--hidden", 512, "--embedding-size", 64, "--batch-size", 64, "--unrollings", 50,
             "--optimizer", "adam", "--learning-rate", 0.002, "--steps", steps]
    ratios = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            ours, _ = run([PY, "cli.py", "train", "--corpus", corpus, *flags, "--valid-size", 0,
                           "--sample-every", 0, "--checkpoint-dir", Path(d) / "run", "--log-every", steps])
        ours_cpu = CPU_SECONDS["last"]
        peer, _ = run([PY, str(HERE / "peers" / "keras_peer.py"), "--corpus", corpus, *flags, "--clip", 1.25])
        ratios.append(line(f"train 512x50 Adam {steps} steps (whole process)", ours, peer))
        line("  the same, CPU time (user + system)", ours_cpu, CPU_SECONDS["last"])
    if repeat > 1:
        print(f"median of {repeat} whole-process ratios: {statistics.median(ratios):.2f}x", flush=True)


def bench_rates(corpus):
    _, ours = run([PY, str(HERE / "charlm_rates.py"), "--corpus", corpus])
    _, peer = run([PY, str(HERE / "peers" / "notebook_peer.py"), "eval", "--corpus", corpus, "--chars", 20000])
    line("sampling 200,000 chars, 1 sequence (chars/s)", ours["sample_chars_per_sec"], peer["chars_per_sec"],
         "chars/s", True)
    line("sampling 8 sequences at once (chars/s per sequence)", ours["sample8_chars_per_sec"],
         peer["chars_per_sec"], "chars/s", True)
    line("evaluating 2,500,000 chars (chars/s)", ours["eval_chars_per_sec"], peer["chars_per_sec"],
         "chars/s", True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["train", "large", "rates", "all"])
    p.add_argument("--corpus")
    p.add_argument("--repeat", type=int, default=1, help="pairs of runs for 'large' (default 1)")
    a = p.parse_args()
    corpus = str(find_corpus(a.corpus))
    print(f"corpus {corpus}; {os.cpu_count()} CPUs", flush=True)
    if a.what in ("train", "all"):
        bench_train(corpus)
    if a.what in ("large", "all"):
        bench_large(corpus, repeat=a.repeat)
    if a.what in ("rates", "all"):
        bench_rates(corpus)


if __name__ == "__main__":
    main()
