#!/usr/bin/env python
"""charlm against the strongest peers in benchmarks/peers/, side by side in one run; prints ratios.

    python benchmarks/peers.py train-large   # 512 x 50, Adam, 300 steps: vs PyTorch nn.LSTM (oneDNN)
    python benchmarks/peers.py precision     # the same run, --precision auto vs float32: time and loss
    python benchmarks/peers.py ud730         # ud730 preset 7001 steps vs the notebook's graph fed ids
    python benchmarks/peers.py sample        # one sequence: 512 units vs PyTorch, ud730 size vs the notebook loop
    python benchmarks/peers.py eval-long     # eval of 2,549,840 chars at 512 units; streams vs one state
    python benchmarks/peers.py all [--repeat N]

Training and evaluation are timed as whole processes (start-up included), sampling rates exclude
start-up.  Pairs run back to back (charlm, then the peer) so both see the same machine; --repeat N
runs N pairs and prints their median.  PyTorch comes from its own virtual environment:
--torch-python, $CHARLM_TORCH_PYTHON, or /tmp/torchvenv/bin/python (benchmarks/peers/README.md
says how to make one).  The corpus: --corpus, $CHARLM_BENCH_CORPUS or the shared text8 file.
"""
import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT, find_corpus, read_corpus  # noqa: E402
from compare import CPU_SECONDS, line, run  # noqa: E402

PY = sys.executable
PEERS = HERE / "peers"                # every peer this script runs lives here, in the repository
LARGE = ["--hidden", 512, "--embedding-size", 64, "--batch-size", 64, "--unrollings", 50,
         "--optimizer", "adam", "--learning-rate", 0.002, "--clip", 1.0, "--steps", 300]
EVAL_CHARS = 2_549_840
# the notebook's graph in its strongest form: fed ids, TF2's (resource) variables
UD730_STRONGEST = ["--feed", "ids", "--resource-variables"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return "unknown CPU"
    name = re.search(r"model name\s*:\s*(.*)", text)
    flags = [f for f in ("avx512_bf16", "amx_bf16") if re.search(rf"\b{f}\b", text)]
    return f"{name.group(1) if name else 'unknown CPU'} ({os.cpu_count()} CPUs; {', '.join(flags) or 'no bfloat16 units'})"


def peer(name: str) -> Path:
    path = PEERS / name
    if not path.is_file():
        sys.exit(f"peer script missing: {path} (the peers live in benchmarks/peers/)")
    return path


def torch_python(arg) -> str:
    path = arg or os.environ.get("CHARLM_TORCH_PYTHON") or "/tmp/torchvenv/bin/python"
    if not Path(path).is_file():
        sys.exit(f"no Python with PyTorch at {path}: make one with `python3 -m venv /tmp/torchvenv && "
                 f"/tmp/torchvenv/bin/pip install torch numpy`, or pass --torch-python")
    return path


def peer_output(cmd) -> tuple[float, str]:
    """Whole-process seconds and stdout of a peer script (which prints text, not JSON)."""
    import time

    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0, proc.stdout


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    if not found:
        sys.exit(f"peer output not understood (looked for {pattern!r}):\n{text}")
    return float(found.group(1))


def charlm_train(corpus, flags, d):
    seconds, info = run([PY, "cli.py", "train", "--corpus", corpus, *flags, "--sample-every", 0,
                         "--checkpoint-dir", Path(d) / "run"])
    return seconds, info


def pairs(repeat, one_pair):
    ratios = [one_pair() for _ in range(repeat)]
    if repeat > 1:
        print(f"  median of {repeat} pairs: {statistics.median(ratios):.2f}x", flush=True)
    return ratios


def bench_train_large(corpus, repeat, torch_py):
    def one_pair():
        with tempfile.TemporaryDirectory() as d:
            ours, _ = charlm_train(corpus, [*LARGE, "--valid-size", 0, "--log-every", 300,
                                            "--checkpoint-every", 0], d)
        ours_cpu = CPU_SECONDS["last"]
        theirs, out = peer_output([torch_py, peer("torch_lstm.py"), corpus, 300, 512, 64, 50, 1, 64])
        ratio = line("train 512x50 Adam 300 steps, whole process: charlm vs torch nn.LSTM", ours, theirs)
        rate = number(r"chars/s (\d+)", out)
        print(f"  CPU time: charlm {ours_cpu:.1f} s; torch in-loop {rate:,.0f} chars/s", flush=True)
        return ratio
    pairs(repeat, one_pair)


def bench_precision(corpus, repeat):
    def one_pair():
        results = {}
        for precision in ("auto", "float32"):
            with tempfile.TemporaryDirectory() as d:
                seconds, info = charlm_train(corpus, [*LARGE, "--valid-size", 200_000, "--log-every", 300,
                                                      "--checkpoint-every", 0, "--precision", precision], d)
            results[precision] = (seconds, math.log(info["valid_perplexity"]))
        ratio = line("train 512x50 Adam 300 steps: --precision auto vs float32", results["auto"][0],
                     results["float32"][0])
        print(f"  validation (first 200,000 chars) nats/char: auto {results['auto'][1]:.4f}, "
              f"float32 {results['float32'][1]:.4f}, difference {results['auto'][1] - results['float32'][1]:+.4f}",
              flush=True)
        return ratio
    pairs(repeat, one_pair)


def bench_ud730(corpus, repeat):
    def one_pair():
        with tempfile.TemporaryDirectory() as d:
            ours, _ = charlm_train(corpus, ["--preset", "ud730", "--log-every", 7001, "--checkpoint-every", 0], d)
        theirs, _ = peer_output([PY, peer("notebook_peer.py"), "train", "--corpus", corpus, "--steps", 7001,
                                 *UD730_STRONGEST, "--valid-every", 0, "--sample-every", 0])
        return line("train ud730 7001 steps, whole process: charlm vs the notebook graph fed ids", ours, theirs)
    pairs(repeat, one_pair)


SAMPLE_RATE = """
import json, string, sys, time
sys.path.insert(0, {root!r})
from charlm.runtime import import_tensorflow_quietly, set_threads
import_tensorflow_quietly()
set_threads({threads})
from charlm.config import ModelConfig
from charlm.nn.model import CharLM
from charlm.use.sampling import Sampler
from charlm.data.vocab import Tokenizer, Vocabulary
tok = Tokenizer("char", Vocabulary(string.printable[:{vocab}]))
sampler = Sampler(CharLM(ModelConfig(hidden={hidden}, embedding_size={embedding}), tok.num_tokens), tok)
sampler.generate("a", 1000, seed=0)
t0 = time.perf_counter()
sampler.generate("a", {length}, seed=1)
print(json.dumps({{"chars_per_sec": {length} / (time.perf_counter() - t0)}}))
"""


def charlm_sample_rate(hidden, embedding, vocab, length, threads):
    code = SAMPLE_RATE.format(root=str(ROOT), hidden=hidden, embedding=embedding, vocab=vocab, length=length,
                              threads=threads)
    return run([PY, "-c", code])[1]["chars_per_sec"]


def bench_sample(corpus, torch_py):
    ours = charlm_sample_rate(512, 64, 65, 20000, 0)
    _, out = peer_output([torch_py, peer("torch_sample.py"), 5000])
    line("sample one sequence, 512 units (chars/s): charlm vs torch nn.LSTM loop", ours,
         number(r": (\d+) chars/s", out), "chars/s", True)
    ours = charlm_sample_rate(64, 0, 27, 200_000, 1)
    _, out = peer_output([PY, peer("notebook_peer.py"), "sample", "--chars", 20000, "--feed", "ids"])
    line("sample one sequence, ud730 size (chars/s): charlm vs the notebook loop fed ids", ours,
         json.loads(out.splitlines()[-1])["chars_per_sec"], "chars/s", True)


def bench_eval_long(corpus):
    text = read_corpus(corpus)
    with tempfile.TemporaryDirectory() as d:
        held = Path(d) / "held.txt"
        held.write_text(text[-EVAL_CHARS:], encoding="utf-8")
        short = Path(d) / "short.txt"
        short.write_text(text[-300_000:], encoding="utf-8")
        train = Path(d) / "train.txt"
        train.write_text(text[:2_000_000], encoding="utf-8")
        run([PY, "cli.py", "train", "--corpus", train, *LARGE[:-2], "--steps", 100, "--valid-size", 0,
             "--sample-every", 0, "--log-every", 100, "--checkpoint-dir", Path(d) / "run"])
        seconds, info = run([PY, "cli.py", "eval", "--checkpoint", Path(d) / "run", "--text-file", held, "--json"])
        print(f"eval {EVAL_CHARS:,} chars, 512 units, whole process: {seconds:.1f} s "
              f"({EVAL_CHARS / seconds:,.0f} chars/s), {info['nats_per_char']:.4f} nats/char", flush=True)
        default = run([PY, "cli.py", "eval", "--checkpoint", Path(d) / "run", "--text-file", short, "--json"])
        one = run([PY, "cli.py", "eval", "--checkpoint", Path(d) / "run", "--text-file", short, "--json",
                   "--streams", 1])
        print(f"  300,000 chars: default {default[1]['nats_per_char']:.5f} nats/char in {default[0]:.1f} s, "
              f"--streams 1 {one[1]['nats_per_char']:.5f} in {one[0]:.1f} s, difference "
              f"{default[1]['nats_per_char'] - one[1]['nats_per_char']:+.5f}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["train-large", "precision", "ud730", "sample", "eval-long", "all"])
    p.add_argument("--corpus")
    p.add_argument("--repeat", type=int, default=1, help="back-to-back pairs for the training comparisons")
    p.add_argument("--torch-python")
    a = p.parse_args()
    if a.repeat < 1:
        p.error("--repeat must be at least 1")
    corpus = str(find_corpus(a.corpus))
    print(f"corpus {corpus}; {cpu_model()}", flush=True)
    if a.what in ("train-large", "sample", "all"):
        torch_py = torch_python(a.torch_python)
    if a.what in ("train-large", "all"):
        bench_train_large(corpus, a.repeat, torch_py)
    if a.what in ("precision", "all"):
        bench_precision(corpus, a.repeat)
    if a.what in ("ud730", "all"):
        bench_ud730(corpus, a.repeat)
    if a.what in ("sample", "all"):
        bench_sample(corpus, torch_py)
    if a.what in ("eval-long", "all"):
        bench_eval_long(corpus)


if __name__ == "__main__":
    main()
